"""`dense`: one `data` component holding the C-order elements."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import dtypes
from ..manifest import Component, Object


def logical_dtype(comp: Component) -> np.dtype:
    return dtypes.to_numpy(dtypes.logical_name(comp.dtype, comp.type))


def as_logical(array: np.ndarray, comp: Component) -> np.ndarray:
    """View a decoded component in its logical dtype (f8 over u8, complex over floats)."""
    target = logical_dtype(comp)
    return array if array.dtype == target else array.view(target)


def read(obj: Object, get: Callable[[str], np.ndarray]) -> np.ndarray:
    """The array in its logical dtype and shape (a view of the component array)."""
    return as_logical(get("data"), obj.components["data"]).reshape(obj.shape)


def read_object(obj: Object, get, *, path=None, name=None) -> np.ndarray:
    return read(obj, get)


def encode(array: np.ndarray) -> tuple[str, str | None, np.ndarray]:
    """(storage dtype, logical type, C-contiguous little-endian array) for writing."""
    name = dtypes.from_numpy(array.dtype)
    le = dtypes.little_endian(array.dtype)
    if array.dtype != le:  # big-endian input: zTensor stores little-endian only
        array = array.astype(le)
    array = np.ascontiguousarray(array)
    storage, type_ = dtypes.storage_spelling(name)
    return storage, type_, array
