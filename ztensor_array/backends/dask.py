"""Dask arrays over .zt files, and parallel writes of Dask (or numpy) arrays into them.

Reading: every block of the graph is a tiny picklable reader (path, file identity, offsets,
dtype, shape) that maps the file lazily in whichever process runs it (one map per file per
process) and returns a zero-copy slice of that map for raw data. No np.memmap ever enters
the graph, so nothing is hashed or copied when the graph is built or shipped.

Writing: the client plans the file (writer.begin_parallel), workers pwrite raw blocks into a
preallocated region or compress chunks and append them (offsets assigned by the kernel in
completion order), and one final task commits the manifest (writer.ParallelWriter). A
failure before the commit leaves any previous file as it was.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import dtypes, writer
from ..codecs.policy import normalize_checksum, normalize_compress
from ..errors import FormatError, UnsupportedError, ZTensorError
from ..interop import as_array
from ..layouts import chunked
from ..layouts.base import require_known_types
from ..manifest import Component, Object
from ..reader import Reader

DEFAULT_CHUNK_BYTES = 16 << 20  # chunk target for new chunked objects from numpy input
SPARSE_BLOCK_BYTES = 64 << 20  # bytes of values+indices per CSR row block
_MAX_MAPS = 64

__all__ = ["from_ztensor", "write_arrays"]

# ------------------------------------------------------------------ file maps (per process)

_maps: OrderedDict[tuple, mmap.mmap] = OrderedDict()
_maps_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file as it was when the graph was built: a block refuses to read a changed file."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> FileRef:
        st = os.stat(path)
        return cls(os.path.abspath(path), st.st_size, st.st_mtime_ns)

    def map(self) -> mmap.mmap:
        key = (self.path, self.size, self.mtime_ns)
        mm = _maps.get(key)
        if mm is not None:
            return mm
        with _maps_lock:
            mm = _maps.get(key)
            if mm is None:
                mm = _maps[key] = self._open()
                while len(_maps) > _MAX_MAPS:  # views keep an evicted map alive
                    _maps.popitem(last=False)
        return mm

    def _open(self) -> mmap.mmap:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ZTensorError(f"cannot open: {exc.strerror}", path=self.path) from None
        try:
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
                raise ZTensorError(
                    "file changed since the dask array was created; call from_ztensor again",
                    path=self.path,
                )
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def check(self) -> None:
        st = os.stat(self.path)
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            raise ZTensorError(
                "file changed since the dask array was created; call from_ztensor again",
                path=self.path,
            )


# ------------------------------------------------------------------ block readers


@dataclass(frozen=True, slots=True)
class RawBlock:
    """A block of a raw dense tensor: a zero-copy slice of the file map."""

    file: FileRef
    name: str
    offset: int
    dtype: str  # logical zTensor dtype name
    shape: tuple[int, ...]
    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __call__(self) -> np.ndarray:
        dt = dtypes.to_numpy(self.dtype)
        count = math.prod(self.shape)
        whole = np.frombuffer(self.file.map(), dt, count, self.offset).reshape(self.shape)
        return whole[tuple(slice(a, b) for a, b in zip(self.start, self.stop))]

    def __dask_tokenize__(self):
        return (type(self).__name__, *_fields(self))


@dataclass(frozen=True, slots=True)
class ChunkBlock:
    """One stored chunk of a chunked tensor (raw: zero-copy; zstd: decoded; absent: fill)."""

    file: FileRef
    name: str
    offset: int  # -1 when the chunk was never written
    length: int
    encoding: str
    dtype: str
    extent: tuple[int, ...]
    fill: Any
    digest: str | None = None

    def __call__(self) -> np.ndarray:
        dt = dtypes.to_numpy(self.dtype)
        if self.offset < 0:
            grid = chunked.ChunkGrid(self.extent, self.extent, self.dtype, self.fill)
            return chunked.fill_array(grid, self.extent, path=self.file.path, name=self.name)
        stored = memoryview(self.file.map())[self.offset : self.offset + self.length]
        if self.digest is not None:
            _verify(stored, self.digest, self.file.path, self.name)
        if self.encoding == "raw":
            return np.frombuffer(stored, dt).reshape(self.extent)
        from ..codecs import zstd

        try:
            out = zstd.decompress(stored, math.prod(self.extent) * dt.itemsize)
        except zstd.ZstdFrameError as exc:
            raise FormatError(str(exc), path=self.file.path, obj=self.name) from None
        return out.view(dt).reshape(self.extent)

    def __dask_tokenize__(self):
        return (type(self).__name__, *_fields(self))


@dataclass(frozen=True, slots=True)
class CsrRowBlock:
    """Rows [r0, r1) of a raw sparse_csr tensor as a scipy.sparse.csr_matrix."""

    file: FileRef
    name: str
    r0: int
    r1: int
    ncols: int
    values: tuple[int, str]  # (offset, logical dtype)
    indices: tuple[int, str]
    indptr: tuple[int, str]

    def __call__(self):
        import scipy.sparse

        mm = self.file.map()

        def part(spec, lo, hi):
            dt = dtypes.to_numpy(spec[1])
            return np.frombuffer(mm, dt, hi - lo, spec[0] + lo * dt.itemsize)

        ptr = part(self.indptr, self.r0, self.r1 + 1).astype(np.int64)
        lo, hi = (int(ptr[0]), int(ptr[-1])) if ptr.size else (0, 0)
        if lo < 0 or hi < lo or np.any(np.diff(ptr) < 0):
            raise FormatError("indptr decreases", path=self.file.path, obj=self.name)
        idx = part(self.indices, lo, hi).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.ncols):
            raise FormatError("column index out of range", path=self.file.path, obj=self.name)
        vals = part(self.values, lo, hi)
        return scipy.sparse.csr_matrix(
            (vals, idx, ptr - lo), shape=(self.r1 - self.r0, self.ncols), copy=False
        )

    def __dask_tokenize__(self):
        return (type(self).__name__, *_fields(self))


@dataclass(frozen=True, slots=True)
class ObjectBlock:
    """A whole object read through the Reader (zstd dense, COO, other layouts)."""

    file: FileRef
    name: str
    verify: bool = False

    def __call__(self):
        self.file.check()
        with Reader(self.file.path) as r:
            value = r.read_tensor(self.name, verify_checksum=self.verify, copy=True)
        return value

    def __dask_tokenize__(self):
        return (type(self).__name__, *_fields(self))


def _fields(obj) -> tuple:
    return tuple(getattr(obj, f) for f in obj.__slots__)


def _verify(stored, digest: str, path: str, name: str) -> None:
    from ..codecs import digests
    from ..errors import ChecksumError

    if digests.matches(digest, stored) is False:
        raise ChecksumError(f"digest mismatch (expected {digest})", path=path, obj=name)


# ------------------------------------------------------------------ from_ztensor


def from_ztensor(
    path: str | os.PathLike,
    name: str | None = None,
    chunks: Any = "auto",
    *,
    verify_checksum: bool = False,
):
    """A lazy dask array of one tensor of a .zt file (or a dict of all when ``name`` is None).

    chunks: "auto" follows the stored grid (chunked objects: one block per stored chunk;
    zstd dense: one block; raw dense: dask's automatic size); anything dask.array accepts
    otherwise (chunked and compressed objects are read on their own grid, then rechunked).
    ``verify_checksum`` checks chunk digests (chunked) or whole-object digests (others).
    """
    path = os.path.abspath(os.fspath(path))
    with Reader(path) as r:
        st = os.stat(path)
        ref = FileRef(path, st.st_size, st.st_mtime_ns)
        if name is None:
            return {
                n: _array(ref, n, r.manifest.objects[n], chunks, verify_checksum)
                for n in r.tensor_names
            }
        obj = r._object(name)
    return _array(ref, name, obj, chunks, verify_checksum)


def _array(ref: FileRef, name: str, obj: Object, chunks, verify: bool):
    import dask.array as da

    require_known_types(obj, ref.path, name)
    fmt = obj.format
    if fmt == "chunked":
        grid = chunked.chunk_grid(obj, ref.path, name)
        dtype = dtypes.to_numpy(grid.dtype)
        native = chunked.regular_chunks(obj.shape, grid.chunk_shape)
        blocks = {}
        for index in np.ndindex(*[len(c) for c in native]):  # an empty axis: one 0-block
            comp = obj.components.get(chunked.chunk_role(index))
            blocks[index] = ChunkBlock(
                ref,
                name,
                comp.offset if comp else -1,
                comp.length if comp else 0,
                comp.encoding if comp else "raw",
                grid.dtype,
                tuple(c[i] for c, i in zip(native, index)),
                grid.fill_value,
                comp.digest if (comp and verify) else None,
            )
        arr = _graph(ref, name, blocks, native, np.empty((0,) * len(obj.shape), dtype))
        return arr if chunks == "auto" else arr.rechunk(chunks)
    if fmt == "dense":
        comp = obj.components["data"]
        logical = dtypes.logical_name(comp.dtype, comp.type)
        dtype = dtypes.to_numpy(logical)
        meta = np.empty((0,) * len(obj.shape), dtype)
        if comp.encoding == "raw" and comp.byte_order == "little" and not verify:
            norm = da.core.normalize_chunks(chunks, obj.shape, dtype=dtype)
            blocks = {}
            starts = [np.cumsum((0,) + c) for c in norm]
            for index in np.ndindex(*[len(c) for c in norm]):
                start = tuple(int(starts[a][i]) for a, i in enumerate(index))
                stop = tuple(int(starts[a][i + 1]) for a, i in enumerate(index))
                blocks[index] = RawBlock(ref, name, comp.offset, logical, obj.shape, start, stop)
            return _graph(ref, name, blocks, norm, meta)
        arr = _graph(
            ref,
            name,
            {(0,) * len(obj.shape): ObjectBlock(ref, name, verify)},
            tuple((s,) for s in obj.shape),
            meta,
        )
        return arr if chunks == "auto" else arr.rechunk(chunks)
    if fmt == "sparse_csr":
        return _csr_array(ref, name, obj, chunks, verify)
    # sparse_coo and any other layout: one block, read by the Reader
    with Reader(ref.path) as r:
        sample = r.read_tensor(name, copy=True) if math.prod(obj.shape) == 0 else None
    block = ObjectBlock(ref, name, verify)
    meta = _meta_of(obj, sample)
    return _graph(ref, name, {(0,) * len(obj.shape): block}, tuple((s,) for s in obj.shape), meta)


def _meta_of(obj: Object, sample):
    if sample is not None:
        return sample
    comp = obj.components.get("values") or next(iter(obj.components.values()), None)
    if obj.format == "sparse_coo" and comp is not None:
        import scipy.sparse

        dt = dtypes.to_numpy(dtypes.logical_name(comp.dtype, comp.type))
        if len(obj.shape) == 2:
            return scipy.sparse.coo_matrix((0, 0), dtype=dt)
        return scipy.sparse.coo_array(
            (np.empty(0, dt), tuple(np.empty(0, np.int64) for _ in obj.shape)),
            shape=(0,) * len(obj.shape),
        )
    if comp is None:
        return np.empty((0,) * len(obj.shape))
    dt = dtypes.to_numpy(dtypes.logical_name(comp.dtype, comp.type))
    return np.empty((0,) * len(obj.shape), dt)


def _csr_array(ref: FileRef, name: str, obj: Object, chunks, verify: bool):
    import dask.array as da
    import scipy.sparse

    rows, ncols = obj.shape
    comps = obj.components
    vdt = dtypes.logical_name(comps["values"].dtype, comps["values"].type)
    meta = scipy.sparse.csr_matrix((0, 0), dtype=dtypes.to_numpy(vdt))
    raw = all(c.encoding == "raw" and c.byte_order == "little" for c in comps.values())
    if not raw or verify or rows == 0:
        arr = _graph(ref, name, {(0, 0): ObjectBlock(ref, name, verify)}, ((rows,), (ncols,)), meta)
        return arr if chunks == "auto" else arr.rechunk(chunks)
    if chunks == "auto":
        total = sum(comps[r].length for r in ("values", "indices")) or 1
        per = max(1, min(rows, rows * SPARSE_BLOCK_BYTES // total))
        row_chunks = da.core.normalize_chunks((per,), (rows,))[0]
    else:
        norm = da.core.normalize_chunks(chunks, obj.shape, dtype=meta.dtype)
        if len(norm[1]) != 1:
            raise ZTensorError(
                "sparse CSR tensors are split into row blocks only; give chunks=(rows, -1)",
                path=ref.path,
                obj=name,
            )
        row_chunks = norm[0]
    bounds = np.cumsum((0,) + tuple(row_chunks))
    spec = {
        r: (comps[r].offset, dtypes.logical_name(comps[r].dtype, comps[r].type))
        for r in ("values", "indices", "indptr")
    }
    blocks = {
        (i, 0): CsrRowBlock(
            ref,
            name,
            int(bounds[i]),
            int(bounds[i + 1]),
            ncols,
            spec["values"],
            spec["indices"],
            spec["indptr"],
        )
        for i in range(len(row_chunks))
    }
    return _graph(ref, name, blocks, (tuple(row_chunks), (ncols,)), meta)


def _graph(ref: FileRef, name: str, blocks: dict, chunks, meta):
    import dask.array as da
    from dask.base import tokenize

    key = "ztensor-" + tokenize(ref.path, ref.size, ref.mtime_ns, name, list(blocks.values()))
    dsk = {(key, *index): (block,) for index, block in blocks.items()}
    return da.Array(dsk, key, chunks, meta=meta)


# ------------------------------------------------------------------ writing


@dataclass(frozen=True)
class _Spec:
    """What the commit needs to know about one object being written."""

    name: str
    layout: str  # "dense" | "chunked" | "dense_zstd"
    shape: tuple[int, ...]
    storage: str
    type: str | None
    region: int = -1  # dense raw: index of its preallocated region
    nbytes: int = 0
    checksum: str | None = None
    attributes: Mapping[str, Any] | None = None
    keep: Mapping[str, Component] | None = None  # chunks kept from a grown object


def _storage_of(dtype: np.dtype) -> tuple[str, str | None, np.dtype]:
    """(storage dtype, logical type, little-endian numpy dtype) of an array dtype."""
    name = dtypes.from_numpy(dtype)
    storage, type_ = dtypes.storage_spelling(name)
    return storage, type_, dtypes.little_endian(np.dtype(dtype))


def _le(block: np.ndarray, le: np.dtype) -> np.ndarray:
    block = np.asarray(block)
    return np.ascontiguousarray(block if block.dtype == le else block.astype(le))


def _write_region(block, target: str, offsets, region: int, shape, start, le, fence) -> None:
    data = _le(block, le)
    with _held(fence):
        writer.pwrite_block(target, offsets[region], tuple(shape), tuple(start), data)


def _held(fence: writer.WriteFence | None):
    return fence.hold() if fence is not None else contextlib.nullcontext()


def _write_chunk(block, target: str, role: str, storage, type_, le, level, checksum, fence, _begun):
    from ..codecs import digests, zstd

    data = _le(block, le)
    view = memoryview(data.reshape(-1).view(np.uint8))
    # chunked-layout frames record their size (one-shot decode); a dense object's frame is
    # written exactly as the reference writes it
    encode = zstd.compress if role == "data" else zstd.compress_sized
    blob = encode(view, level) if level else view
    with _held(fence):
        offset = writer.append_blob(target, blob)
    length = memoryview(blob).nbytes
    digest = digests.compute(checksum, blob) if checksum else None
    return role, Component(storage, offset, length, "zstd" if level else "raw", digest, None, type_)


def _commit(plan: writer.ParallelPlan, specs: list[_Spec], offsets, results: list) -> int:
    by_name: dict[str, dict[str, Component]] = {s.name: {} for s in specs}
    for name, items in results:
        for role, comp in items:
            by_name[name][role] = comp
    w = writer.ParallelWriter(plan)
    try:
        for s in specs:
            if s.layout == "dense":
                offset = offsets[s.region]
                digest = (
                    writer.region_digest(plan.target, offset, s.nbytes, s.checksum)
                    if s.checksum
                    else None
                )
                comps = {
                    "data": Component(s.storage, offset, s.nbytes, "raw", digest, None, s.type)
                }
                fmt = "dense"
            elif s.layout == "dense_zstd":
                comps = {"data": by_name[s.name]["data"]}
                fmt = "dense"
            else:
                comps = dict(s.keep or {})
                comps.update(by_name[s.name])
                fmt = chunked.FORMAT
            w.put_object(s.name, Object(s.shape, fmt, comps, s.attributes))
        return w.finalize()
    except BaseException:
        w.abort()
        raise


def _collect(name: str, *items) -> tuple[str, list]:
    cells = (i.flat[0] if isinstance(i, np.ndarray) else i for i in items)
    return name, [c for c in cells if c is not None]


def _per_block(arr, fn, *args) -> list:
    """One write task per block of ``arr``, fused by dask with the task that computes the
    block: the block is written by the thread (or worker) that made it, while it is still in
    its cache, and never passes through the scheduler. Each task returns a 1-cell object
    array holding fn's result."""
    out = arr.map_blocks(
        fn,
        *args,
        dtype=object,
        chunks=(1,) * arr.ndim,
        meta=np.empty((0,) * arr.ndim, dtype=object),
        name=f"ztensor-write-{os.urandom(8).hex()}",
    )
    return list(out.to_delayed().ravel())


def _cell(value, ndim: int) -> np.ndarray:
    out = np.empty((1,) * ndim, dtype=object)
    out[(0,) * ndim] = value
    return out


def _region_block(block, offsets, target, region, shape, le, fence, block_info=None):
    """map_blocks body of a raw dense write: the block goes to its place in the region."""
    if block.size:
        start = tuple(a for a, _ in block_info[0]["array-location"])
        _write_region(block, target, offsets, region, shape, start, le, fence)
    return _cell(None, len(shape))


def _chunk_block(
    block, begun, target, offset, storage, type_, le, level, csum, fence, block_id=None
):
    """map_blocks body of a chunked write: compress and append one chunk (none if empty)."""
    if not block.size:
        return _cell(None, block.ndim)  # an empty axis has no chunks
    role = chunked.chunk_role(tuple(i + o for i, o in zip(block_id, offset)))
    comp = _write_chunk(block, target, role, storage, type_, le, level, csum, fence, begun)
    return _cell(comp, block.ndim)


def _as_dask(value, chunks):
    import dask.array as da

    if isinstance(value, da.Array):
        return value, False
    arr = as_array(value)
    return da.from_array(arr, chunks=chunks, name=False, asarray=True), True


def _chunk_shape_for(arr, chunks, from_numpy: bool) -> tuple[int, ...]:
    import dask.array as da

    if chunks is None and not from_numpy:
        return tuple(max(max(c), 1) if c else 1 for c in arr.chunks)
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        chunks = (int(chunks),) * arr.ndim
    if isinstance(chunks, (tuple, list)) and all(
        c is None or (isinstance(c, (int, np.integer)) and not isinstance(c, bool)) for c in chunks
    ):
        if len(chunks) != arr.ndim:
            raise ValueError(f"chunks {chunks!r} do not match {arr.ndim} dimensions")
        out = tuple(max(s, 1) if c in (None, -1) else int(c) for c, s in zip(chunks, arr.shape))
        if any(c < 1 for c in out):
            raise ValueError(f"chunk sizes must be positive, got {chunks!r}")
        return out
    if chunks is None:
        chunks = "auto"
    norm = da.core.normalize_chunks(chunks, arr.shape, limit=DEFAULT_CHUNK_BYTES, dtype=arr.dtype)
    return tuple(max(max(c) if c else 1, 1) for c in norm)


_MODE_OF = {"w": "w", "w-": "x", "x": "x", "a": "a", "r+": "a"}


def write_arrays(
    arrays: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    mode: str = "w-",
    compress: bool | int = False,
    chunks: Any = None,
    checksum: str | None = None,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    append_dim: int | None = None,
    region: Any = None,
    compute: bool = True,
    attributes: Mapping[str, Any] | None = None,
):
    """Write numpy/dask arrays as objects of a .zt file, in parallel on any dask scheduler.

    Raw arrays become ``dense`` objects written block by block into a preallocated region;
    compressed arrays (or any with ``chunks``) become ``chunked`` objects whose chunks are
    compressed by the workers. ``encoding[name]`` may override ``compress``, ``chunks``,
    ``checksum`` and set ``layout`` ("dense"/"chunked"), ``fill_value`` and ``attributes``.
    ``append_dim=0`` grows existing chunked objects along axis 0 (mode "a").
    ``compute=False`` returns a dask Delayed that writes and commits the file; a failed
    computation of it (``.compute()``, ``dask.compute``, ``client.compute``; any scheduler)
    removes what it wrote (see "deferred writes" below).
    """
    import dask

    path = os.fspath(path)
    if mode not in _MODE_OF:
        raise ValueError(f"mode must be one of {sorted(_MODE_OF)}, got {mode!r}")
    if region is not None and append_dim is not None:
        raise ValueError("give append_dim or region, not both")
    if append_dim is not None and append_dim != 0:
        raise ZTensorError(
            f"append_dim={append_dim!r}: chunked objects grow along axis 0 only", path=path
        )
    wmode = _MODE_OF[mode]
    if wmode == "a" and not os.path.exists(path):
        wmode = "x"
    encoding = dict(encoding or {})
    existing: dict[str, Object] = {}
    if wmode == "a":
        with Reader(path) as r:
            existing = dict(r.manifest.objects)

    prepared = []
    all_numpy = True
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, not {type(name).__name__}")
        enc = dict(encoding.get(name) or {})
        unknown = set(enc) - {
            "compress",
            "chunks",
            "checksum",
            "layout",
            "fill_value",
            "attributes",
        }
        if unknown:
            raise ValueError(f"unknown encoding keys {sorted(unknown)} for {name!r}")
        level = normalize_compress(enc.get("compress", compress))
        csum = normalize_checksum(enc.get("checksum", checksum))
        want_chunks = enc.get("chunks", chunks)
        growing = (append_dim is not None or region is not None) and name in existing
        if region is not None and name not in existing:
            raise ZTensorError("region= writes into an existing object", path=path, obj=name)
        if name in existing and not growing:
            raise ZTensorError(
                "an object of this name already exists (append_dim=0 grows a chunked one, "
                "region= overwrites part of it)",
                path=path,
                obj=name,
            )
        layout = enc.get("layout")
        if layout is None:
            layout = "chunked" if (level or want_chunks is not None or growing) else "dense"
        if layout not in ("dense", "chunked"):
            raise ValueError(f"layout must be 'dense' or 'chunked', got {layout!r}")
        if growing and layout != "chunked":
            raise ZTensorError(
                "append_dim/region update chunked objects; layout='dense' cannot be used",
                path=path,
                obj=name,
            )
        arr, from_np = _as_dask(value, "auto" if want_chunks is None else want_chunks)
        if any(math.isnan(n) for n in arr.shape):
            raise ZTensorError(
                "the dask array has unknown chunk sizes; call compute_chunk_sizes() first",
                path=path,
                obj=name,
            )
        all_numpy &= from_np
        try:
            storage, type_, le = _storage_of(arr.dtype)
        except ZTensorError as exc:
            raise ZTensorError(exc.reason, path=path, obj=name) from None
        prepared.append(
            (name, arr, from_np, layout, level, csum, want_chunks, growing, storage, type_, le, enc)
        )

    # check growth before anything is written
    updates = {}
    for name, arr, *_rest in prepared:
        if name in existing and append_dim is not None:
            updates[name] = _check_growth(path, name, existing[name], arr)
        elif name in existing and region is not None:
            updates[name] = _check_region(path, name, existing[name], arr, region)

    plan = writer.plan_parallel(path, wmode)
    if attributes:
        plan = _with_attributes(plan, attributes)
    regions = []  # byte sizes of the raw dense objects' regions, in order
    for item in prepared:
        name, arr, _np, layout, level, *_ = item
        if layout == "dense" and not level:
            regions.append(math.prod(arr.shape) * item[10].itemsize)
    if not compute:  # the file is created by the graph's first task, when computed
        commit_key = f"ztensor-commit-{os.urandom(8).hex()}"
        begin = dask.delayed(_begin, pure=False)(plan, regions, commit_key)
        return _deferred(plan, _graph_of_writes(plan, prepared, updates, begin, commit_key))
    # computing now: start here, so that no task can begin the file after a failure
    offsets = writer.begin_parallel(plan, regions)
    try:
        final = _graph_of_writes(plan, prepared, updates, offsets)
        if all_numpy:
            return dask.compute(final, scheduler="threads")[0]
        return dask.compute(final)[0]
    except BaseException:
        writer.abort_parallel(plan)  # waits for writes in flight, then undoes them
        raise


# ------------------------------------------------------------------ deferred writes
#
# A compute=False write that fails must not leave its temp file, or (mode "a") its lock file
# and appended tail, behind. Dask has no "finally" task: a failed task only stops its
# dependents, so the cleanup runs where the failure is seen first:
# - local schedulers: in the process that computes, WriteDelayed.compute() and a callback
#   for dask.compute(...)/persist of several collections;
# - distributed: on the scheduler, which learns of the failure before any client does. The
#   graph's first task (_begin, on a worker) installs a scheduler plugin (_WriteWatch) and
#   registers its write under the commit task's key; when that task errs, or is released
#   before it ever ran (the client cancelled, or went away), the plugin undoes the write,
#   before the error is reported to any client. A failure that happens before _begin
#   reached the scheduler is caught by _begin itself: it asks after creating the file, and
#   undoes it if the commit task is already erred or released.

_aborted: set[tuple[str, str]] = set()  # (target, token) of writes undone in this process
_aborted_lock = threading.Lock()
_live_writes = None  # weakref.WeakValueDictionary: commit key -> WriteDelayed
_WriteDelayed = None
_WATCH = "ztensor-write-watch"  # the scheduler plugin's name
_LIVE_STATES = ("waiting", "queued", "no-worker")  # a commit task that may still run


def _plan_id(plan: writer.ParallelPlan) -> tuple[str, str]:
    return plan.target, plan.token


def _begin(plan: writer.ParallelPlan, regions: list[int], commit_key: str) -> list[int]:
    """The graph's first task. Refuses to start a write that was already undone in this
    process (a failure elsewhere in the graph can be cleaned up while this task still waits
    to run, and it must not recreate the file afterwards); on a distributed worker, hands
    the write to the scheduler's watch, and undoes it if the commit can no longer run."""
    with _aborted_lock:
        if _plan_id(plan) in _aborted:
            raise ZTensorError(
                "this deferred write failed and was undone; call to_ztensor again",
                path=plan.path,
            )
        try:
            offsets = writer.begin_parallel(plan, regions)
        except BaseException:
            writer.abort_parallel(plan)  # a half-made temp file or our own lock file
            raise
    if not _watched(plan, commit_key):
        _undo(plan)
        raise ZTensorError(
            "this deferred write failed or was cancelled before it began; nothing was written",
            path=plan.path,
        )
    return offsets


def _watched(plan: writer.ParallelPlan, commit_key: str) -> bool:
    """False if this runs on a distributed worker and the scheduler says the commit task
    will never run; True otherwise (also where there is no scheduler to ask)."""
    import sys

    if "distributed" not in sys.modules:
        return True
    import distributed

    try:
        begin_key = distributed.get_worker().get_current_task()
    except ValueError:
        return True  # not in a distributed task
    from dataclasses import replace

    small = replace(plan, base_objects={}, attributes={})  # what abort_parallel needs
    try:
        client = distributed.get_client()
        return client.run_on_scheduler(_watch_write, commit_key, begin_key, small)
    except Exception as exc:  # e.g. a scheduler without ztensor_array: write, unwatched
        import warnings

        warnings.warn(
            f"{plan.path}: the scheduler cannot watch this write ({exc!r}); if it fails, "
            "its temp file (mode 'a': lock file and tail) stays",
            RuntimeWarning,
            stacklevel=2,
        )
        return True


def _watch_write(
    commit_key: str, begin_key, plan: writer.ParallelPlan, dask_scheduler=None
) -> bool:
    """Runs on the scheduler (its event loop, so no transition interleaves): installs the
    watch once, and registers the write if its commit task may still run."""
    watch = dask_scheduler.plugins.get(_WATCH)
    if watch is None:
        watch = _watch_class()()
        dask_scheduler.add_plugin(watch, name=_WATCH, idempotent=True)
    ts = dask_scheduler.tasks.get(commit_key)
    if ts is None:  # released and forgotten, or renamed (fused into a caller's task)
        begin = dask_scheduler.tasks.get(begin_key)
        return begin is not None and begin.state == "processing"  # renamed: not watched
    if ts.state not in _LIVE_STATES:
        return False
    watch.plans[commit_key] = plan
    return True


_WriteWatch = None


def _watch_class():
    """The scheduler plugin class (built on first use: importing this module must not
    import distributed)."""
    global _WriteWatch
    if _WriteWatch is not None:
        return _WriteWatch
    from distributed.diagnostics.plugin import SchedulerPlugin

    class WriteWatch(SchedulerPlugin):
        """Undoes a registered write when its commit task errs, or is released without
        ever having run (transitions are seen before clients are told of them)."""

        idempotent = True
        name = _WATCH

        def __init__(self) -> None:
            self.plans: dict[str, writer.ParallelPlan] = {}
            self.started: set[str] = set()  # commit tasks that were sent to a worker

        def transition(self, key, start, finish, *args, **kwargs) -> None:
            plan = self.plans.get(key)
            if plan is None:
                return
            if finish == "processing":
                self.started.add(key)  # from now on the commit cleans up after itself
                return
            ran = key in self.started
            if finish == "erred" or (finish in ("released", "forgotten") and not ran):
                self.plans.pop(key, None)
                self.started.discard(key)
                _undo(plan)  # no task of it can begin the file again (see _begin)
            elif finish == "memory" or finish == "forgotten":
                self.plans.pop(key, None)
                self.started.discard(key)

    WriteWatch.__module__ = __name__
    WriteWatch.__qualname__ = "_WriteWatch"
    _WriteWatch = WriteWatch
    return WriteWatch


def _undo(plan: writer.ParallelPlan) -> None:
    with _aborted_lock:
        _aborted.add(_plan_id(plan))
    writer.abort_parallel(plan)  # waits for fenced writes in flight, then undoes them


def _write_delayed_class():
    """WriteDelayed: a dask Delayed whose failed compute() undoes the write (built on first
    use, so importing this module does not import dask)."""
    global _WriteDelayed, _live_writes
    if _WriteDelayed is not None:
        return _WriteDelayed
    import weakref

    from dask.callbacks import Callback
    from dask.delayed import Delayed

    class WriteDelayed(Delayed):
        """The Delayed of ``to_ztensor(..., compute=False)``; computing it writes the file."""

        __slots__ = ("_plan",)

        def compute(self, **kwargs):
            try:
                return super().compute(**kwargs)
            except BaseException:
                _undo(self._plan)
                raise

        def __setstate__(self, state):  # an unpickled write is watched in this process too
            attrs, slots = state if isinstance(state, tuple) else (state, None)
            for name, value in {**(attrs or {}), **(slots or {})}.items():
                object.__setattr__(self, name, value)
            _live_writes[self.key] = self

    class _UndoFailedWrites(Callback):
        """Local schedulers: undo the writes of a graph that failed."""

        def _finish(self, dsk, state, errored):
            if errored and _live_writes:
                done = state.get("finished", ())
                for key, w in list(_live_writes.items()):
                    if key in dsk and key not in done:  # a committed write stays
                        _undo(w._plan)

    WriteDelayed.__module__ = __name__
    WriteDelayed.__qualname__ = "WriteDelayed"
    _live_writes = weakref.WeakValueDictionary()
    _UndoFailedWrites().register()
    _WriteDelayed = WriteDelayed
    return WriteDelayed


def __getattr__(name: str):
    if name == "WriteDelayed":  # so that pickle finds the class by name
        return _write_delayed_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _deferred(plan: writer.ParallelPlan, final):
    cls = _write_delayed_class()
    out = cls(final.key, final.dask)
    out._plan = plan
    _live_writes[out.key] = out
    return out


def _graph_of_writes(plan: writer.ParallelPlan, prepared, updates, begin, key=None):
    """The delayed commit (named ``key`` if given) of every object's write tasks; ``begin``
    gives region offsets."""
    import dask

    specs, tasks = [], []
    region = 0
    for item in prepared:
        spec, task = _plan_object(plan, item, updates.get(item[0]), begin, region)
        region += spec.region >= 0
        specs.append(spec)
        tasks.append(task)
    name = {"dask_key_name": key} if key else {}
    return dask.delayed(_commit, pure=False)(plan, specs, begin, tasks, **name)


def _with_attributes(plan: writer.ParallelPlan, attributes) -> writer.ParallelPlan:
    from dataclasses import replace

    merged = dict(plan.attributes)
    merged.update(attributes)
    return replace(plan, attributes=merged)


def _check_growth(path: str, name: str, obj: Object, arr):
    """(grid, tail rows to rewrite) for growing ``obj`` by ``arr`` along axis 0."""
    if obj.format != chunked.FORMAT:
        raise ZTensorError(
            f"append_dim=0 needs a chunked object, this one is {obj.format!r} "
            "(write it with compress= or chunks= to make it growable)",
            path=path,
            obj=name,
        )
    grid = chunked.chunk_grid(obj, path, name)
    if not obj.shape:
        raise ZTensorError("a 0-d object cannot grow along axis 0", path=path, obj=name)
    have = dtypes.from_numpy(arr.dtype)
    if have != grid.dtype:
        raise ZTensorError(
            f"cannot append {have} data to a {grid.dtype} object", path=path, obj=name
        )
    if arr.ndim != len(obj.shape) or tuple(arr.shape[1:]) != tuple(obj.shape[1:]):
        raise ZTensorError(
            f"cannot append shape {list(arr.shape)} along axis 0 of shape {list(obj.shape)}",
            path=path,
            obj=name,
        )
    full_rows = obj.shape[0] // grid.chunk_shape[0]
    prefix = None
    if obj.shape[0] > full_rows * grid.chunk_shape[0]:  # partial last chunk row: rewrite it
        with Reader(path, verify=True) as r:  # corruption must not be carried forward
            prefix = r.read_slice(name, (slice(full_rows * grid.chunk_shape[0], None),))
    keep = {role: c for role, c in obj.components.items() if _index(role, obj)[0] < full_rows}
    shape = (obj.shape[0] + arr.shape[0], *obj.shape[1:])
    return _Update(obj, grid, (full_rows,) + (0,) * (len(shape) - 1), prefix, keep, shape)


def _index(role: str, obj: Object) -> tuple[int, ...]:
    return chunked.parse_chunk_role(role, len(obj.shape))


def _check_region(path: str, name: str, obj: Object, arr, region):
    """The chunk-aligned box of ``obj`` that ``arr`` replaces (chunked objects only)."""
    if obj.format != chunked.FORMAT:
        raise UnsupportedError(
            f"region= rewrites chunks of a chunked object; this one is {obj.format!r}",
            path=path,
            obj=name,
        )
    grid = chunked.chunk_grid(obj, path, name)
    if dtypes.from_numpy(arr.dtype) != grid.dtype:
        raise ZTensorError(
            f"cannot write {dtypes.from_numpy(arr.dtype)} data into a {grid.dtype} object",
            path=path,
            obj=name,
        )
    sel = region if isinstance(region, tuple) else (region,)
    if len(sel) > len(obj.shape) or not all(isinstance(s, slice) for s in sel):
        raise ZTensorError("region must be a tuple of slices, one per leading axis", path=path)
    sel = sel + (slice(None),) * (len(obj.shape) - len(sel))
    box = []
    for axis, (s, n, c) in enumerate(zip(sel, obj.shape, grid.chunk_shape)):
        start, stop, step = s.indices(n)
        if step != 1 or start % c or (stop % c and stop != n) or stop < start:
            raise ZTensorError(
                f"region {s} on axis {axis} is not aligned to the chunk size {c}",
                path=path,
                obj=name,
            )
        box.append((start, stop))
    if tuple(b - a for a, b in box) != tuple(arr.shape):
        raise ZTensorError(
            f"region shape {[b - a for a, b in box]} != data shape {list(arr.shape)}",
            path=path,
            obj=name,
        )
    lo = tuple(a // c for (a, _), c in zip(box, grid.chunk_shape))
    hi = tuple(-(-b // c) for (_, b), c in zip(box, grid.chunk_shape))
    keep = {
        role: comp
        for role, comp in obj.components.items()
        if not all(a <= i < b for i, a, b in zip(_index(role, obj), lo, hi))
    }
    return _Update(obj, grid, lo, None, keep, obj.shape)


@dataclass(frozen=True)
class _Update:
    """A change to an existing chunked object: new chunks start at grid index ``offset``."""

    old: Object
    grid: chunked.ChunkGrid
    offset: tuple[int, ...]
    prefix: np.ndarray | None  # stored rows re-written in front of the new data (growth)
    keep: dict[str, Component]
    shape: tuple[int, ...]


def _plan_object(plan: writer.ParallelPlan, item, update: _Update | None, begin, region: int):
    import dask
    import dask.array as da

    name, arr, from_np, layout, level, csum, want_chunks, growing, storage, type_, le, enc = item
    target = plan.target
    user_attrs = dict(enc.get("attributes") or {})
    shape = tuple(int(s) for s in arr.shape)
    if layout == "dense" and not level:
        nbytes = math.prod(shape) * le.itemsize
        tasks = _per_block(arr, _region_block, begin, target, region, shape, le, plan.fence)
        spec = _Spec(name, "dense", shape, storage, type_, region, nbytes, csum, user_attrs or None)
        return spec, dask.delayed(_collect, pure=False)(name, *tasks)
    if layout == "dense":  # one zstd frame, as the reference writes
        whole = arr.rechunk(-1) if arr.ndim else arr
        block = whole.to_delayed().ravel()[0]
        task = dask.delayed(_write_chunk, pure=False)(
            block, target, "data", storage, type_, le, level, csum, plan.fence, begin
        )
        spec = _Spec(name, "dense_zstd", shape, storage, type_, attributes=user_attrs or None)
        return spec, dask.delayed(_collect, pure=False)(name, task)

    # chunked
    keep: dict[str, Component] = {}
    offset = (0,) * arr.ndim
    if update is not None:  # growth or region: new chunks land at a grid offset
        keep, offset = update.keep, update.offset
        chunk_shape = update.grid.chunk_shape
        if update.prefix is not None:
            arr = da.concatenate([da.from_array(update.prefix, chunks=chunk_shape), arr])
        attrs = dict(update.old.attributes or {})
        attrs.update(user_attrs)
        new_shape = update.shape
    else:
        chunk_shape = _chunk_shape_for(arr, want_chunks, from_np)
        attrs = dict(user_attrs)
        attrs[chunked.CHUNK_GRID_KEY] = chunked.grid_attributes(
            chunk_shape, dtypes.from_numpy(arr.dtype), enc.get("fill_value", 0)
        )
        new_shape = shape
    if arr.ndim and tuple(arr.chunks) != chunked.regular_chunks(arr.shape, chunk_shape):
        arr = arr.rechunk(chunk_shape)
    tasks = _per_block(
        arr, _chunk_block, begin, target, offset, storage, type_, le, level, csum, plan.fence
    )
    spec = _Spec(
        name, "chunked", new_shape, storage, type_, checksum=csum, attributes=attrs, keep=keep
    )
    return spec, dask.delayed(_collect, pure=False)(name, *tasks)
