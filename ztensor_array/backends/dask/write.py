"""``write_arrays``: numpy and Dask arrays written as objects of one .zt file, in parallel on
any Dask scheduler, through the multi-process protocol of ``ztensor_array.parallel``.

The client plans one ``ArrayWrite`` per array and checks everything before any byte moves.
A raw dense array is written block by block into a preallocated region; a dense array with
``layout="dense"`` and compression is one frame, byte-identical to the reference's; every
other array is a ``chunked`` object whose chunks the workers build (``layouts.chunked``:
new data, or an old chunk patched with it), encode and append. Appends along any axis and
writes into any region of a chunked object write only the chunks they touch. One task
commits the manifest; a failure before it leaves any previous file as it was.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np

from ... import dtypes, parallel
from ...codecs import RAW, byte_view, compressor, digests
from ...codecs.policy import normalize_checksum, normalize_compress
from ...errors import ArgumentTypeError, InvalidArgumentError, UnsupportedError, ZTensorError
from ...interop import as_array
from ...layouts import chunked, stored_encoding
from ...manifest import Component, Object
from ...reader import Parts, Reader
from ...writer import Writer, writer_mode
from . import deferred
from .read import checked_chunks

DEFAULT_CHUNK_BYTES = 16 << 20  # chunk target for new chunked objects from numpy input
BLOCK_BYTES = 64 << 20  # most bytes of chunks a task holds encoded before appending them
IN_PROCESS_BYTES = 64 << 20  # numpy values up to this are written here, without a dask graph
ENCODING_KEYS = frozenset({"compress", "chunks", "checksum", "layout", "fill_value", "attributes"})

DENSE, DENSE_FRAME, CHUNKED = "dense", "dense-frame", "chunked"


@dataclass(frozen=True)
class ArrayWrite:
    """One array of a parallel write, as the client planned it."""

    name: str
    data: Any  # a dask array: the values (shaped like ``box`` for a chunked write)
    kind: str  # DENSE (raw, into a region), DENSE_FRAME (one zstd frame) or CHUNKED
    level: int
    checksum: str | None
    dtype: np.dtype  # little-endian storage dtype of the values
    attributes: Mapping[str, Any] | None
    base: Object | None = None  # CHUNKED: the object written into (empty for a new one)
    grid: chunked.ChunkGrid | None = None  # CHUNKED: its grid after the write
    box: chunked.write.Box | None = None  # CHUNKED: where ``data`` lands in it
    values: np.ndarray | None = None  # the values themselves, when they are in memory

    @property
    def from_numpy(self) -> bool:
        """The values are in memory: nothing to schedule but the writes."""
        return self.values is not None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    def for_commit(self) -> CommitSpec:
        """What the commit task needs: no dask array (dask would compute it as an input)."""
        return CommitSpec(
            self.name,
            self.kind,
            self.shape,
            self.dtype,
            self.checksum,
            self.attributes,
            self.base,
            self.grid,
            self.box,
        )


@dataclass(frozen=True)
class CommitSpec:
    """An ``ArrayWrite`` as the commit task sees it."""

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: np.dtype
    checksum: str | None
    attributes: Mapping[str, Any] | None
    base: Object | None
    grid: chunked.ChunkGrid | None
    box: chunked.write.Box | None


@dataclass(frozen=True)
class ChunkTask:
    """What a chunk-writing task needs (small: it is copied into every task)."""

    path: str
    target: str
    name: str
    base_end: int  # mode "a": end of the finalized state holding the old chunks, else -1
    grid: chunked.ChunkGrid
    box: chunked.write.Box
    dtype: np.dtype
    level: int
    checksum: str | None
    fence: parallel.WriteFence | None
    locked: bool = False  # network filesystem: appends reserve their offsets under flock


def write_arrays(
    arrays: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    mode: str = "w-",
    compress: bool | int | None = None,
    chunks: Any = None,
    checksum: str | None = None,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    append_dim: int | None = None,
    region: Any = None,
    compute: bool = True,
    attributes: Mapping[str, Any] | None = None,
):
    """Write numpy/dask arrays as objects of a .zt file, in parallel on any dask scheduler.

    Raw arrays become ``dense`` objects; compressed ones (or any with ``chunks``) become
    ``chunked`` objects. ``encoding[name]`` may override ``compress``, ``chunks``,
    ``checksum`` and set ``layout`` ("dense"/"chunked"), ``fill_value`` and ``attributes``.
    ``append_dim=k`` grows existing chunked objects along axis k (mode "a"); ``region`` (a
    tuple of step-1 slices) overwrites that box of existing chunked objects. Growth and
    regions keep the object's stored encoding and digest algorithm unless ``compress`` or
    ``checksum`` is given. ``compute=False`` returns a dask Delayed that writes and commits
    the file; a failed computation of it removes what it wrote.
    """
    path = os.fspath(path)
    wmode = writer_mode(mode)
    if region is not None and append_dim is not None:
        raise InvalidArgumentError("give append_dim or region, not both")
    if wmode == "a" and not os.path.exists(path):
        wmode = "x"
    existing: dict[str, Object] = {}
    if wmode == "a":  # only the objects written to: a file may hold 100,000 others
        with Reader(path) as r:
            existing = {n: r.metadata(n).object for n in arrays if n in r}
    encoding = dict(encoding or {})
    writes = [
        _plan_array(
            path,
            name,
            value,
            existing.get(name),
            encoding.get(name) or {},
            compress,
            chunks,
            checksum,
            append_dim,
            region,
        )
        for name, value in arrays.items()
    ]
    if compute and not attributes and all(w.from_numpy for w in writes):
        if sum(w.values.nbytes for w in writes) <= IN_PROCESS_BYTES:
            return _write_in_process(path, wmode, writes)
    plan = parallel.plan(path, wmode)
    if attributes:
        plan = plan.with_attributes(attributes)
    regions = [math.prod(w.data.shape) * w.dtype.itemsize for w in writes if w.kind == DENSE]
    if not compute:  # the file is created by the graph's first task, when computed
        commit_key = f"ztensor-commit-{os.urandom(8).hex()}"
        begin = dask.delayed(deferred.begin, pure=False)(plan, regions, commit_key)
        return deferred.delayed_write(plan, _graph(plan, writes, begin, commit_key))
    # computing now: begin here, so that no task can begin the file after a failure
    offsets = parallel.begin(plan, regions)
    try:
        final = _graph(plan, writes, offsets)
        if all(w.from_numpy for w in writes):
            return dask.compute(final, scheduler="threads")[0]
        return dask.compute(final)[0]
    except BaseException:
        parallel.abort(plan)  # waits for writes in flight, then undoes them
        raise


def _write_in_process(path: str, wmode: str, writes: list[ArrayWrite]) -> None:
    """Small in-memory values: one ``Writer`` here writes what the graph's tasks would (the
    same objects, the same bytes), without building and scheduling a graph (~5 ms, most
    of appending one row of chunks)."""
    with Writer(path, wmode) as out:
        for w in writes:
            attrs = w.attributes or None
            if w.kind == CHUNKED:
                out.write_chunked(
                    w.name,
                    w.base,
                    w.grid.shape,
                    w.box,
                    w.values,
                    compress=w.level,
                    checksum=w.checksum,
                    attributes=attrs,
                )
            else:
                out.add_tensor(
                    w.name, w.values, compress=w.level, checksum=w.checksum, attributes=attrs
                )


# ------------------------------------------------------------------ planning (client)


def _plan_array(
    path, name, value, old: Object | None, enc, compress, chunks, checksum, append_dim, region
) -> ArrayWrite:
    if not isinstance(name, str):
        raise ArgumentTypeError(f"tensor names must be str, not {type(name).__name__}")
    unknown = set(enc) - ENCODING_KEYS
    if unknown:
        raise InvalidArgumentError(f"unknown encoding keys {sorted(unknown)}", path=path, obj=name)
    updating = old is not None and (append_dim is not None or region is not None)
    if region is not None and old is None:
        raise ZTensorError("region= writes into an existing object", path=path, obj=name)
    if old is not None and not updating:
        raise ZTensorError(
            "an object of this name already exists (append_dim grows a chunked one, "
            "region= overwrites part of it)",
            path=path,
            obj=name,
        )
    want_chunks = enc.get("chunks", chunks)
    arr, values = _as_dask(value, "auto" if want_chunks is None else want_chunks, path, name)
    if any(math.isnan(n) for n in arr.shape):
        raise ZTensorError(
            "the dask array has unknown chunk sizes; call compute_chunk_sizes() first",
            path=path,
            obj=name,
        )
    try:
        dtype = dtypes.little_endian(np.dtype(arr.dtype))
        dtypes.from_numpy(dtype)
    except ZTensorError as exc:
        raise ZTensorError(exc.reason, path=path, obj=name) from None
    level_given = enc.get("compress", compress)
    checksum_given = enc.get("checksum", checksum)
    attrs = dict(enc.get("attributes") or {})
    if updating:
        stored_level, stored_checksum = stored_encoding(old)
        level = stored_level if level_given is None else normalize_compress(level_given)
        csum = stored_checksum if checksum_given is None else normalize_checksum(checksum_given)
        base, grid, box = _update(path, name, old, arr, dtype, append_dim, region)
        attrs = {**(old.attributes or {}), **attrs}
        return ArrayWrite(name, arr, CHUNKED, level, csum, dtype, attrs, base, grid, box, values)
    level = normalize_compress(level_given)
    csum = normalize_checksum(checksum_given)
    layout = enc.get("layout") or ("chunked" if level or want_chunks is not None else "dense")
    if layout not in ("dense", "chunked"):
        raise InvalidArgumentError(
            f"layout must be 'dense' or 'chunked', got {layout!r}", path=path, obj=name
        )
    if layout == "dense":
        kind = DENSE_FRAME if level else DENSE
        return ArrayWrite(name, arr, kind, level, csum, dtype, attrs, values=values)
    chunk_shape = _chunk_shape_for(arr, want_chunks, values is not None, path, name)
    attrs[chunked.CHUNK_GRID_KEY] = chunked.grid_attributes(
        chunk_shape, dtypes.from_numpy(dtype), enc.get("fill_value", 0)
    )
    shape = tuple(int(s) for s in arr.shape)
    base = Object(shape, chunked.FORMAT, {}, attrs)
    grid = chunked.chunk_grid(base, path, name)
    box = tuple((0, s) for s in shape)
    return ArrayWrite(name, arr, CHUNKED, level, csum, dtype, attrs, base, grid, box, values)


def _update(path, name, old: Object, arr, dtype, append_dim, region):
    """(stored object, its grid after the write, box the data lands in) of a growth along
    ``append_dim`` or a write into ``region`` of an existing chunked object."""
    if old.format != chunked.FORMAT:
        raise UnsupportedError(
            f"append_dim/region= needs a chunked object, this one is {old.format!r} "
            "(write it with compress= or chunks= to make it growable)",
            path=path,
            obj=name,
        )
    grid = chunked.chunk_grid(old, path, name)
    have = dtypes.from_numpy(dtype)
    if have != grid.dtype:
        raise ZTensorError(
            f"cannot write {have} data into a {grid.dtype} object", path=path, obj=name
        )
    shape = tuple(old.shape)
    if append_dim is not None:
        axis = _axis(append_dim, len(shape), path, name)
        other = tuple(n for i, n in enumerate(arr.shape) if i != axis)
        if arr.ndim != len(shape) or other != tuple(n for i, n in enumerate(shape) if i != axis):
            raise ZTensorError(
                f"cannot append shape {list(arr.shape)} along axis {axis} of shape {list(shape)}",
                path=path,
                obj=name,
            )
        new_shape, box = chunked.growth(shape, axis, arr.shape[axis])
        return old, chunked.grown(old, new_shape), box
    sel = region if isinstance(region, tuple) else (region,)
    if len(sel) > len(shape) or not all(isinstance(s, slice) for s in sel):
        raise ZTensorError("region must be a tuple of slices, one per leading axis", path=path)
    try:
        box = chunked.write.box_of(sel, shape)
    except ValueError as exc:
        raise ZTensorError(str(exc), path=path, obj=name) from None
    if tuple(b - a for a, b in box) != tuple(arr.shape):
        raise ZTensorError(
            f"region shape {[b - a for a, b in box]} != data shape {list(arr.shape)}",
            path=path,
            obj=name,
        )
    return old, grid, box


def _axis(axis, ndim: int, path, name) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise InvalidArgumentError(f"append_dim must be an axis number, got {axis!r}", path=path)
    if not -ndim <= axis < ndim:
        raise ZTensorError(
            f"append_dim={axis} is not an axis of a {ndim}-d object", path=path, obj=name
        )
    return int(axis) % ndim


def _as_dask(value, chunks, path, name) -> tuple[Any, np.ndarray | None]:
    """The values as a dask array, and as numpy when they are in memory."""
    if isinstance(value, da.Array):
        return value, None
    arr = as_array(value)
    checked_chunks(chunks, arr.shape, arr.dtype, path=path, name=name)
    # one block: in memory already, it is cut into blocks of whole chunks when written
    whole = tuple(max(n, 1) for n in arr.shape)
    return da.from_array(arr, chunks=whole, name=False, asarray=True), arr


def _chunk_shape_for(arr, chunks, from_numpy: bool, path, name) -> tuple[int, ...]:
    if chunks is None and not from_numpy:
        return tuple(max(max(c), 1) if c else 1 for c in arr.chunks)
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        chunks = (int(chunks),) * arr.ndim
    if isinstance(chunks, (tuple, list)) and all(
        c is None or (isinstance(c, (int, np.integer)) and not isinstance(c, bool)) for c in chunks
    ):
        if len(chunks) != arr.ndim:
            raise InvalidArgumentError(
                f"chunks {chunks!r} do not match {arr.ndim} dimensions", path=path, obj=name
            )
        out = tuple(max(s, 1) if c in (None, -1) else int(c) for c, s in zip(chunks, arr.shape))
        if any(c < 1 for c in out):
            raise InvalidArgumentError(
                f"chunk sizes must be positive, got {chunks!r}", path=path, obj=name
            )
        return out
    norm = checked_chunks(
        "auto" if chunks is None else chunks,
        arr.shape,
        arr.dtype,
        path=path,
        name=name,
        limit=DEFAULT_CHUNK_BYTES,
    )
    return tuple(max(max(c) if c else 1, 1) for c in norm)


# ------------------------------------------------------------------ the graph


def _graph(plan: parallel.ParallelPlan, writes: list[ArrayWrite], begin, key=None):
    """The delayed commit (named ``key`` if given) of every array's write tasks; ``begin``
    gives the offsets of the raw regions (a list, or the Delayed of the first task)."""
    tasks = []
    region = 0
    for w in writes:
        if w.kind == DENSE:
            tasks.append(_dense_tasks(plan, w, begin, region))
            region += 1
        elif w.kind == DENSE_FRAME:
            tasks.append(_frame_task(plan, w, begin))
        else:
            tasks.append(_chunk_tasks(plan, w, begin))
    named = {"dask_key_name": key} if key else {}
    specs = [w.for_commit() for w in writes]
    return dask.delayed(_commit, pure=False)(plan, specs, begin, tasks, **named)


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


def _storage(block, dtype: np.dtype) -> np.ndarray:
    block = np.asarray(block)
    return np.ascontiguousarray(block if block.dtype == dtype else block.astype(dtype))


def _dense_tasks(plan, w: ArrayWrite, begin, region: int):
    shape = w.shape
    blocks = _per_block(
        w.data, _region_block, begin, plan.target, region, shape, w.dtype, plan.fence
    )
    return dask.delayed(_collect, pure=False)(w.name, *blocks)


def _region_block(block, offsets, target, region, shape, dtype, fence, block_info=None):
    """map_blocks body of a raw dense write: the block goes to its place in the region."""
    if block.size:
        start = tuple(a for a, _ in block_info[0]["array-location"])
        data = _storage(block, dtype)
        with parallel.held(fence):
            parallel.pwrite_block(target, offsets[region], shape, start, data)
    return _cell(None, len(shape))


def _frame_task(plan, w: ArrayWrite, begin):
    whole = w.data.rechunk(-1) if w.data.ndim else w.data
    block = whole.to_delayed().ravel()[0]
    task = dask.delayed(_write_frame, pure=False)(
        block, plan.target, w.dtype, w.level, w.checksum, plan.fence, plan.locked_appends, begin
    )
    return dask.delayed(_collect, pure=False)(w.name, task)


def _write_frame(block, target, dtype, level, checksum, fence, locked, _begun):
    """One zstd frame of a whole dense array, byte-identical to the reference's."""
    data = _storage(block, dtype)
    blob = compressor(level).encode(byte_view(data))
    with parallel.held(fence):
        offset = parallel.append_blob(target, blob, locked=locked)
    storage, type_ = dtypes.storage_spelling(dtypes.from_numpy(dtype))
    digest = digests.compute(checksum, blob) if checksum else None
    comp = Component(storage, offset, len(blob), compressor(level).encoding, digest, None, type_)
    return "data", comp


