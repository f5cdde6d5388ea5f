"""``migrate``: a legacy v0.1 file rewritten as a v1.1 file.

Every legacy checksum is verified before anything is written, so a damaged file is refused
rather than carried forward under fresh, valid-looking digests. The output is written with
our Writer (atomic: there is never a partial file at the destination). Sparse tensors stay
sparse (v1 ``sparse_csr``/``sparse_coo``) and big-endian data is stored little-endian.
"""

from __future__ import annotations

import os

from ..codecs import digests
from ..errors import ChecksumError, UnsupportedError, ZTensorError
from ..layouts import legacy as legacy_layout
from ..manifest import Object
from ..reader import Reader
from ..writer import Writer
from .base import (
    KEEP,
    Progress,
    Report,
    check_output,
    checksum_policy,
    compression,
    digest_algorithm,
    output_mode,
    stored_size,
)


def verify_checksums(reader: Reader) -> None:
    """Check every legacy checksum; ChecksumError naming the first tensor that fails."""
    for name, obj in reader.manifest.objects.items():
        for role, comp in obj.components.items():
            if comp.digest is None:
                continue
            if digests.parse(comp.digest) is None:
                raise ChecksumError(
                    f"checksum {comp.digest!r} uses an unknown algorithm and cannot be "
                    "verified; refusing to migrate",
                    path=reader.path,
                    obj=name,
                )
            try:
                reader.read_component(name, role, verify=True)
            except ChecksumError as exc:
                raise ChecksumError(
                    f"legacy checksum does not match ({exc.reason}); refusing to migrate",
                    path=reader.path,
                    obj=name,
                ) from None


def sparse_parts(reader: Reader, name: str, obj: Object) -> tuple[str, dict]:
    """(v1 format, {role: array}) of a sparse tensor, values in their stored dtype.

    Components are taken as stored rather than through scipy, which would widen f16/bf16
    values; the index data is checked by the same code that checks it on read.
    """

    def get(role: str):
        return reader.read_component(name, role)

    if obj.format == "sparse_csr":  # a raw blob seen as three sub-ranges
        reader.read_tensor(name)  # checks indptr and indices
        return "sparse_csr", {r: get(r) for r in ("values", "indices", "indptr")}
    if legacy_layout.is_legacy(obj.format):
        return legacy_layout.v1_parts(obj, get, path=reader.path, name=name)
    raise ZTensorError(f"cannot migrate format {obj.format!r}", path=reader.path, obj=name)


def migrate(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    compress: bool | int = False,
    level: int | None = None,
    checksum: str | None = KEEP,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Rewrite the v0.1 file ``src`` as a v1.1 file at ``dst``.

    compress: False (raw), True (zstd, ``level`` or the default level) or a level; ``level``
    alone implies compression. checksum: KEEP (a tensor that had a legacy checksum gets a
    digest of the same algorithm, crc32c for every v0.1 writer), None/"none" (no digests),
    or "crc32c"/"sha256" on every component.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    zstd_level = compression(compress, level)
    checksum = checksum_policy(checksum)
    progress = progress or Progress()
    check_output(dst, [src], overwrite)  # before anything is read
    with Reader(src) as reader:
        if reader.manifest_offset is not None:
            raise UnsupportedError(
                f"not a v0.1 file (version {reader.version}); nothing to migrate", path=src
            )
        verify_checksums(reader)
        report = Report(dst, bytes_in=reader.size)
        progress.start(f"migrate -> {os.path.basename(dst)}", reader.size)
        with Writer(dst, output_mode(overwrite)) as writer:
            for name, obj in reader.manifest.objects.items():
                kwargs = {"compress": zstd_level, "checksum": digest_algorithm(obj, checksum)}
                if obj.format == "dense":
                    writer.add_tensor(name, reader.read_tensor(name), **kwargs)
                else:
                    fmt, parts = sparse_parts(reader, name, obj)
                    writer.add_object(name, fmt, obj.shape, parts, **kwargs)
                progress.advance(stored_size(obj))
                report.tensors += 1
        report.bytes_out = os.path.getsize(dst)
    return report
