"""``compact``: rewrite a file without the orphaned bytes that replace/remove/region writes
leave behind, every object copied as stored (encodings and digests unchanged)."""

from __future__ import annotations

import os

from .. import files
from ..errors import ZTensorError
from ..reader import Reader
from ..writer import Writer


def compact(path: str | os.PathLike, *, durable: bool = False) -> int:
    """Rewrite ``path`` without orphaned bytes (atomically); returns the bytes saved.

    Holds the writers' lock of the file from before it reads to after the new file is
    renamed into place (SPEC §9.3): no append can finish in between and be lost, and an
    appender that waited for the lock finds the new file at the path. A parallel append in
    progress is refused; a file whose last append was interrupted is compacted from its
    last complete state."""
    path = files.fspath(path)
    with files.FileLock.acquire(path, write=False) as held:
        marker = held.marker()
        if marker is not None and marker.kind == "parallel":
            raise files.marker_error(marker, path)
        before = held.size
        with Reader(path) as r:
            if (r.identity.dev, r.identity.ino) != held.ident:
                raise ZTensorError("file changed while opening for compact", path=path)
            with Writer(path, mode="w", durable=durable) as w:
                w._held = held  # the lock is ours already: the commit must not take it again
                w.attributes = r.attributes
                for name in r.names_in_file_order():
                    w.copy_from(r, name)
    return before - os.stat(path).st_size
