"""`sparse_csr` (values, indices, indptr) and `sparse_coo` (values, coords) <-> scipy.sparse.

Index components are written as u64 as the reference does; any integer dtype is read. The
layout checks the components' presence, dtypes and sizes when a file opens, and the index
data itself when it is read, since a bad index would otherwise surface as a wrong value or
an error deep inside scipy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import dtypes
from ..codecs import RAW
from ..errors import FormatError
from ..manifest import Object
from .base import Layout, check_size, is_integer, logical_name, refuse, unknown_type
from .dense import as_logical


def _as_index(arr: np.ndarray, what: str, fail) -> np.ndarray:
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        fail(f"{what} value exceeds the int64 range")
    return arr.astype(np.int64, copy=False)


_NARROW_FLOATS = frozenset({"f16", "bf16", "f8_e4m3", "f8_e5m2"})


def read_dtype(obj: Object) -> str | None:
    """The dtype the values of a sparse object read as (``value_dtype`` names the stored
    one): narrow floats are widened to f32, scipy.sparse holding none of them."""
    if unknown_type(obj) is not None or "values" not in obj.components:
        return None
    name = logical_name(obj, "values")
    return "f32" if name in _NARROW_FLOATS else name


def _values(obj: Object, get, part: slice = slice(None)) -> np.ndarray:
    values = as_logical(get("values"), obj.components["values"])[part]
    if dtypes.from_numpy(values.dtype) in _NARROW_FLOATS:
        # scipy.sparse holds no float type narrower than float32: widen exactly;
        # Reader.read_components returns the values in their stored dtype
        values = values.astype(np.float32)
    return values


def read_csr(obj: Object, get: Callable[[str], np.ndarray], *, path=None, name=None):
    """scipy.sparse.csr_matrix, after checking indptr and indices."""
    import scipy.sparse  # heavy optional dependency (~100 ms): only for sparse reads

    def fail(msg: str, role: str | None = None):
        raise FormatError(msg, path=path, obj=name, component=role)

    rows, cols = obj.shape
    values = _values(obj, get)
    indptr = _as_index(get("indptr"), "indptr", fail)
    indices = _as_index(get("indices"), "indices", fail)
    if indptr.shape != (rows + 1,):
        fail(f"indptr has {indptr.size} entries, expected {rows + 1}", "indptr")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        fail("indptr does not start at 0 and never decrease", "indptr")
    nnz = int(indptr[-1])
    if nnz != values.size or nnz != indices.size:
        fail(f"indptr ends at {nnz} but there are {values.size} values and {indices.size} indices")
    if indices.size and (indices.min() < 0 or indices.max() >= cols):
        fail(f"column index out of range [0, {cols})", "indices")
    return scipy.sparse.csr_matrix((values, indices, indptr), shape=(rows, cols), copy=False)


def read_csr_rows(obj: Object, get, r0: int, r1: int, *, path=None, name=None):
    """Rows [r0, r1) as a scipy.sparse.csr_matrix, reading only their index and value
    ranges (views of raw components); their part of indptr and indices is checked."""
    import scipy.sparse  # heavy optional dependency: only for sparse reads

    def fail(msg: str, role: str | None = None):
        raise FormatError(msg, path=path, obj=name, component=role)

    rows, cols = obj.shape
    indptr = get("indptr")
    if indptr.shape != (rows + 1,):
        fail(f"indptr has {indptr.size} entries, expected {rows + 1}", "indptr")
    ptr = _as_index(indptr[r0 : r1 + 1], "indptr", fail)
    lo, hi = int(ptr[0]), int(ptr[-1])
    nnz = get("indices").size
    if lo < 0 or hi > nnz or np.any(np.diff(ptr) < 0):
        fail("indptr decreases or points outside the indices", "indptr")
    indices = _as_index(get("indices")[lo:hi], "indices", fail)
    if indices.size and (indices.min() < 0 or indices.max() >= cols):
        fail(f"column index out of range [0, {cols})", "indices")
    values = _values(obj, get, slice(lo, hi))
    if values.size != hi - lo:
        fail(f"indptr reaches {hi} but there are fewer values")
    return scipy.sparse.csr_matrix((values, indices, ptr - lo), shape=(r1 - r0, cols), copy=False)


def read_coo(obj: Object, get: Callable[[str], np.ndarray], *, path=None, name=None):
    """scipy.sparse.coo_matrix in 2-D, coo_array in n-D, after checking the coordinates."""
    import scipy.sparse  # heavy optional dependency (~100 ms): only for sparse reads

    def fail(msg: str, role: str | None = None):
        raise FormatError(msg, path=path, obj=name, component=role)

    ndim = len(obj.shape)
    values = _values(obj, get)
    coords = _as_index(get("coords"), "coords", fail)
    if coords.size != ndim * values.size:
        fail(
            f"coords has {coords.size} entries, expected ndim x nnz = {ndim * values.size}",
            "coords",
        )
    coords = coords.reshape(ndim, values.size)
    for axis, extent in enumerate(obj.shape):
        row = coords[axis]
        if row.size and (row.min() < 0 or row.max() >= extent):
            fail(f"coordinate on axis {axis} out of range [0, {extent})", "coords")
    if ndim == 2:
        return scipy.sparse.coo_matrix((values, (coords[0], coords[1])), shape=obj.shape)
    return scipy.sparse.coo_array((values, tuple(coords)), shape=obj.shape)


def _require(obj: Object, name: str, path, roles: tuple[str, ...], integers: tuple[str, ...]):
    """Every role present; the index roles of an integer dtype."""
    comps = obj.components
    for role in roles:
        if role not in comps:
            refuse(f"{obj.format} object has no {role!r} component", path=path, name=name)
    for role in integers:
        dt = comps[role].dtype
        if not is_integer(dt):
            refuse(f"{role} dtype {dt} is not an integer", role, path=path, name=name)


def _raw_nnz(obj: Object, role: str) -> int | None:
    """Entries of a raw index component (None when compressed)."""
    comp = obj.components[role]
    return comp.length // dtypes.itemsize(comp.dtype) if comp.encoding == RAW else None


def _raw_values(obj: Object) -> int | None:
    """Number of values when they are raw and of a known logical dtype (complex: 2 floats)."""
    values = obj.components["values"]
    if values.encoding != RAW or not dtypes.is_known_type(values.type):
        return None
    return values.length // dtypes.itemsize(logical_name(obj, "values"))


class SparseCSR(Layout):
    format = "sparse_csr"

    def check(self, name: str, obj: Object, path) -> None:
        _require(obj, name, path, ("values", "indices", "indptr"), ("indices", "indptr"))
        if len(obj.shape) != 2:
            refuse(f"sparse_csr shape {list(obj.shape)} is not 2-D", path=path, name=name)
        indptr = obj.components["indptr"]
        if indptr.encoding == RAW:  # a compressed one is checked when decoded
            want = self.expected_nbytes(obj, "indptr")
            check_size(name, "indptr", indptr, want, path, what="indptr length")
        nv, ni = _raw_values(obj), _raw_nnz(obj, "indices")
        if nv is not None and ni is not None:
            if nv != ni:
                refuse(f"{nv} values but {ni} indices", path=path, name=name)

    def expected_nbytes(self, obj: Object, role: str) -> int | None:
        if role != "indptr" or not obj.shape:
            return None
        return (obj.shape[0] + 1) * dtypes.itemsize(obj.components[role].dtype)

    def read(self, obj: Object, get, *, path=None, name=None):
        return read_csr(obj, get, path=path, name=name)

    def read_selection(self, obj: Object, get, key, *, path=None, name=None, copy=True):
        """A block of whole rows reads only those rows; other keys read the whole matrix."""
        rows = _row_block(key, obj.shape)
        if rows is None:
            return super().read_selection(obj, get, key, path=path, name=name, copy=copy)
        return read_csr_rows(obj, get, *rows, path=path, name=name)


class SparseCOO(Layout):
    format = "sparse_coo"

    def check(self, name: str, obj: Object, path) -> None:
        _require(obj, name, path, ("values", "coords"), ("coords",))
        coords = obj.components["coords"]
        nnz = _raw_values(obj)
        if nnz is not None and coords.encoding == RAW:
            want = len(obj.shape) * nnz * dtypes.itemsize(coords.dtype)
            check_size(
                name, "coords", coords, want, path, what="coords length", detail=" (ndim x nnz)"
            )

    def read(self, obj: Object, get, *, path=None, name=None):
        return read_coo(obj, get, path=path, name=name)


def _row_block(key, shape) -> tuple[int, int] | None:
    """(r0, r1) when ``key`` selects rows r0..r1 (step 1) and every column."""
    key = key if isinstance(key, tuple) else (key,)
    if not key or len(key) > 2 or not isinstance(key[0], slice):
        return None
    r0, r1, step = key[0].indices(shape[0])
    if step != 1 or (
        len(key) == 2
        and key[1] != slice(None)
        and (not isinstance(key[1], slice) or key[1].indices(shape[1]) != (0, shape[1], 1))
    ):
        return None
    return r0, max(r0, r1)


def _u64(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"sparse indices must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise FormatError("sparse indices must not be negative")
    return np.ascontiguousarray(arr, dtype="<u8").reshape(-1)


def encode_csr(values, indices, indptr, shape) -> dict[str, np.ndarray]:
    """Components of a CSR matrix, refusing any structure a reader would reject."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise FormatError(f"CSR shape must be 2-D, got {shape}")
    out = {
        "values": np.asarray(values).reshape(-1),
        "indices": _u64(indices),
        "indptr": _u64(indptr),
    }
    indptr_, indices_ = out["indptr"], out["indices"]
    if indptr_.size != shape[0] + 1:
        raise FormatError(f"indptr has {indptr_.size} entries, expected {shape[0] + 1}")
    if indices_.size != out["values"].size:
        raise FormatError("values and indices differ in length")
    if indptr_[0] != 0 or np.any(indptr_[1:] < indptr_[:-1]):
        raise FormatError("indptr must start at 0 and never decrease")
    if int(indptr_[-1]) != indices_.size:
        raise FormatError(f"indptr ends at {int(indptr_[-1])}, expected nnz = {indices_.size}")
    if indices_.size and int(indices_.max()) >= shape[1]:
        raise FormatError(f"column index {int(indices_.max())} out of range [0, {shape[1]})")
    return out


