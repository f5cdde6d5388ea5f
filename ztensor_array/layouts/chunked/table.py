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

from collections.abc import Iterator, Mapping

import numpy as np

from ... import dtypes
from ...errors import FormatError
from ...manifest import Component, Object
from ..base import Getter
from .grid import Segment, chunk_grid, chunk_role, parse_chunk_role

MISSING = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # an entry word of a chunk a segment lacks


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
