"""The ``chunked`` layout's rules, as the validation pass and the reader ask for them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import dtypes
from ...codecs import RAW
from ...codecs.policy import DEFAULT_LEVEL
from ...errors import ZTensorError
from ...manifest import Object
from ..base import (
    Getter,
    Layout,
    check_size,
    components_encoding,
    refuse,
    require_known_types,
)
from .grid import FORMAT, check_cells, chunk_grid, parse_chunk_role
from .read import read_points, read_region


class Chunked(Layout):
    format = FORMAT

    def check(self, name: str, obj: Object, path) -> None:
        """The grid map, chunk roles within the grid, chunk dtypes equal to the grid's and
        chunk sizes equal to their in-bounds parts (SPEC §4.3)."""
        grid = chunk_grid(obj, path, name)
        extents = grid.grid
        segments = {seg.role: seg for seg in grid.segments}
        if len(segments) != len(grid.segments):
            refuse("two index segments name the same component", path=path, name=name)
        for seg in grid.segments:
            _check_segment(name, obj, grid, seg, path)
        _check_cells(name, obj, grid, path)
        for role, comp in obj.components.items():
            if role in segments:
                continue
            index = parse_chunk_role(role, len(obj.shape))
            if index is None:
                refuse(
                    "role is neither a chunk role c.<i>... nor an index segment",
                    role,
                    path=path,
                    name=name,
                )
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
        """Decoded size of a chunk (its in-bounds part) or of an index segment (None when
        the object is malformed)."""
        try:
            grid = chunk_grid(obj)
        except ZTensorError:
            return None
        for seg in grid.segments:
            if seg.role == role:
                return seg.nbytes
        index = parse_chunk_role(role, len(obj.shape))
        return None if index is None else grid.nbytes(index)

    def stored_encoding(self, obj: Object) -> tuple[int, str | None]:
        """The chunks' encoding and digest algorithm: the newest index segment's, else
        those of the one-component-per-chunk roles."""
        segments = chunk_grid(obj).segments
        if segments:
            newest = segments[-1]
            return (DEFAULT_LEVEL if newest.encoding != RAW else 0), newest.digest
        return components_encoding(obj.components.values())

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

    def read_points(self, obj: Object, get: Getter, key: Any, *, path=None, name=None):
        """``array`` at a point-wise selection, decoding only the chunks holding a point."""
        return read_points(obj, get, key, path=path, name=name)


def _check_cells(name: str, obj: Object, grid, path) -> None:
    located = sum(seg.size for seg in grid.segments) + len(obj.components) - len(grid.segments)
    check_cells(grid, located, path=path, name=name)


def _check_segment(name: str, obj: Object, grid, seg, path) -> None:
    """An index segment: its box inside the grid, its component a raw u64 array of one
    entry per chunk of the box. Its entries are checked when they are used (SPEC §4.3)."""
    comp = obj.components.get(seg.role)
    if comp is None:
        refuse(f"index segment {seg.role!r} has no component", path=path, name=name)
    if any(s + n > g for s, n, g in zip(seg.start, seg.shape, grid.grid)):
        refuse(
            f"index segment box {seg.start}+{seg.shape} lies outside the grid {grid.grid}",
            seg.role,
            path=path,
            name=name,
        )
    if comp.dtype != "u64" or comp.type is not None or comp.encoding != RAW:
        refuse("an index segment is a raw u64 component", seg.role, path=path, name=name)
    check_size(name, seg.role, comp, seg.nbytes, path, what="index segment length")
