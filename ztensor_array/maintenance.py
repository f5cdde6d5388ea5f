"""File upkeep: ``repair`` a file whose last append was torn, ``compact`` away orphaned bytes.

Both leave the file in a state that every 1.x reader opens; both work through Reader and
Writer (and the two small file primitives they expose), never by editing bytes in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import reader as reader_mod
from .errors import FormatError
from .files import copy_prefix, truncate_file
from .reader import Reader
from .writer import Writer


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


def repair(path: str | os.PathLike, out: str | os.PathLike | None = None) -> RepairReport:
    """Restore the last complete state of a file whose tail was torn by a crash.

    In place (truncating the torn tail) unless ``out`` is given, in which case the restored
    file is written there atomically and ``path`` is left alone.
    """
    path = os.fspath(path)
    size = os.stat(path).st_size
    state = reader_mod.last_complete_state(path)
    if state is None:
        raise FormatError("no complete file state found: nothing to restore", path=path)
    end, m = state
    if out is not None:
        copy_prefix(path, os.fspath(out), end)
    elif end < size:
        truncate_file(path, end)
    return RepairReport(path, size, end, tuple(sorted(m.objects)))


def compact(path: str | os.PathLike, *, durable: bool = False) -> int:
    """Rewrite ``path`` without orphaned bytes (atomically); returns the bytes saved."""
    path = os.fspath(path)
    before = os.stat(path).st_size
    with Reader(path) as r, Writer(path, mode="w", durable=durable) as w:
        w.attributes = r.attributes
        for name in r.names_in_file_order():
            w.copy_from(r, name)
    return before - os.stat(path).st_size
