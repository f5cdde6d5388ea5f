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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import codecs, dtypes
from ...manifest import Component, Object
from ..base import Getter
from .grid import (
    CHUNK_GRID_KEY,
    FORMAT,
    INDEX_KEY,
    ChunkGrid,
    Segment,
    check_cells,
    chunk_grid,
    parse_chunk_role,
)
from .table import MISSING, ChunkTable, located_entries

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


def aligned_chunks(
    grid: ChunkGrid, box: Box, chunks: Sequence[Sequence[int]]
) -> tuple[tuple[int, ...], ...]:
    """Dask-style chunks of the new data (shaped like the box) close to ``chunks`` whose
    block edges all lie on chunk edges, so each chunk a write touches takes its new part
    from exactly one block: every edge of ``chunks`` moves up to the next chunk edge (blocks
    smaller than a chunk merge)."""
    out = []
    for (a, b), c, sizes in zip(box, grid.chunk_shape, chunks):
        edges = {0, b - a}
        pos = 0
        for size in sizes[:-1]:
            pos += size
            edges.add(min(-(-(a + pos) // c) * c - a, b - a))  # next chunk edge, box coords
        edges = sorted(edges)
        out.append(tuple(hi - lo for lo, hi in itertools.pairwise(edges)) or (0,))
    return tuple(out)


def band_chunks(grid: ChunkGrid, box: Box, itemsize: int, target: int) -> tuple:
    """Dask-style chunks of in-memory data shaped like the box: blocks of whole chunks of
    about ``target`` bytes (bands along axis 0, split along the next axes too when a band
    one chunk thick is larger), their edges on chunk edges."""
    shape = [b - a for a, b in box]
    steps = list(shape)
    budget = max(target // max(itemsize, 1), 1)  # elements per block
    for axis, c in enumerate(grid.chunk_shape):
        rest = math.prod(shape[axis + 1 :])
        if c * rest <= budget or axis == len(shape) - 1:
            steps[axis] = max(budget // max(rest, 1) // c, 1) * c
            break
        steps[axis] = c
        budget = max(budget // c, 1)
    return aligned_chunks(grid, box, [_regular(n, step) for n, step in zip(shape, steps)])


def _regular(n: int, step: int) -> tuple[int, ...]:
    step = max(step, 1)
    return tuple(min(step, n - i) for i in range(0, n, step)) or (0,)


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


MAX_SEGMENTS = 64  # beyond this many index segments, writes merge the newest ones


@dataclass(frozen=True)
class Update:
    """A write into a chunked object, ready to commit: the entries of its new index
    segments (each to be written as a blob) and the object as it reads once they are in
    place."""

    grid: ChunkGrid  # after the write (grown shape, the segments it keeps)
    new: tuple[tuple[Segment, np.ndarray], ...]  # new segments and their (chunks, words) u64
    kept: dict[str, Component]  # components of the object before that stay
    attributes: dict[str, Any]

    def finish(self, comps: Sequence[Component]) -> Object:
        """The updated object, once the new segments' entries are stored as ``comps``."""
        attrs = dict(self.attributes)
        grid = dict(attrs[CHUNK_GRID_KEY])
        segments = (*self.grid.segments, *(seg for seg, _ in self.new))
        grid[INDEX_KEY] = [seg.to_cbor() for seg in segments]
        attrs[CHUNK_GRID_KEY] = grid
        out = dict(self.kept)
        out.update((seg.role, comp) for (seg, _), comp in zip(self.new, comps, strict=True))
        return Object(self.grid.shape, FORMAT, out, attrs)


def rebuilt(obj: Object, chunks: dict[tuple, Component]) -> Update:
    """``obj`` with its chunks stored at ``chunks`` (by grid index; the copies of a compact,
    merge or convert), indexed afresh: one segment over the whole grid per encoding and
    digest algorithm the chunks use, and no other component."""
    grid = chunk_grid(obj)
    groups: dict[tuple, dict[tuple, Component]] = {}
    for index, comp in chunks.items():
        algo = comp.digest.split(":", 1)[0] if comp.digest else None
        groups.setdefault((comp.encoding, algo), {})[index] = comp
    new = []
    for k, ((encoding, algo), group) in enumerate(sorted(groups.items(), key=_group_order)):
        seg = Segment(f"i.{k}", (0,) * len(grid.grid), grid.grid, encoding, algo)
        new.append((seg, located_entries(group, seg)))
    return Update(grid._replace(segments=()), tuple(new), {}, dict(obj.attributes or {}))


def _group_order(item) -> tuple:
    (encoding, algo), _ = item
    return encoding, algo or ""


def updated(
    obj: Object,
    grid: ChunkGrid,
    box: Box,
    new: dict[tuple, Component],
    *,
    attributes: dict[str, Any] | None = None,
    get: Getter | None = None,
    path=None,
    name: str | None = None,
) -> Update:
    """The write of ``new`` chunks (by grid index; every chunk of ``box``'s chunk span, all
    with one encoding and digest algorithm) into ``obj`` grown to ``grid``: one new index
    segment over that span. The newest existing segments merge into it while they are of
    similar size and the merged box stays dense (a binary counter: appends one chunk row
    at a time leave O(log rows) segments, each entry copied O(log rows) times); ``get``
    reads the entries of those (the base object's components). One-component-per-chunk
    chunks the new segment covers leave the manifest."""
    span = grid_box(grid, box)
    some = next(iter(new.values()), None)
    encoding = some.encoding if some is not None else codecs.RAW
    digest = some.digest.split(":", 1)[0] if some is not None and some.digest else None
    segments = list(grid.segments)
    seg = Segment(
        _next_role(obj), tuple(a for a, _ in span), tuple(b - a for a, b in span), encoding, digest
    )
    entries = located_entries(new, seg)
    table = ChunkTable(obj, get, segments)
    while segments and _mergeable(segments[-1], seg, len(segments)):
        seg, entries = _merge(segments.pop(), table, seg, entries)
        seg = Segment(_next_role(obj), seg.start, seg.shape, seg.encoding, seg.digest)
    dropped = {s.role for s in grid.segments} - {s.role for s in segments}
    kept = {
        role: comp
        for role, comp in obj.components.items()
        if role not in dropped and not _covered(role, seg, len(obj.shape))
    }
    attrs = dict(obj.attributes or {}) if attributes is None else dict(attributes)
    attrs.setdefault(CHUNK_GRID_KEY, dict((obj.attributes or {})[CHUNK_GRID_KEY]))
    chunk_roles = len(kept) - len(segments)
    check_cells(grid, sum(s.size for s in segments) + seg.size + chunk_roles, path=path, name=name)
    return Update(grid._replace(segments=tuple(segments)), ((seg, entries),), kept, attrs)


def _next_role(obj: Object) -> str:
    """A fresh role for an index segment: ``i.<n>``, above every ``i.<n>`` in use."""
    used = [int(r[2:]) for r in obj.components if r.startswith("i.") and r[2:].isdigit()]
    return f"i.{max(used, default=-1) + 1}"


def _mergeable(old: Segment, new: Segment, count: int) -> bool:
    if (old.encoding, old.digest) != (new.encoding, new.digest):
        return False
    if count >= MAX_SEGMENTS:
        return True
    box = _union(old, new)
    return old.size <= 2 * new.size and math.prod(box[1]) <= 2 * (old.size + new.size)


def _union(a: Segment, b: Segment) -> tuple[tuple[int, ...], tuple[int, ...]]:
    start = tuple(min(x, y) for x, y in zip(a.start, b.start))
    stop = tuple(max(x + m, y + n) for x, m, y, n in zip(a.start, a.shape, b.start, b.shape))
    return start, tuple(e - s for s, e in zip(start, stop))


def _merge(old: Segment, table: ChunkTable, new: Segment, entries: np.ndarray):
    """One segment over both boxes: ``new``'s entries where it has a chunk, else ``old``'s
    (older segments still answer where neither has one)."""
    start, shape = _union(old, new)
    merged = Segment(new.role, start, shape, new.encoding, new.digest)
    out = np.full((merged.size, merged.words), MISSING, dtype=np.uint64)
    for seg, rows in ((old, table.entries(old)), (new, entries)):
        sel = tuple(slice(s - m, s - m + n) for s, m, n in zip(seg.start, start, seg.shape))
        view = out.reshape(*shape, merged.words)[sel]
        src = rows.reshape(*seg.shape, merged.words)
        have = src[..., 0] != MISSING
        view[have] = src[have]
    return merged, out


def _covered(role: str, seg: Segment, ndim: int) -> bool:
    index = parse_chunk_role(role, ndim)
    return index is not None and seg.contains(index)
