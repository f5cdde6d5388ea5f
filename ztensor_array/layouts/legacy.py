"""Legacy v0.1 sparse blobs, which keep a whole sparse tensor in one stored component.

v0.1 wrote a sparse tensor as a single blob, so its digest and zstd frame cover all of it:

- ``legacy_sparse_csr`` (component ``blob``): indptr u64 x (rows+1), indices u64 x nnz,
  then the values.
- ``legacy_sparse_coo`` (component ``records``): per non-zero, ndim u64 indices then the value.

The component's dtype is the value dtype and its ``byte_order`` the file's data endianness,
which applies to the indices as well. These formats exist only in memory, for files opened
from v0.1; ``split_csr``/``split_coo`` give the parts that ``migrate`` writes as the v1
``sparse_csr``/``sparse_coo`` formats, and the readers return what those formats return.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import dtypes, manifest
from ..errors import FormatError
from ..manifest import Component, Object
from . import sparse

CSR = "legacy_sparse_csr"
COO = "legacy_sparse_coo"
INDEX_SIZE = 8  # legacy indices are always u64


def is_legacy(fmt: str) -> bool:
    """Whether a format exists only for v0.1 files (it is never written to a v1 file)."""
    return fmt in (CSR, COO)


def csr_nnz(shape: tuple[int, ...], length: int, value_size: int) -> int | None:
    """nnz of a raw CSR blob of ``length`` bytes, or None if no nnz gives that length."""
    head = (shape[0] + 1) * INDEX_SIZE
    rest = length - head
    if rest < 0 or rest % (INDEX_SIZE + value_size):
        return None
    return rest // (INDEX_SIZE + value_size)


def coo_record_size(ndim: int, value_size: int) -> int:
    return ndim * INDEX_SIZE + value_size


def _stored_bytes(comp: Component, array: np.ndarray) -> np.ndarray:
    """The component's bytes as stored (the Reader hands big-endian data over swapped)."""
    if comp.byte_order == "big":
        array = array.byteswap()
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _dtypes(comp: Component) -> tuple[np.dtype, np.dtype]:
    """(index dtype, value dtype) in the stored byte order."""
    order = ">" if comp.byte_order == "big" else "<"
    value = dtypes.to_numpy(comp.dtype)
    if value.itemsize > 1:
        value = value.newbyteorder(order)
    return np.dtype(f"{order}u8"), value


def _native(array: np.ndarray, like: np.dtype) -> np.ndarray:
    """A fresh native little-endian array (values keep their table dtype)."""
    return np.ascontiguousarray(array).astype(like, copy=True)


def split_csr(obj: Object, get: Callable[[str], np.ndarray], *, path=None, name=None):
    """(values, indices u64, indptr u64) of a legacy CSR blob, as fresh native arrays."""
    comp = obj.components["blob"]
    raw = _stored_bytes(comp, get("blob"))
    index_dt, value_dt = _dtypes(comp)
    nnz = csr_nnz(obj.shape, raw.size, value_dt.itemsize)
    if nnz is None:
        raise FormatError(
            f"decoded CSR blob of {raw.size} bytes fits no nnz for shape {list(obj.shape)}",
            path=path,
            obj=name,
            component="blob",
        )
    n_ptr = obj.shape[0] + 1
    cut1 = n_ptr * INDEX_SIZE
    cut2 = cut1 + nnz * INDEX_SIZE
    indptr = raw[:cut1].view(index_dt)
    indices = raw[cut1:cut2].view(index_dt)
    values = raw[cut2:].view(value_dt)
    return (
        _native(values, dtypes.to_numpy(comp.dtype)),
        _native(indices, np.dtype("<u8")),
        _native(indptr, np.dtype("<u8")),
    )


def split_coo(obj: Object, get: Callable[[str], np.ndarray], *, path=None, name=None):
    """(values, coords u64 of shape (ndim, nnz)) of legacy COO records, as fresh arrays."""
    comp = obj.components["records"]
    raw = _stored_bytes(comp, get("records"))
    index_dt, value_dt = _dtypes(comp)
    ndim = len(obj.shape)
    rec = coo_record_size(ndim, value_dt.itemsize)
    if raw.size % rec:
        raise FormatError(
            f"decoded COO records of {raw.size} bytes are not a multiple of {rec}",
            path=path,
            obj=name,
            component="records",
        )
    record = np.dtype([("index", index_dt, (ndim,)), ("value", value_dt)])
    assert record.itemsize == rec  # packed: numpy adds no padding without align=True
    table = raw.view(record)
    coords = _native(table["index"].T, np.dtype("<u8"))
    values = _native(table["value"], dtypes.to_numpy(comp.dtype))
    return values, coords


