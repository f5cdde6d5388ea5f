"""``compact``: rewrite a file without the orphaned bytes that replace/remove/region writes
leave behind, every object copied as stored (encodings and digests unchanged)."""

from __future__ import annotations

import os

from .. import files
from ..reader import Reader
from ..writer import Writer


def compact(path: str | os.PathLike, *, durable: bool = False) -> int:
    """Rewrite ``path`` without orphaned bytes (atomically); returns the bytes saved."""
    path = files.fspath(path)
    before = os.stat(path).st_size
    with Reader(path) as r, Writer(path, mode="w", durable=durable) as w:
        w.attributes = r.attributes
        for name in r.names_in_file_order():
            w.copy_from(r, name)
    return before - os.stat(path).st_size
