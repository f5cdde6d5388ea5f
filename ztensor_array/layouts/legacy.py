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

from .. import dtypes
from ..codecs import RAW
from ..errors import FormatError
from ..manifest import Component, Object, expect
from . import sparse
from .base import Layout, refuse

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


def _read_as_v1(obj: Object, get, path, name):
    """(v1 format, {role: array}, scipy.sparse value), through the v1 sparse readers."""
    fmt, parts = _split(obj, get, path, name)
    return fmt, parts, _V1_READERS[fmt](*_as_v1(fmt, parts, obj.shape), path=path, name=name)


def v1_parts(obj: Object, get, *, path=None, name=None):
    """(v1 format, {role: array}) of a legacy sparse object, its index data checked.

    The arrays keep the stored value dtype (``migrate`` writes them as they are); the
    checks are those of the v1 sparse readers.
    """
    fmt, parts, _ = _read_as_v1(obj, get, path, name)
    return fmt, parts


# --------------------------------------------------------------------------- layouts


class _LegacySparse(Layout):
    """A whole sparse tensor in its one component ``role``, read as the v1 sparse readers
    read (same scipy.sparse result, same checks of the index data)."""

    role = ""

    def check(self, name: str, obj: Object, path) -> None:
        """One component; a shape the layout allows; a raw blob holding a whole number of
        entries, no more than the shape has elements."""
        comp = obj.components.get(self.role)
        expect(
            comp is not None and len(obj.components) == 1,
            f"{self.format} object must have exactly one {self.role!r} component",
            path,
            name,
        )
        problem = self.shape_problem(obj.shape)
        expect(problem is None, f"legacy tensor shape {list(obj.shape)} {problem}", path, name)
        if comp.encoding == RAW:
            nnz = self.raw_nnz(obj.shape, comp)
            if nnz is None or nnz > obj.numel:
                refuse(self.blob_problem(obj.shape, comp), self.role, path=path, name=name)

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        raise NotImplementedError

    def raw_nnz(self, shape: tuple[int, ...], comp: Component) -> int | None:
        """Entries a raw blob of this length holds, None when no whole number fits."""
        raise NotImplementedError

    def blob_problem(self, shape: tuple[int, ...], comp: Component) -> str:
        raise NotImplementedError

    def read(self, obj: Object, get, *, path=None, name=None):
        return _read_as_v1(obj, get, path, name)[2]


class LegacyCSR(_LegacySparse):
    format = CSR
    role = "blob"

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        return None if len(shape) == 2 else "is not 2-D (sparsecsr)"

    def raw_nnz(self, shape: tuple[int, ...], comp: Component) -> int | None:
        return csr_nnz(shape, comp.length, dtypes.itemsize(comp.dtype))

    def blob_problem(self, shape: tuple[int, ...], comp: Component) -> str:
        return (
            f"blob of {comp.length} bytes is no CSR of shape {list(shape)} with {comp.dtype} values"
        )

    def decoded_bound(self, obj: Object, role: str) -> int:
        isz = dtypes.itemsize(obj.components[role].dtype)
        rows = obj.shape[0] if obj.shape else 0
        return (rows + 1) * INDEX_SIZE + obj.numel * (INDEX_SIZE + isz)


class LegacyCOO(_LegacySparse):
    format = COO
    role = "records"

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        return None if shape else "has no dimensions (sparsecoo)"

    def _record(self, shape: tuple[int, ...], comp: Component) -> int:
        return coo_record_size(len(shape), dtypes.itemsize(comp.dtype))

    def raw_nnz(self, shape: tuple[int, ...], comp: Component) -> int | None:
        rec = self._record(shape, comp)
        return None if comp.length % rec else comp.length // rec

    def blob_problem(self, shape: tuple[int, ...], comp: Component) -> str:
        return (
            f"records of {comp.length} bytes are no whole number of "
            f"{self._record(shape, comp)}-byte records for shape {list(shape)}"
        )

    def decoded_bound(self, obj: Object, role: str) -> int:
        isz = dtypes.itemsize(obj.components[role].dtype)
        return obj.numel * coo_record_size(len(obj.shape), isz)