def _as_v1(fmt: str, parts: dict[str, np.ndarray], shape: tuple[int, ...]):
    """An (Object, get) pair presenting split parts as a v1 sparse object."""
    comps = {role: Component(dtypes.from_numpy(a.dtype), 0, a.nbytes) for role, a in parts.items()}
    return Object(shape, fmt, comps), parts.__getitem__


def _split(obj: Object, get, path, name):
    if obj.format == CSR:
        values, indices, indptr = split_csr(obj, get, path=path, name=name)
        return "sparse_csr", {"values": values, "indices": indices, "indptr": indptr}
    values, coords = split_coo(obj, get, path=path, name=name)
    return "sparse_coo", {"values": values, "coords": coords.reshape(-1)}


_V1_READERS = {"sparse_csr": sparse.read_csr, "sparse_coo": sparse.read_coo}


def v1_parts(obj: Object, get, *, path=None, name=None):
    """(v1 format, {role: array}) of a legacy sparse object, its index data checked.

    The arrays keep the stored value dtype (``migrate`` writes them as they are); the
    checks are those of the v1 sparse readers.
    """
    fmt, parts = _split(obj, get, path, name)
    _V1_READERS[fmt](*_as_v1(fmt, parts, obj.shape), path=path, name=name)
    return fmt, parts


def read_object(obj: Object, get, *, path=None, name=None):
    """The same scipy.sparse result as the v1 sparse readers, checks included."""
    fmt, parts = _split(obj, get, path, name)
    return _V1_READERS[fmt](*_as_v1(fmt, parts, obj.shape), path=path, name=name)


# --------------------------------------------------------------------------- structure


def _fail(message: str, path, name: str, role: str | None = None):
    raise FormatError(message, path=path, obj=name, component=role)


def _check_csr(name: str, obj: Object, path) -> None:
    comp = obj.components.get("blob")
    if comp is None or len(obj.components) != 1:
        _fail("legacy CSR object must have exactly one 'blob' component", path, name)
    if len(obj.shape) != 2:
        _fail(f"legacy sparsecsr shape {list(obj.shape)} is not 2-D", path, name)
    if comp.encoding == "raw":
        nnz = csr_nnz(obj.shape, comp.length, dtypes.itemsize(comp.dtype))
        if nnz is None or nnz > obj.numel:
            _fail(
                f"blob of {comp.length} bytes is no CSR of shape {list(obj.shape)} "
                f"with {comp.dtype} values",
                path,
                name,
                "blob",
            )


def _check_coo(name: str, obj: Object, path) -> None:
    comp = obj.components.get("records")
    if comp is None or len(obj.components) != 1:
        _fail("legacy COO object must have exactly one 'records' component", path, name)
    if not obj.shape:
        _fail("legacy sparsecoo tensor has no dimensions", path, name)
    if comp.encoding == "raw":
        rec = coo_record_size(len(obj.shape), dtypes.itemsize(comp.dtype))
        if comp.length % rec or comp.length // rec > obj.numel:
            _fail(
                f"records of {comp.length} bytes are no whole number of {rec}-byte "
                f"records for shape {list(obj.shape)}",
                path,
                name,
                "records",
            )


def _csr_bound(obj: Object, role: str) -> int:
    isz = dtypes.itemsize(obj.components[role].dtype)
    rows = obj.shape[0] if obj.shape else 0
    return (rows + 1) * INDEX_SIZE + obj.numel * (INDEX_SIZE + isz)


def _coo_bound(obj: Object, role: str) -> int:
    isz = dtypes.itemsize(obj.components[role].dtype)
    return obj.numel * coo_record_size(len(obj.shape), isz)


manifest.register_structure_check(CSR, _check_csr)
manifest.register_structure_check(COO, _check_coo)
manifest.register_decoded_bound(CSR, _csr_bound)
manifest.register_decoded_bound(COO, _coo_bound)
