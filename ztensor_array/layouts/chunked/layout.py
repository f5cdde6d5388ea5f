"""The ``chunked`` layout's rules, as the validation pass and the reader ask for them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import dtypes
from ...errors import ZTensorError
from ...manifest import Object
from ..base import Getter, Layout, check_size, refuse, require_known_types
from .grid import FORMAT, chunk_grid
from .read import read_region
from .table import parse_chunk_role


class Chunked(Layout):
    format = FORMAT

    def check(self, name: str, obj: Object, path) -> None:
        """The grid map, chunk roles within the grid, chunk dtypes equal to the grid's and
        chunk sizes equal to their in-bounds parts (SPEC §4.3)."""
        grid = chunk_grid(obj, path, name)
        extents = grid.grid
        for role, comp in obj.components.items():
            index = parse_chunk_role(role, len(obj.shape))
            if index is None:
                refuse("role is not a chunk role c.<i>...", role, path=path, name=name)
            if not all(i < n for i, n in zip(index, extents)):
                where = f"chunk index {list(index)} lies outside the grid {list(extents)}"
                refuse(where, role, path=path, name=name)
            require_known_types(obj, path, name, role)  # the grid's dtype is known: a mismatch
            if dtypes.logical_name(comp.dtype, comp.type) != grid.dtype:
                differs = f"chunk dtype {comp.dtype} differs from the grid dtype {grid.dtype}"
                refuse(differs, role, path=path, name=name)
            check_size(
                name,
                role,
                comp,
                grid.nbytes(index),
                path,
                what="raw chunk length",
                detail=" of its in-bounds part",
            )

    def expected_nbytes(self, obj: Object, role: str) -> int | None:
        """Decoded size of a chunk: its in-bounds part (None when the object is malformed)."""
        try:
            grid = chunk_grid(obj)
        except ZTensorError:
            return None
        index = parse_chunk_role(role, len(obj.shape))
        return None if index is None else grid.nbytes(index)

    def value_dtype(self, obj: Object) -> str:
        """The grid names the dtype, even when no chunk is written."""
        return chunk_grid(obj).dtype

    def read(self, obj: Object, get: Getter, *, path=None, name=None) -> np.ndarray:
        """The whole array."""
        return read_region(obj, get, (), path=path, name=name)

    def read_selection(
        self, obj: Object, get: Getter, key: Any, *, path=None, name=None, copy: bool = True
    ) -> np.ndarray:
        """``array[key]``, decoding only the chunks that hold selected elements."""
        return read_region(obj, get, key, path=path, name=name, copy=copy)
