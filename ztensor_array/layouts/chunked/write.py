"""Writing into a ``chunked`` object: which chunks a write touches, what each new chunk is
made of, and how a chunk becomes a stored frame. Every driver (the sequential Writer, used
by xarray stores, and the parallel Dask writer) plans with ``plan_write``, builds chunks
with ``assemble`` and encodes them with ``encode_chunk``, so they write identical objects.

A write puts new data into a box of an object, possibly after growing its shape (an append
is a box past the old end along one axis). A chunk the box covers whole is new data only; a
chunk it covers in part is the old chunk (fill value where there was none) with the new
part written over it. Chunks the box does not touch keep their stored blobs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import codecs, dtypes
from ...manifest import Component, Object
from .grid import CHUNK_GRID_KEY, ChunkGrid, chunk_grid
from .table import ChunkTable

Box = tuple[tuple[int, int], ...]  # per axis [start, stop) in element coordinates


@dataclass(frozen=True, slots=True)
class ChunkWrite:
    """One chunk a write touches."""

    index: tuple[int, ...]  # grid index (in the grid after any growth)
    extent: tuple[int, ...]  # the chunk's in-bounds shape
    source: tuple[slice, ...]  # the part of the new data (box coordinates) it takes
    target: tuple[slice, ...]  # where that part lands inside the chunk
    patch: bool  # the box covers the chunk in part: the old values stay around the new part


def box_of(region: Sequence[slice], shape: Sequence[int]) -> Box:
    """(start, stop) per axis of a tuple of step-1 slices (missing trailing axes: whole);
    ValueError for another step."""
    sel = tuple(region) + (slice(None),) * (len(shape) - len(region))
    out = []
    for s, n in zip(sel, shape):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError(f"region slices must have step 1, got {s}")
        out.append((start, max(start, stop)))
    return tuple(out)


def plan_write(grid: ChunkGrid, box: Box) -> list[ChunkWrite]:
    """The chunks of ``grid`` (the object's grid after any growth) that ``box`` touches, in
    C order of their grid index."""
    for (a, b), n in zip(box, grid.shape):
        if not 0 <= a <= b <= n:
            raise ValueError(f"box [{a}, {b}) lies outside an axis of {n}")
    spans = grid_box(grid, box)
    ranges = [range(lo, hi) for lo, hi in spans]
    return [chunk_write(grid, box, index) for index in itertools.product(*ranges)]


def chunk_write(grid: ChunkGrid, box: Box, index: tuple[int, ...]) -> ChunkWrite:
    """How a write into ``box`` makes the chunk at ``index`` (a chunk the box touches)."""
    extent = grid.extent(index)
    source, target, patch = [], [], False
    for i, (a, b), c, e in zip(index, box, grid.chunk_shape, extent):
        lo, hi = max(a, i * c), min(b, i * c + e)
        source.append(slice(lo - a, hi - a))
        target.append(slice(lo - i * c, hi - i * c))
        patch |= hi - lo != e
    return ChunkWrite(tuple(index), extent, tuple(source), tuple(target), patch)


def grid_box(grid: ChunkGrid, box: Box) -> Box:
    """The box in grid units: every chunk a write into ``box`` touches."""
    return tuple(
        (a // c, -(-b // c)) if b > a else (0, 0) for (a, b), c in zip(box, grid.chunk_shape)
    )


def source_chunks(grid: ChunkGrid, box: Box) -> tuple[tuple[int, ...], ...]:
    """Dask-style chunks of the new data (shaped like the box) whose blocks are exactly the
    ``source`` parts of ``plan_write``'s chunks: block i along an axis makes chunk
    ``box_start // chunk + i``."""
    out = []
    for (a, b), c in zip(box, grid.chunk_shape):
        edges = [a, *range((a // c + 1) * c, b, c), b] if b > a else [a, a]
        out.append(tuple(hi - lo for lo, hi in itertools.pairwise(edges)))
    return tuple(out)


def assemble(
    write: ChunkWrite, part: np.ndarray, old: np.ndarray | None, empty: Callable[[], np.ndarray]
) -> np.ndarray:
    """The new chunk: ``part`` alone when it covers the chunk; else the old chunk (an owned
    array, written over in place when it has the chunk's whole extent) or ``empty()`` (a
    new array of the extent holding the fill value) with the old chunk's values in it (its
    extent is smaller when the array grew past it), and ``part`` written over them."""
    if not write.patch:
        return part
    if old is not None and old.shape == write.extent and old.flags.writeable:
        out = old
    else:
        out = empty()
        if old is not None:
            out[tuple(slice(0, e) for e in old.shape)] = old
    out[write.target] = part
    return out


def encode_chunk(data: np.ndarray, level: int, checksum: str | None) -> tuple[Any, Component]:
    """The one frame policy of the layout: (stored bytes, component at offset 0) of a chunk
    (an array of the grid's dtype, in C order). zstd frames record their decoded size
    (SPEC §5); the digest covers the stored bytes. Move the component to where the bytes go
    with ``Component.moved``."""
    storage, type_ = dtypes.storage_spelling(dtypes.from_numpy(data.dtype))
    raw = codecs.byte_view(np.ascontiguousarray(data))
    if level:
        blob, encoding = codecs.compressor(level).encode_chunk(raw), codecs.COMPRESSED
    else:
        blob, encoding = raw, codecs.RAW
    digest = None
    if checksum:
        from ...codecs import digests  # hashlib + google_crc32c: only when digesting

        digest = digests.compute(checksum, blob)
    return blob, Component(storage, 0, memoryview(blob).nbytes, encoding, digest, None, type_)


def growth(shape: Sequence[int], axis: int, n: int) -> tuple[tuple[int, ...], Box]:
    """(shape after appending ``n`` along ``axis``, the box the appended data lands in)."""
    new = tuple(int(s) + int(n) if i == axis else int(s) for i, s in enumerate(shape))
    box = tuple((int(s), new[i]) if i == axis else (0, int(s)) for i, s in enumerate(shape))
    return new, box


def grown(obj: Object, shape: Sequence[int]) -> ChunkGrid:
    """The grid of ``obj`` after it grows to ``shape`` (each axis at least as long)."""
    grid = chunk_grid(obj)
    if len(shape) != len(obj.shape) or any(n < o for n, o in zip(shape, obj.shape)):
        raise ValueError(f"cannot grow shape {list(obj.shape)} to {list(shape)}")
    return grid.reshaped(tuple(int(n) for n in shape))


def updated(
    obj: Object, grid: ChunkGrid, box: Box, new: dict[tuple, Component], attributes=None
) -> Object:
    """``obj`` after a write into ``box`` of ``grid`` (its grown grid): the chunks outside
    the box's chunk span keep their blobs, those inside are ``new`` (by grid index)."""
    kept = ChunkTable(obj).outside(grid_box(grid, box))
    attrs = dict(obj.attributes or {}) if attributes is None else dict(attributes)
    attrs.setdefault(CHUNK_GRID_KEY, dict((obj.attributes or {})[CHUNK_GRID_KEY]))
    return Object(grid.shape, obj.format, ChunkTable(obj).with_chunks(kept, new), attrs)
