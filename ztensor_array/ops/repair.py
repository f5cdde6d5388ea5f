"""``repair``: restore the last complete state of a file whose last append was torn.

An append writes blobs, then a new manifest and footer; a crash in between leaves bytes after
the last complete state that no manifest describes. Repair takes the writers' lock first (so
no append can finish while it looks), then finds that state: where the append marker says
the interrupted append started (unless the manifest at the end is the one that append wrote),
or, without a marker (a file of an older writer, or damaged by other means), by scanning
backwards for footer magics: the last one whose manifest decodes and validates ends it. The
scan prefilters candidates in bulk (footer length, manifest start and first byte) and fully
decodes at most ``MAX_CANDIDATES`` of them, so a tail of footer-like bytes costs
milliseconds per MiB. Repair cuts the file there (or copies that prefix elsewhere), through
the file primitives of files.py; it never edits bytes in place.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np

from .. import constants, files, manifest, validation
from ..errors import AppendInProgressError, FormatError, ZTensorError
from ..files import copy_prefix
from ..manifest import Manifest
from .base import check_output

MAX_CANDIDATES = 256  # footer-like positions fully decoded before the scan gives up
_SCAN_BLOCK = 16 << 20  # bytes searched for footer magics at a time, from the end
_MAP_FIRST = frozenset(range(0xA0, 0xC0))  # CBOR map headers: how every manifest begins


@dataclass(frozen=True)
class RepairReport:
    """What ``repair`` found and did."""

    path: str
    original_size: int
    kept_size: int
    objects: tuple[str, ...]  # the objects of the restored state

    @property
    def dropped_bytes(self) -> int:
        return self.original_size - self.kept_size

    @property
    def changed(self) -> bool:
        return self.dropped_bytes > 0

    def __str__(self) -> str:
        if not self.changed:
            return f"{self.path}: intact ({len(self.objects)} objects, {self.kept_size} bytes)"
        return (
            f"{self.path}: cut {self.dropped_bytes} bytes of a torn write after byte "
            f"{self.kept_size}; restored {len(self.objects)} objects"
        )


def repair(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    abandon: bool = False,
) -> RepairReport:
    """Restore the last complete state of a file whose tail was torn by a crash.

    In place (truncating the torn tail) unless ``out`` is given, in which case the restored
    file is written there atomically and ``path`` is left alone; an existing ``out`` is
    replaced only with ``overwrite``. A parallel append in progress is refused
    (AppendInProgressError); ``abandon=True`` undoes it instead, for one whose processes
    died (its late writes are refused from then on).
    """
    path = files.fspath(path)
    if out is not None:
        out = os.fspath(out)
        check_output(out, [path], overwrite)
    fence = _hold_marker(path) if abandon and out is None else None
    try:
        with files.FileLock.acquire(path, write=out is None) as held:
            marker = held.marker()
            if marker is not None and marker.kind == "parallel" and not abandon:
                if out is None:
                    raise AppendInProgressError(
                        f"a parallel append is in progress ({marker.describe()}); nothing "
                        "was cut. If its processes died, repair with abandon=True "
                        "(ztensor repair --abandon)",
                        path=path,
                    )
            size = held.size
            state = last_complete_state(path, fd=held.fd, marker=marker)
            if state is None:
                raise FormatError("no complete file state found: nothing to restore", path=path)
            end, m = state
            if out is not None:
                copy_prefix(path, out, end)
            else:
                if end < size:
                    held.truncate(end)
                if marker is not None:
                    held.end_append(marker)
                held.clear_leftover_marker()
    finally:
        if fence is not None:
            os.close(fence)
    return RepairReport(path, size, end, tuple(sorted(m.objects)))


def _hold_marker(path: str) -> int | None:
    """The append marker's exclusive flock (waiting for the writes in flight of a parallel
    append being abandoned; taken before the file's lock, the order of SPEC §9.3)."""
    try:
        fd = os.open(files.marker_path(path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    files.lock(fd)
    return fd


def last_complete_state(
    path: str | os.PathLike, *, fd: int | None = None, marker: files.Marker | None = None
) -> tuple[int, Manifest] | None:
    """(end offset, manifest) of the last complete file state within ``path`` (read through
    ``fd`` if given; ``marker``: the file's append marker, if any).

    After a crashed append, that is the state before it. None if there is none.
    """
    path = os.fspath(path)
    own = fd is None
    if own:
        fd, size = files.open_read(path)
    else:
        size = os.fstat(fd).st_size
    try:
        if size < len(constants.MAGIC) + constants.FOOTER_SIZE:
            return None
        if files.read_at(fd, len(constants.MAGIC), 0) != constants.MAGIC:
            raise FormatError("not a zTensor v1 file (repair handles v1.x only)", path=path)
        with files.map_read(fd) as mm:
            if marker is not None and marker.base <= size:
                state = _state_at(mm, size, path)
                if state is not None and _written_by(state[1], marker):
                    return state
                state = _state_at(mm, marker.base, path)
                if state is not None:
                    return state
                size = marker.base  # the marker's base is damaged too: look below it
            return _scan_backwards(mm, path, size)
    finally:
        if own:
            os.close(fd)


def _written_by(m: Manifest, marker: files.Marker) -> bool:
    return m.extra is not None and m.extra.get(files.APPEND_KEY) == marker.token


def _state_at(data: mmap.mmap, end: int, path: str) -> tuple[int, Manifest] | None:
    """The state whose footer ends at ``end``, if its manifest decodes and validates."""
    footer = constants.FOOTER_SIZE
    if end < len(constants.MAGIC) + footer or data[end - 8 : end] != constants.MAGIC:
        return None
    try:
        start, length = manifest.locate(end, data[end - footer : end], path)
        m = manifest.decode(data[start : start + length], path=path)
        validation.validate(m, start, path=path)
    except ZTensorError:
        return None
    return end, m


def _candidates(data: mmap.mmap, lo: int, hi: int) -> np.ndarray:
    """Ends ``e`` in ``(lo, hi]``, descending, where a footer could end: ``data[e-8:e]`` is
    the magic, the u64 before it a manifest length up to the cap that fits after the file's
    magic, and the manifest's first byte a CBOR map header. Vectorised: a tail of footer-like
    bytes costs a few passes over it, not Python work per magic."""
    base = max(lo - constants.FOOTER_SIZE, 0)
    buf = np.frombuffer(data, dtype=np.uint8, count=hi - base, offset=base)
    magic = int.from_bytes(constants.MAGIC, "little")
    ends = []
    for shift in range(8):
        n = (len(buf) - shift) // 8
        if n <= 1:
            continue
        words = buf[shift : shift + 8 * n].view("<u8")
        k = np.flatnonzero(words[1:] == magic) + 1  # a length word precedes the magic
        if not k.size:
            continue
        length = words[k - 1]
        end = base + shift + 8 * (k + 1)
        ok = (length >= 1) & (length <= constants.MAX_MANIFEST_SIZE)
        end, length = end[ok], length[ok].astype(np.int64)
        start = end - constants.FOOTER_SIZE - length
        ok = (start >= len(constants.MAGIC)) & (end > lo)
        end, start = end[ok], start[ok]
        first = np.frombuffer(data, dtype=np.uint8)[start] if start.size else start
        ends.append(end[(first >= 0xA0) & (first < 0xC0)])
    if not ends:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(ends))[::-1]


def _scan_backwards(data: mmap.mmap, path: str, size: int | None = None):
    """The last footer in ``data[:size]`` whose manifest decodes and validates; at most
    ``MAX_CANDIDATES`` candidates that pass the bulk prefilter are decoded."""
    hi = len(data) if size is None else size
    tried = 0
    while hi > len(constants.MAGIC):
        lo = max(hi - _SCAN_BLOCK, len(constants.MAGIC))
        for end in _candidates(data, lo, hi):
            tried += 1
            if tried > MAX_CANDIDATES:
                raise FormatError(
                    f"gave up after {MAX_CANDIDATES} footer-like positions that are not "
                    "valid states (the tail is not a torn append of this file)",
                    path=path,
                )
            state = _state_at(data, int(end), path)
            if state is not None:
                return state
        hi = lo
    return None
