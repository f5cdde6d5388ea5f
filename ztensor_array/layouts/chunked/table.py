"""Where the chunks of a ``chunked`` object are stored (SPEC §4.3).

Two forms, read alike:

- **index segments** (what we write): binary components of u64 entries, one per chunk of a
  box of the grid in C order: the chunk's offset and stored length, then its digest when the
  segment records one (crc32c: one word; sha256: four). An entry of all ones means "this
  segment has no chunk here". The ``index`` list of the grid attribute says which box each
  segment covers, its chunks' encoding and digest algorithm; later segments take precedence.
  The manifest grows with the number of segments, not chunks.
- **one component per chunk** (files of earlier versions): roles ``c.<i0>.<i1>...`` (``c`` for
  a 0-d array).

A chunk found in neither reads as the fill value. ``ChunkTable`` looks a chunk up in
O(segments); every other part of the package asks it where a chunk is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from ... import dtypes
from ...errors import FormatError
from ...manifest import Component, Object
from ..base import Getter
from ..select import AxisChunks, grid_indices
from .grid import Segment, chunk_grid, chunk_role, parse_chunk_role

MISSING = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # an entry word of a chunk a segment lacks
SMALL_SELECTION = 1024  # grid cells a selection may touch before stored chunks are scanned


def entry_digest(algorithm: str | None, words: np.ndarray) -> str | None:
    """The digest text of one entry's digest words."""
    if algorithm == "crc32c":
        return f"crc32c:0x{int(words[0]) & 0xFFFF_FFFF:08X}"
    if algorithm == "sha256":
        return "sha256:" + np.ascontiguousarray(words[:4]).astype("<u8").tobytes().hex()
    return None


def digest_words(algorithm: str | None, digest: str | None) -> list[int]:
    """The entry words of a digest text (what ``entry_digest`` reads back)."""
    if algorithm is None:
        return []
    if digest is None or not digest.startswith(algorithm + ":"):
        raise FormatError(f"chunk digest {digest!r} is not {algorithm}")
    value = digest.split(":", 1)[1]
    if algorithm == "crc32c":
        return [int(value, 16)]
    return np.frombuffer(bytes.fromhex(value), dtype="<u8").tolist()


