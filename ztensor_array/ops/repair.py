"""``repair``: restore the last complete state of a file whose last append was torn.

An append writes blobs, then a new manifest and footer; a crash in between leaves bytes after
the last footer that no manifest describes (the reader refuses the file and names repair).
The last complete state is found by scanning backwards for footer magics: the first one
whose manifest decodes and validates ends it. Repair cuts the file there (or copies that
prefix elsewhere), through the file primitives of files.py; it never edits bytes in place.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from .. import constants, files, manifest, validation
from ..errors import FormatError, ZTensorError
from ..files import copy_prefix, truncate_file
from ..manifest import Manifest
from .base import check_output


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
) -> RepairReport:
    """Restore the last complete state of a file whose tail was torn by a crash.

    In place (truncating the torn tail) unless ``out`` is given, in which case the restored
    file is written there atomically and ``path`` is left alone; an existing ``out`` is
    replaced only with ``overwrite``.
    """
    path = os.fspath(path)
    if out is not None:
        out = os.fspath(out)
        check_output(out, [path], overwrite)
    size = os.stat(path).st_size
    state = last_complete_state(path)
    if state is None:
        raise FormatError("no complete file state found: nothing to restore", path=path)
    end, m = state
    if out is not None:
        copy_prefix(path, out, end)
    elif end < size:
        truncate_file(path, end)
    return RepairReport(path, size, end, tuple(sorted(m.objects)))


def last_complete_state(path: str | os.PathLike) -> tuple[int, Manifest] | None:
    """(end offset, manifest) of the last complete file state within ``path``.

    After a crashed append, that is the state before it. None if there is none.
    """
    path = os.fspath(path)
    # a read-only map of a file that Reader refuses to open (its tail is torn)
    fd, size = files.open_read(path)
    try:
        if size < len(constants.MAGIC) + constants.FOOTER_SIZE:
            return None
        if files.read_at(fd, len(constants.MAGIC), 0) != constants.MAGIC:
            raise FormatError("not a zTensor v1 file (repair handles v1.x only)", path=path)
        with files.map_read(fd) as mm:
            return _scan_backwards(mm, path)
    finally:
        os.close(fd)


def _scan_backwards(data: mmap.mmap, path: str) -> tuple[int, Manifest] | None:
    """The last footer magic in ``data`` whose manifest decodes and validates."""
    magic, footer = constants.MAGIC, constants.FOOTER_SIZE
    hit = len(data)
    while True:
        hit = data.rfind(magic, len(magic), hit)
        if hit < 0:
            return None
        end = hit + len(magic)
        try:
            start, length = manifest.locate(end, data[end - footer : end], path)
            m = manifest.decode(data[start : start + length], path=path)
            validation.validate(m, start, path=path)
        except ZTensorError:
            continue
        return end, m
