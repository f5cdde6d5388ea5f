"""`dense`: one `data` component holding the C-order elements."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .. import dtypes
from ..codecs import RAW
from ..manifest import Component, Object, expect
from . import select
from .base import Layout, check_size, is_whole


def logical_dtype(comp: Component) -> np.dtype:
    return dtypes.to_numpy(dtypes.logical_name(comp.dtype, comp.type))


def as_logical(array: np.ndarray, comp: Component) -> np.ndarray:
    """View a decoded component in its logical dtype (f8 over u8, complex over floats)."""
    target = logical_dtype(comp)
    return array if array.dtype == target else array.view(target)


def read(obj: Object, get: Callable[[str], np.ndarray]) -> np.ndarray:
    """The array in its logical dtype and shape (a view of the component array)."""
    return as_logical(get("data"), obj.components["data"]).reshape(obj.shape)


class Dense(Layout):
    format = "dense"

    def check(self, name: str, obj: Object, path) -> None:
        """A `data` component of shape x itemsize bytes (decoded)."""
        comp = obj.components.get("data")
        if (  # fast path: a plain raw tensor of the right size (v0.1 files check them all)
            comp is not None
            and comp.type is None
            and comp.uncompressed_length is None
            and comp.encoding == RAW
            and comp.length == math.prod(obj.shape) * dtypes.BY_NAME[comp.dtype].itemsize
        ):
            return
        expect(comp is not None, "dense object has no 'data' component", path, name)
        nbytes = comp.uncompressed_length
        if nbytes is None:
            nbytes = self.expected_nbytes(obj, "data")
        detail = f" for shape {list(obj.shape)} of {comp.dtype}"
        check_size(name, "data", comp, nbytes, path, detail=detail)

    def expected_nbytes(self, obj: Object, role: str) -> int | None:
        comp = obj.components[role]
        if role != "data" or not dtypes.is_known_type(comp.type):
            return None
        return obj.numel * dtypes.itemsize(dtypes.logical_name(comp.dtype, comp.type))

    def read(self, obj: Object, get, *, path=None, name=None) -> np.ndarray:
        return read(obj, get)

    def read_selection(
        self, obj: Object, get, key, *, path=None, name=None, copy: bool = True
    ) -> np.ndarray:
        """``array[key]``: a view of the stored elements of a raw tensor when ``copy`` is
        False (numpy basic indexing), else an owned array. Of a compressed tensor only the
        rows up to the last selected one are decoded (the frame is decoded from its start,
        so later rows cost the decode of all rows before them)."""
        comp = obj.components["data"]
        if comp.encoding != RAW and obj.shape and not is_whole(key, obj.shape):
            axes, keep = select.normalize(key, obj.shape)
            rows = select.last_index(axes[0]) + 1
            if rows < obj.shape[0]:
                row_bytes = logical_dtype(comp).itemsize * math.prod(obj.shape[1:])
                head = as_logical(get.prefix("data", rows * row_bytes), comp)
                out = select.take(head.reshape((rows, *obj.shape[1:])), axes, keep)
                return np.array(out) if out.base is not None else out
        if is_whole(key, obj.shape):
            value = read(obj, get)
            return np.array(value) if copy else value
        axes, keep = select.normalize(key, obj.shape)
        if comp.encoding == RAW and getattr(get, "fetches", False):  # mapped files: no
            out = _read_window(obj, comp, get, axes, keep)
            if out is not None:
                return out
        if comp.encoding == RAW and select.scattered(axes, obj.shape, logical_dtype(comp).itemsize):
            value = as_logical(get.scattered("data"), comp).reshape(obj.shape)
            return np.array(select.take(value, axes, keep))  # never a view of that map
        out = select.take(read(obj, get), axes, keep)
        return np.array(out) if copy and out.base is not None else out


def _read_window(obj: Object, comp: Component, get, axes, keep) -> np.ndarray | None:
    """The selection read from only its bounding bytes (``get.window``: a remote file), an
    owned array; None when the getter has no window to give."""
    window = get.window
    if window("data", 0, 0) is None:  # the file is in memory, or digests are checked
        return None
    dt = logical_dtype(comp)
    bounds = select.bounding_box(axes, obj.shape)
    if bounds is None:
        return np.empty(tuple(len(a) for a, k in zip(axes, keep) if k), dt)
    lo, hi, box, moved = bounds
    part = window("data", lo * dt.itemsize, hi * dt.itemsize)
    flat = part.view(dt)
    strides = [dt.itemsize * math.prod(obj.shape[i + 1 :]) for i in range(len(obj.shape))]
    # every element of the box lies in [lo, hi): a strided view of the fetched bytes
    boxed = np.lib.stride_tricks.as_strided(flat, box, strides, writeable=False)
    return np.array(select.take(boxed, moved, keep))


def encode(array: np.ndarray) -> tuple[str, str | None, np.ndarray]:
    """(storage dtype, logical type, C-contiguous little-endian array) for writing."""
    name = dtypes.from_numpy(array.dtype)
    le = dtypes.little_endian(array.dtype)
    if array.dtype != le:  # big-endian input: zTensor stores little-endian only
        array = array.astype(le)
    array = np.ascontiguousarray(array)
    storage, type_ = dtypes.storage_spelling(name)
    return storage, type_, array