class ChunkTable:
    """The stored chunks of one object, by grid index."""

    __slots__ = ("_components", "_entries", "_get", "_ndim", "segments", "storage")

    def __init__(self, obj: Object, get: Getter | None = None, segments=None) -> None:
        self._components = obj.components
        self._ndim = len(obj.shape)
        self._get = get
        self._entries: dict[str, np.ndarray] = {}
        grid = chunk_grid(obj)
        self.segments: list[Segment] = grid.segments if segments is None else segments
        self.storage = dtypes.storage_spelling(grid.dtype)

    # ------------------------------------------------------------------ lookup

    def entries(self, seg: Segment) -> np.ndarray:
        """A segment's entries as a (chunks, words) u64 array (a view of the file)."""
        arr = self._entries.get(seg.role)
        if arr is None:
            if self._get is None:
                raise FormatError(f"index segment {seg.role!r} needs the file to be read")
            flat = self._get(seg.role).view(np.uint64)
            arr = self._entries[seg.role] = flat.reshape(seg.size, seg.words)
        return arr

    def locate(self, index) -> str | Component | None:
        """Where the chunk at ``index`` is: a role (one component per chunk), a Component
        built from an index entry (to be checked against the file when read), or None when
        it was never written (it reads as the fill value)."""
        for seg in reversed(self.segments):
            if seg.contains(index):
                e = self.entries(seg)[seg.position(index)]
                if e[0] != MISSING:
                    return self._component(seg, e)
        role = chunk_role(index)
        return role if role in self._components else None

    def locations(self) -> int:
        """How many chunk locations the object records (index entries, whether they locate
        a chunk or not, and chunk components): bounded by the file's size."""
        return sum(seg.size for seg in self.segments) + len(self._components) - len(self.segments)

    def within(self, axes: list[AxisChunks]) -> list[tuple[tuple[int, ...], str | Component]]:
        """(grid index, location) of every stored chunk that holds an element of the
        selection ``axes`` (one ``select.AxisChunks`` per axis). The work is bounded by
        the stored locations, not by the grid: when the selection touches more grid cells
        than the object records locations, the index entries are scanned in bulk instead
        of asking for every cell (a grid of 10^7 never-written chunks costs nothing)."""
        cells = math.prod(a.count for a in axes)
        if cells <= max(SMALL_SELECTION, self.locations()):
            found = []
            for index in grid_indices(axes):
                stored = self.locate(index)
                if stored is not None:
                    found.append((index, stored))
            return found
        return self._scan(axes)

    def _scan(self, axes: list[AxisChunks]) -> list[tuple[tuple[int, ...], str | Component]]:
        """``within`` from the stored side: every segment's present entries filtered with
        numpy (the newest segment wins, as in ``locate``), then the chunk components that no
        entry overrides."""
        ndim = self._ndim
        rows: list[np.ndarray] = []  # grid indices found, newest segment first
        where: list[tuple[Segment, np.ndarray]] = []
        for seg in reversed(self.segments):
            e = self.entries(seg)
            present = np.flatnonzero(e[:, 0] != MISSING)
            if not present.size:
                continue
            # a 0-d grid has one cell: never scanned
            at = np.stack(np.unravel_index(present, seg.shape), axis=1).astype(np.int64)
            at += np.asarray(seg.start, dtype=np.int64)
            keep = np.ones(present.size, dtype=bool)
            for axis, a in enumerate(axes):
                keep &= a.touched(at[:, axis])
            present, at = present[keep], at[keep]
            rows.append(at)
            where.append((seg, present))
        found: list[tuple[tuple[int, ...], str | Component]] = []
        if rows:
            every = np.concatenate(rows)
            _, first = np.unique(every, axis=0, return_index=True)  # the newest of each index
            take = np.zeros(every.shape[0], dtype=bool)
            take[first] = True
            pos = 0
            for seg, present in where:
                mine = take[pos : pos + present.size]
                entries = self.entries(seg)
                for p, index in zip(present[mine].tolist(), every[pos : pos + present.size][mine]):
                    found.append((tuple(index.tolist()), self._component(seg, entries[p])))
                pos += present.size
        seen = {index for index, _ in found}
        for role in self._components:
            index = parse_chunk_role(role, ndim)
            if index is None or index in seen:
                continue
            if all(a.piece(k) is not None for a, k in zip(axes, index)):
                found.append((index, role))
        return found

    def _component(self, seg: Segment, e: np.ndarray) -> Component:
        storage, type_ = self.storage
        digest = entry_digest(seg.digest, e[2:])
        return Component(storage, int(e[0]), int(e[1]), seg.encoding, digest, None, type_)

    def stored(self) -> Iterator[tuple[tuple[int, ...], str | Component]]:
        """(grid index, location) of every stored chunk, each once (the newest)."""
        seen: set[tuple[int, ...]] = set()
        for seg in reversed(self.segments):
            entries = self.entries(seg)
            for pos, index in enumerate(np.ndindex(*seg.shape)):
                e = entries[pos]
                index = tuple(s + i for s, i in zip(seg.start, index))
                if e[0] != MISSING and index not in seen:
                    seen.add(index)
                    yield index, self._component(seg, e)
        for role in self._components:
            index = parse_chunk_role(role, self._ndim)
            if index is not None and index not in seen:
                yield index, role


def located_entries(chunks: Mapping[tuple, Component], seg: Segment) -> np.ndarray:
    """The entries of a new segment over ``seg``'s box from the components of its chunks
    (by grid index); chunks the box lacks get the MISSING marker."""
    out = np.full((seg.size, seg.words), MISSING, dtype=np.uint64)
    for index, comp in chunks.items():
        pos = seg.position(index)
        out[pos, 0] = comp.offset
        out[pos, 1] = comp.length
        if seg.digest is not None:
            out[pos, 2:] = digest_words(seg.digest, comp.digest)
    return out
