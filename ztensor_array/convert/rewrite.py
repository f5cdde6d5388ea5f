"""Rewriting .zt files: compress, decompress and merge, keeping every object.

Every object survives, whatever its format (dense, sparse, quantized, chunked and formats we
do not know yet): components are decoded one by one and re-encoded, keeping their storage and
logical dtypes, the object's attributes and the global attributes. Digests are recomputed
with the algorithm each object used (or the one asked for). An object with a logical `type`
this version does not know is copied as stored instead (it cannot be decoded). ``merge``
copies stored blobs verbatim, so compression and digests stay exactly as they were. Legacy
v0.1 inputs are re-encoded into v1 formats on the way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import ChecksumError, ZTensorError
from ..layouts.base import unknown_type
from ..manifest import Object
from . import Progress, Report, check_output

_STREAM_BLOCK = 64 << 20  # raw dense tensors above this are re-encoded block by block


def _digest_algorithm(obj: Object) -> str | None:
    from ..codecs import digests

    for comp in obj.components.values():
        if comp.digest is not None:
            parsed = digests.parse(comp.digest)
            if parsed is not None:
                return parsed[0]
    return None


def _is_legacy(reader) -> bool:
    return not reader.version.startswith("1")


def reencode(reader, writer, name: str, out_name: str, level: int, checksum: Any) -> None:
    """Decode every component of one object and write it again with ``level``.

    ``checksum`` is an algorithm, None for none, or "keep" for the object's own algorithm.
    """
    obj = reader.manifest.objects[name]
    if unknown_type(obj) is not None:
        # a logical type we do not know cannot be decoded and re-encoded faithfully: the
        # object is kept as stored (its encoding and digests unchanged)
        _copy_verbatim(reader, writer, name, out_name, obj)
        return
    algo = _digest_algorithm(obj) if checksum == "keep" else checksum
    attrs = dict(obj.attributes) if obj.attributes else None
    if obj.format.startswith("legacy_"):  # v0.1 single-blob sparse: becomes sparse_csr/coo
        value = reader.read_tensor(name, verify_checksum=True)
        writer.add_sparse(out_name, value, compress=level, checksum=algo, attributes=attrs)
        return
    comp = obj.components.get("data")
    if (
        obj.format == "dense"
        and comp is not None
        and comp.encoding == "raw"
        and comp.length > _STREAM_BLOCK
    ):
        _stream_dense(reader, writer, name, out_name, obj, level, algo, attrs)
        return
    from ..layouts import dense

    parts = {}
    for role in sorted(obj.components, key=lambda r: obj.components[r].offset):
        c = obj.components[role]
        parts[role] = dense.as_logical(reader.read_component(name, role, verify=True), c)
    writer.add_object(
        out_name, obj.format, obj.shape, parts, compress=level, checksum=algo, attributes=attrs
    )


def _stream_dense(reader, writer, name, out_name, obj, level, algo, attrs) -> None:
    """A big raw dense tensor, re-encoded in blocks so memory stays bounded."""
    from ..layouts import dense

    comp = obj.components["data"]
    flat = dense.as_logical(reader.read_component(name, "data", verify=True), comp)
    step = max(1, _STREAM_BLOCK // max(flat.dtype.itemsize, 1))
    with writer.stream_tensor(
        out_name, obj.shape, flat.dtype, compress=level, checksum=algo, attributes=attrs
    ) as s:
        for start in range(0, flat.size, step):
            s.write(flat[start : start + step])


def rewrite(
    src: str,
    dst: str,
    *,
    compress: bool | int,
    checksum: str | None = "keep",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Copy ``src`` to ``dst`` with every object re-encoded (compress=False: decompress)."""
    from ..codecs.policy import normalize_checksum, normalize_compress
    from ..reader import Reader
    from ..writer import Writer

    src, dst = os.fspath(src), os.fspath(dst)
    level = normalize_compress(compress)
    if checksum != "keep":
        checksum = normalize_checksum(checksum)
    progress = progress or Progress()
    with Reader(src) as r:
        check_output(dst, [src], overwrite)
        report = Report(dst, bytes_in=r.size)
        progress.start(
            f"{'compress' if level else 'decompress'} -> {os.path.basename(dst)}", r.size
        )
        with Writer(dst, "w" if overwrite else "x") as w:
            w.attributes = r.attributes
            for name in r.names_in_file_order():
                reencode(r, w, name, name, level, checksum)
                progress.advance(_stored_size(r.manifest.objects[name]))
                report.tensors += 1
        report.bytes_out = os.path.getsize(dst)
    return report


def _stored_size(obj: Object) -> int:
    return sum(c.length for c in obj.components.values())


def merge(
    inputs: Sequence[str],
    dst: str,
    *,
    prefix_with_filename: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Merge .zt files (v1.x and legacy v0.1) into one, keeping every object as stored.

    Stored blobs of v1 inputs are copied verbatim after their digests are checked; legacy
    objects are re-encoded (zstd stays zstd, a legacy checksum becomes a crc32c digest).
    Name collisions are an error unless ``prefix_with_filename``; global attributes must
    agree where they share a key.
    """
    from ..reader import Reader
    from ..writer import Writer
    from . import _prefix, input_size

    inputs = [os.fspath(p) for p in inputs]
    dst = os.fspath(dst)
    if not inputs:
        raise ZTensorError("no input files given")
    check_output(dst, inputs, overwrite)
    progress = progress or Progress()
    report = Report(dst, bytes_in=sum(input_size(p) for p in inputs))
    progress.start(f"merge -> {os.path.basename(dst)}", report.bytes_in)
    seen: dict[str, str] = {}
    with Writer(dst, "w" if overwrite else "x") as w:
        for path in inputs:
            prefix = _prefix(path) + "/" if prefix_with_filename else ""
            with Reader(path) as r:
                for key, value in r.attributes.items():
                    if key in w.attributes and w.attributes[key] != value:
                        raise ZTensorError(
                            f"global attribute {key!r} differs between inputs", path=path
                        )
                    w.attributes[key] = value
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
                    if _is_legacy(r):
                        _reencode_legacy(r, w, name, out_name, obj)
                    else:
                        _copy_verbatim(r, w, name, out_name, obj)
                    progress.advance(_stored_size(obj))
                    report.tensors += 1
    report.bytes_out = os.path.getsize(dst)
    return report


def _copy_verbatim(r, w, name: str, out_name: str, obj: Object) -> None:
    """Copy an object's stored blobs as they are, after checking their digests."""
    stored = {}
    for role, comp in obj.components.items():
        blob = r.stored_bytes(name, role)
        _check_digest(r.path, name, role, comp.digest, blob)
        stored[role] = blob
    w.copy_object(out_name, obj, stored)


def _reencode_legacy(r, w, name: str, out_name: str, obj: Object) -> None:
    comps = obj.components.values()
    level = 3 if any(c.encoding == "zstd" for c in comps) else 0
    algo = "crc32c" if any(c.digest for c in comps) else None
    reencode(r, w, name, out_name, level, algo)


def _check_digest(path: str, name: str, role: str, digest: str | None, blob) -> None:
    if digest is None:
        return
    from ..codecs import digests

    if digests.matches(digest, blob) is False:
        raise ChecksumError(
            f"digest mismatch (expected {digest}); refusing to copy a corrupt blob",
            path=path,
            obj=name,
            component=role,
        )