def _chunk_tasks(plan, w: ArrayWrite, begin):
    spec = ChunkTask(
        plan.path,
        plan.target,
        w.name,
        plan.base_size if plan.mode == "a" and w.base.components else -1,
        w.grid,
        w.box,
        w.dtype,
        w.level,
        w.checksum,
        plan.fence,
        plan.locked_appends,
    )
    data = w.data
    if data.ndim:  # blocks of whole chunks: each task writes every chunk its block makes
        if w.from_numpy:
            nbytes = math.prod(w.shape) * w.dtype.itemsize
            target = min(max(nbytes // (4 * (os.cpu_count() or 1)), 1 << 20), BLOCK_BYTES)
            wanted = chunked.write.band_chunks(w.grid, w.box, w.dtype.itemsize, target)
        else:
            wanted = chunked.write.aligned_chunks(w.grid, w.box, data.chunks)
        if tuple(data.chunks) != wanted:
            data = data.rechunk(wanted)
    blocks = _per_block(data, _chunk_block, begin, spec)
    return dask.delayed(_collect, pure=False)(w.name, *blocks)


def _chunk_block(block, _begun, spec: ChunkTask, block_info=None):
    """map_blocks body of a chunked write: build every chunk this block (whole chunks of the
    box, or the box's edges) makes, patching stored chunks the box covers in part, encode
    them and append them, a few system calls for all."""
    if any(a == b for a, b in spec.box) or not block.size:
        return _cell([], block.ndim)  # an empty box touches no chunk
    where = block_info[0]["array-location"] if block.ndim else []
    sub = tuple((a + lo, a + hi) for (a, _), (lo, hi) in zip(spec.box, where))
    writes = chunked.plan_write(spec.grid, sub)
    old_state = None
    if spec.base_end >= 0 and any(w.patch for w in writes):
        old_state = Reader(spec.path, verify=True, end=spec.base_end)
    try:
        done: list[tuple] = []
        pending: list[tuple] = []
        held = 0
        for write in writes:
            data = chunked.assemble(
                write,
                _storage(block[write.source], spec.dtype),
                _old_chunk(old_state, spec, write.index) if write.patch else None,
                lambda write=write: chunked.fill_array(
                    spec.grid, write.extent, path=spec.path, name=spec.name
                ),
            )
            blob, comp = chunked.encode_chunk(_storage(data, spec.dtype), spec.level, spec.checksum)
            pending.append((write.index, blob, comp))
            held += len(blob)
            if held >= BLOCK_BYTES:
                done += _append_chunks(spec, pending)
                pending, held = [], 0
        done += _append_chunks(spec, pending)
    finally:
        if old_state is not None:
            old_state.close()
    return _cell(done, block.ndim)


def _append_chunks(spec: ChunkTask, pending: list[tuple]) -> list[tuple]:
    """Append encoded chunks; (grid index, component where it landed) of each."""
    if not pending:
        return []
    with parallel.held(spec.fence):
        blobs = [blob for _, blob, _ in pending]
        offsets = parallel.append_blobs(spec.target, blobs, locked=spec.locked)
    return [(index, comp.moved(off)) for (index, _, comp), off in zip(pending, offsets)]


def _old_chunk(state: Reader | None, spec: ChunkTask, index) -> np.ndarray | None:
    """The stored chunk at ``index`` of the finalized state, an owned array (digest checked,
    so corruption is never carried into the new chunk; the fill value where there is none)."""
    if state is None:
        return None
    obj = state.metadata(spec.name).object
    parts = Parts(state, spec.name, True, copy=True)
    return chunked.read_chunk(obj, parts, index, path=spec.path, name=spec.name)


def _collect(name: str, *items) -> tuple[str, list]:
    """(name, every (grid index, component) or (role, component) its tasks wrote)."""
    out: list = []
    for item in items:
        cell = item.flat[0] if isinstance(item, np.ndarray) else item
        if isinstance(cell, list):
            out += cell
        elif cell is not None:
            out.append(cell)
    return name, out


def _commit(plan: parallel.ParallelPlan, writes: list[CommitSpec], offsets, results) -> int:
    written = dict(results)
    objects: dict[str, Object] = {}
    updates: dict[str, tuple] = {}
    region = 0
    for w in writes:
        if w.kind == DENSE:
            offset = offsets[region]
            region += 1
            nbytes = math.prod(w.shape) * w.dtype.itemsize
            digest = (
                parallel.region_digest(plan.target, offset, nbytes, w.checksum)
                if w.checksum
                else None
            )
            storage, type_ = dtypes.storage_spelling(dtypes.from_numpy(w.dtype))
            comps = {"data": Component(storage, offset, nbytes, RAW, digest, None, type_)}
            objects[w.name] = Object(w.shape, "dense", comps, w.attributes or None)
        elif w.kind == DENSE_FRAME:
            objects[w.name] = Object(w.shape, "dense", dict(written[w.name]), w.attributes or None)
        else:
            updates[w.name] = (w, dict(written[w.name]))
    if not updates:
        return parallel.commit(plan, objects)
    # the new index segments merge earlier ones of the finalized state: read them there
    with Reader(plan.path, end=plan.base_size) if plan.mode == "a" else nullcontext() as r:
        return parallel.commit(
            plan,
            objects,
            {
                name: chunked.updated(
                    w.base,
                    w.grid,
                    w.box,
                    new,
                    attributes=w.attributes,
                    get=Parts(r, name, False) if r is not None and name in r else None,
                    path=plan.path,
                    name=name,
                )
                for name, (w, new) in updates.items()
            },
        )
