"""Reading a ``chunked`` object: only the chunks a selection touches are decoded (on a
thread pool when there are several: zstd and numpy copies release the GIL); chunks never
written read as the grid's fill value."""

from __future__ import annotations

import itertools
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
from .table import ChunkTable

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
    tasks = []
    missing = False
    for index, local, where in select.pieces(grid.chunk_shape, axes):
        where_stored = table.locate(index)
        if where_stored is None:
            missing = True
        else:
            tasks.append((index, where_stored, local, where))
    if not copy and not missing and len(tasks) == 1:
        index, stored, local, _ = tasks[0]
        if _whole(local, grid.extent(index)):
            return _chunk(obj, grid, get, index, stored, path, name).reshape(final)
    if missing:
        out = fill_array(grid, shape, path=path, name=name)
    else:
        out = np.empty(shape, dtype=dtypes.to_numpy(grid.dtype))

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
    cs = grid.chunk_shape
    coords = [axes[i].ravel() for i in picked]
    which = np.stack([c // cs[i] for c, i in zip(coords, picked)])  # chunk per point, (k, P)
    flat = np.ravel_multi_index(tuple(which), tuple(grid.grid[i] for i in picked))
    order = np.argsort(flat, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(flat[order])) + 1)
    per_slice = [select.axis_pieces(axes[i], cs[i]) for i in sliced]
    table = ChunkTable(obj, get, grid.segments)
    shape = (coords[0].size, *(len(axes[i]) for i in sliced))
    tasks, missing = [], False
    for members in groups:
        if not members.size:
            continue
        at = which[:, members[0]]
        local_points = tuple(c[members] - int(k) * cs[i] for c, k, i in zip(coords, at, picked))
        for combo in itertools.product(*per_slice):
            index = [0] * len(axes)
            for i, k in zip(picked, at):
                index[i] = int(k)
            for i, piece in zip(sliced, combo):
                index[i] = piece[0]
            index = tuple(index)
            stored = table.locate(index)
            if stored is None:
                missing = True
                continue
            local = local_points + tuple(p[1] for p in combo)
            where = (members, *(p[2] for p in combo))
            tasks.append((index, stored, local, where))
    if missing:
        out = fill_array(grid, shape, path=path, name=name)
    else:
        out = np.empty(shape, dtype=dtypes.to_numpy(grid.dtype))

    def place(task) -> None:
        index, stored, local, where = task
        chunk = _chunk(obj, grid, get, index, stored, path, name)
        out[where] = np.moveaxis(chunk, picked, range(len(picked)))[local]

    get.prefetch(t[1] for t in tasks)  # remote files: one round of merged requests
    _run(place, tasks, workers)
    return out.reshape(points_shape + shape[1:])


def _run(place, tasks: list, workers: int | None) -> None:
    """``place`` every task: on a thread pool when there are several chunks to decode."""
    if len(tasks) >= MIN_PARALLEL_CHUNKS and workers != 1:
        nthreads = min(len(tasks), workers or os.cpu_count() or 1)
        # ~15 ms to import: only when a read decodes several chunks
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(nthreads, thread_name_prefix="ztensor-chunks") as pool:
            list(pool.map(place, tasks))
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
