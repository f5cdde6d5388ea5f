"""``migrate``: a legacy v0.1 file rewritten as a v1.1 file.

Every legacy checksum is verified before anything is written, so a damaged file is refused
rather than carried forward under fresh, valid-looking digests. The output is written with
our Writer (atomic: there is never a partial file at the destination). Sparse tensors stay
sparse (v1 ``sparse_csr``/``sparse_coo``) and big-endian data is stored little-endian.
"""

from __future__ import annotations

import os

from ..codecs import digests
from ..codecs.policy import normalize_checksum, normalize_compress
from ..errors import ChecksumError, UnsupportedError, ZTensorError
from ..reader import Reader
from ..writer import Writer
from . import Report, check_output

KEEP = None  # checksum=None: crc32c for tensors that had a legacy checksum, none otherwise


def _compression(compress: bool | int, level: int | None) -> int:
    """zstd level to write (0 = raw); a level alone also asks for compression."""
    if level is not None and compress is False:
        compress = True
    if compress is True and level is not None:
        compress = level
    return normalize_compress(compress)


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


def sparse_parts(reader: Reader, name: str, obj) -> tuple[str, dict]:
    """(v1 format, {role: array}) of a sparse tensor, values in their stored dtype.

    Components are taken as stored rather than through scipy, which would widen f16/bf16
    values; the index data is checked by the same code that checks it on read.
    """
    from ..layouts import legacy as legacy_layout

    def get(role: str):
        return reader.read_component(name, role)

    if obj.format == "sparse_csr":  # a raw blob seen as three sub-ranges
        reader.read_tensor(name)  # checks indptr and indices
        return "sparse_csr", {r: get(r) for r in ("values", "indices", "indptr")}
    if legacy_layout.is_legacy(obj.format):
        return legacy_layout.v1_parts(obj, get, path=reader.path, name=name)
    raise ZTensorError(f"cannot migrate format {obj.format!r}", path=reader.path, obj=name)


def _had_checksum(obj) -> bool:
    return any(c.digest is not None for c in obj.components.values())


def migrate(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    compress: bool | int = False,
    level: int | None = None,
    checksum: str | None = KEEP,
    overwrite: bool = False,
) -> Report:
    """Rewrite the v0.1 file ``src`` as a v1.1 file at ``dst``.

    compress: False (raw), True (zstd, ``level`` or 3) or a level; ``level`` alone implies
    compression. checksum: None keeps crc32c digests on the tensors that had a legacy
    checksum, "none" drops them, "crc32c"/"sha256" puts that digest on every component.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    zstd_level = _compression(compress, level)
    forced = None if checksum is KEEP else normalize_checksum(checksum)
    check_output(dst, [src], overwrite)
    with Reader(src) as reader:
        if reader.manifest_offset is not None:
            raise UnsupportedError(
                f"not a v0.1 file (version {reader.version}); nothing to migrate", path=src
            )
        verify_checksums(reader)
        report = Report(dst, bytes_in=reader.size)
        with Writer(dst, "w" if overwrite else "x") as writer:
            for name, obj in reader.manifest.objects.items():
                digest = forced if checksum is not KEEP else None
                if checksum is KEEP and _had_checksum(obj):
                    digest = "crc32c"
                kwargs = {"compress": zstd_level, "checksum": digest}
                if obj.format == "dense":
                    writer.add_tensor(name, reader.read_tensor(name), **kwargs)
                else:
                    fmt, parts = sparse_parts(reader, name, obj)
                    writer.add_object(name, fmt, obj.shape, parts, **kwargs)
                report.tensors += 1
        report.bytes_out = os.path.getsize(dst)
    return report