def encode_coo(values, indices, shape) -> dict[str, np.ndarray]:
    """Components of a COO tensor; ``indices`` is (ndim, nnz) or its flat SoA form."""
    shape = tuple(int(s) for s in shape)
    vals = np.asarray(values).reshape(-1)
    coords = _u64(indices)
    if coords.size != len(shape) * vals.size:
        raise FormatError(
            f"indices hold {coords.size} entries, expected ndim x nnz = {len(shape) * vals.size}"
        )
    if vals.size:
        highest = coords.reshape(len(shape), vals.size).max(axis=1)
        for axis, (top, extent) in enumerate(zip(highest.tolist(), shape)):
            if top >= extent:
                raise FormatError(f"coordinate {top} on axis {axis} out of range [0, {extent})")
    return {"values": vals, "coords": coords}


def from_scipy(matrix) -> tuple[str, dict[str, np.ndarray], tuple[int, ...]]:
    """(format, components, shape) of any scipy.sparse array or matrix."""
    fmt = matrix.format
    if fmt == "csr":
        m = matrix
        return "sparse_csr", encode_csr(m.data, m.indices, m.indptr, m.shape), m.shape
    coo = matrix.tocoo()
    coords = (
        np.stack([np.asarray(c) for c in coo.coords])
        if hasattr(coo, "coords")
        else np.stack([coo.row, coo.col])
    )
    return "sparse_coo", encode_coo(coo.data, coords, coo.shape), tuple(coo.shape)
