"""``merge``: several .zt files (v1.x and legacy v0.1) into one, every object kept as stored.

Stored blobs of v1 inputs are copied verbatim after their digests are checked, so compression
and digests stay exactly as they were; legacy objects are re-encoded into v1 formats (zstd
stays zstd at the default level, a legacy checksum keeps its algorithm).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..codecs import RAW
from ..codecs.policy import DEFAULT_LEVEL
from ..errors import ZTensorError
from ..reader import Reader
from .base import KEEP, Progress, Report, open_output, stored_size
from .rewrite import copy_verbatim, reencode


def merge(
    inputs: Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    prefix_with_filename: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Merge .zt files into ``dst``, keeping every object as stored.

    Name collisions are an error unless ``prefix_with_filename`` prefixes each name with
    its file's stem; global attributes must agree where they share a key.
    """
    inputs = [os.fspath(p) for p in inputs]
    dst = os.fspath(dst)
    if not inputs:
        raise ZTensorError("no input files given")
    progress = progress or Progress()
    seen: dict[str, str] = {}
    with open_output(dst, inputs, overwrite) as w:
        report = Report(dst, bytes_in=sum(os.path.getsize(p) for p in inputs))
        progress.start(f"merge -> {os.path.basename(dst)}", report.bytes_in)
        for path in inputs:
            prefix = _stem(path) + "/" if prefix_with_filename else ""
            with Reader(path) as r:
                for key, value in r.attributes.items():
                    if key in w.attributes and w.attributes[key] != value:
                        raise ZTensorError(
                            f"global attribute {key!r} differs between inputs", path=path
                        )
                    w.attributes[key] = value
                legacy = r.manifest_offset is None
                for name in r.names_in_file_order():
                    out_name = prefix + name
                    if out_name in seen:
                        raise ZTensorError(
                            f"object name collides with one from {seen[out_name]} "
                            "(use --prefix-with-filename)",
                            path=path,
                            obj=name,
                        )
                    seen[out_name] = path
                    obj = r.manifest.objects[name]
                    if legacy:
                        zstd = any(c.encoding != RAW for c in obj.components.values())
                        reencode(r, w, name, out_name, DEFAULT_LEVEL if zstd else 0, KEEP)
                    else:
                        copy_verbatim(r, w, name, out_name)
                    progress.advance(stored_size(obj))
                    report.tensors += 1
    report.bytes_out = os.path.getsize(dst)
    return report


def _stem(path: str) -> str:
    """A file's name without its folder and extension (the prefix of its objects)."""
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
