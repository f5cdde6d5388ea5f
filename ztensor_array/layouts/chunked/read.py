"""Reading a ``chunked`` object: only the chunks a selection touches are decoded (on a
thread pool when there are several: zstd and numpy copies release the GIL); chunks never
written read as the grid's fill value."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ... import dtypes
from ...errors import FormatError
from ...manifest import Component, Object
from .. import select
from ..base import Getter
from ..dense import as_logical
from .grid import ChunkGrid, chunk_grid, chunk_role, fill_array
from .table import SMALL_SELECTION, ChunkTable

MIN_PARALLEL_CHUNKS = 2


def read_region(
    obj: Object,
    get: Getter,
    selection: Any = (),
    *,
    path=None,
    name=None,
    workers: int | None = None,
    copy: bool = True,
) -> np.ndarray:
    """``array[selection]`` (integer arrays pick orthogonally), decoding only the chunks
    that hold selected elements, in parallel. An owned array, except with ``copy=False``
    for a selection that is exactly one stored chunk: then the chunk itself (a read-only
    view of the file for a raw chunk)."""
    grid = chunk_grid(obj, path, name)
    table = ChunkTable(obj, get, grid.segments)
    axes, keep = select.normalize(selection, obj.shape)
    shape = select.out_shape(axes)
    final = tuple(s for s, k in zip(shape, keep) if k)
    per_axis = [select.AxisChunks(a, c, n) for a, c, n in zip(axes, grid.chunk_shape, obj.shape)]
    # stored chunks only: the cells never written are the fill value, set in one go
    tasks = [
        (index, where_stored, *select.piece(per_axis, index))
        for index, where_stored in table.within(per_axis)
    ]
    missing = len(tasks) < math.prod(a.count for a in per_axis)
    if not copy and not missing and len(tasks) == 1:
        index, stored_at, local, _ = tasks[0]
        if _whole(local, grid.extent(index)):
            return _chunk(obj, grid, get, index, stored_at, path, name).reshape(final)
    out = _output(grid, shape, missing, path, name)

    def place(task) -> None:
        index, role, local, where = task
        out[where] = _chunk(obj, grid, get, index, role, path, name)[local]

    get.prefetch(t[1] for t in tasks)  # remote files: one round of merged requests
    _run(place, tasks, workers)
    return out.reshape(final)


def read_points(
    obj: Object, get: Getter, selection: Any, *, path=None, name=None, workers=None
) -> np.ndarray:
    """``array`` at a point-wise selection (``select.normalize_points``: integer arrays
    broadcast together, their dimensions first, then the sliced axes), decoding only the
    chunks that hold a selected point, as zarr's ``vindex`` does."""
    grid = chunk_grid(obj, path, name)
    axes, points_shape = select.normalize_points(selection, obj.shape)
    picked = [i for i, a in enumerate(axes) if isinstance(a, np.ndarray)]
    sliced = [i for i, a in enumerate(axes) if isinstance(a, range)]
    if not picked:
        return read_region(
            obj, get, tuple(select.as_slice(a) for a in axes), path=path, name=name, workers=workers
        )
    cs, n = grid.chunk_shape, obj.shape
    coords = [axes[i].ravel() for i in picked]
    which = np.stack([c // cs[i] for c, i in zip(coords, picked)])  # chunk per point, (k, P)
    flat = np.ravel_multi_index(tuple(which), tuple(grid.grid[i] for i in picked))
    order = np.argsort(flat, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(flat[order])) + 1)
    # the points of each chunk along the picked axes, by its grid index there
    by_chunk = {tuple(which[:, m[0]].tolist()): m for m in groups if m.size}
    per_slice = [select.AxisChunks(axes[i], cs[i], n[i]) for i in sliced]
    table = ChunkTable(obj, get, grid.segments)
    shape = (coords[0].size, *(len(axes[i]) for i in sliced))
    cells = len(by_chunk) * math.prod(a.count for a in per_slice)

    def index_of(at, combo) -> tuple[int, ...]:
        index = [0] * len(axes)
        for i, k in zip(picked, at):
            index[i] = k
        for i, k in zip(sliced, combo):
            index[i] = k
        return tuple(index)

    if cells <= max(SMALL_SELECTION, table.locations()):
        found = []
        for at, members in by_chunk.items():
            for combo in select.grid_indices(per_slice):
                index = index_of(at, combo)
                stored = table.locate(index)
                if stored is not None:
                    found.append((index, at, members, stored))
    else:  # stored chunks only, scanned in bulk: never-written cells cost nothing each
        outer = [None] * len(axes)
        for i, c in zip(picked, coords):
            outer[i] = select.AxisChunks(c, cs[i], n[i])
        for i, a in zip(sliced, per_slice):
            outer[i] = a
        found = []
        for index, stored in table.within(outer):
            at = tuple(index[i] for i in picked)
            members = by_chunk.get(at)
            if members is not None:
                found.append((index, at, members, stored))
    tasks = []
    for index, at, members, stored in found:
        local_points = tuple(c[members] - k * cs[i] for c, k, i in zip(coords, at, picked))
        parts = [a.piece(index[i]) for a, i in zip(per_slice, sliced)]
        local = local_points + tuple(p[0] for p in parts)
        where = (members, *(p[1] for p in parts))
        tasks.append((index, stored, local, where))
    out = _output(grid, shape, len(tasks) < cells, path, name)

    def place(task) -> None:
        index, stored, local, where = task
        chunk = _chunk(obj, grid, get, index, stored, path, name)
        out[where] = np.moveaxis(chunk, picked, range(len(picked)))[local]

    get.prefetch(t[1] for t in tasks)  # remote files: one round of merged requests
    _run(place, tasks, workers)
    return out.reshape(points_shape + shape[1:])


def _output(grid: ChunkGrid, shape, missing: bool, path, name) -> np.ndarray:
    """The array a read fills: the fill value everywhere when some selected cells were
    never written (set in one go), else uninitialized (every element gets a chunk's)."""
    if missing:
        return fill_array(grid, shape, path=path, name=name)
    return np.empty(shape, dtype=dtypes.to_numpy(grid.dtype))


def _run(place, tasks: list, workers: int | None) -> None:
    """``place`` every task: on a thread pool when there are several chunks to decode."""
    if len(tasks) >= MIN_PARALLEL_CHUNKS and workers != 1:
        nthreads = min(len(tasks), workers or os.cpu_count() or 1)
        # ~15 ms to import: only when a read decodes several chunks
        from concurrent.futures import ThreadPoolExecutor

        # a few batches per thread: one hand-off per small chunk would cost more than its
        # decode (~40 us against ~1 us for 256 bytes)
        step = -(-len(tasks) // (nthreads * 8))
        batches = [tasks[i : i + step] for i in range(0, len(tasks), step)]
        with ThreadPoolExecutor(nthreads, thread_name_prefix="ztensor-chunks") as pool:
            list(pool.map(lambda batch: [place(t) for t in batch], batches))
    else:
        for t in tasks:
            place(t)


def _whole(local: tuple, extent: tuple[int, ...]) -> bool:
    return all(isinstance(k, slice) and k.indices(e) == (0, e, 1) for k, e in zip(local, extent))


def _chunk(
    obj: Object, grid: ChunkGrid, get: Getter, index, stored: str | Component, path, name
) -> np.ndarray:
    """The chunk at ``index``: a component by role, or a blob an index entry locates (the
    reader checks it against the file and decodes exactly the chunk's size)."""
    extent = grid.extent(index)
    if isinstance(stored, str):
        comp, flat = obj.components[stored], get(stored)
    else:
        comp, flat = stored, get.located(stored, chunk_role(index), grid.nbytes(index))
    flat = as_logical(flat, comp)
    if flat.size != math.prod(extent):
        raise FormatError(
            f"chunk holds {flat.size} elements, its in-bounds shape {list(extent)} needs "
            f"{math.prod(extent)}",
            path=path,
            obj=name,
            component=stored if isinstance(stored, str) else chunk_role(index),
        )
    return flat.reshape(extent)


def read_chunk(obj: Object, get: Getter, index, *, path=None, name=None) -> np.ndarray:
    """One chunk (its in-bounds part) by grid index; the fill value if never written."""
    grid = chunk_grid(obj, path, name)
    index = tuple(index)
    stored = ChunkTable(obj, get, grid.segments).locate(index)
    if stored is None:
        return fill_array(grid, grid.extent(index), path=path, name=name)
    return _chunk(obj, grid, get, index, stored, path, name)
