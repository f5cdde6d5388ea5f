"""``rewrite`` (``ztensor compress``/``decompress``): every object re-encoded, all kept.

Every object survives, whatever its format (dense, sparse, quantized, chunked and formats we
do not know yet): components are decoded one by one and re-encoded, keeping their storage and
logical dtypes, the object's attributes and the global attributes. Digests follow the
``checksum`` policy of ``base`` (by default each object keeps its algorithm). An object with
a logical `type` this version does not know is copied as stored instead (it cannot be
decoded). Legacy v0.1 inputs are re-encoded into v1 formats on the way.
"""

from __future__ import annotations

import os

import numpy as np

from .. import files
from ..codecs import RAW, digests
from ..codecs.policy import normalize_compress
from ..errors import ChecksumError
from ..layouts import chunked, dense
from ..layouts.base import unknown_type
from ..manifest import Object
from ..reader import Parts, Reader
from ..writer import Writer
from .base import (
    KEEP,
    Progress,
    Report,
    checksum_policy,
    digest_algorithm,
    open_output,
    stored_size,
)

_STREAM_BLOCK = 64 << 20  # raw dense tensors above this are re-encoded block by block


def reencode(
    reader: Reader, writer: Writer, name: str, out_name: str, level: int, checksum: str | None
) -> None:
    """Decode every component of one object and write it again with zstd ``level`` (0: raw).

    ``checksum``: an algorithm, None for none, or KEEP for the object's own algorithm.
    """
    obj = reader.manifest.objects[name]
    if unknown_type(obj) is not None:
        # a logical type we do not know cannot be decoded and re-encoded faithfully: the
        # object is kept as stored (its encoding and digests unchanged)
        copy_verbatim(reader, writer, name, out_name)
        return
    algo = digest_algorithm(obj, checksum)
    attrs = dict(obj.attributes) if obj.attributes else None
    if obj.format.startswith("legacy_"):  # v0.1 single-blob sparse: becomes sparse_csr/coo
        value = reader.read_tensor(name, verify_checksum=True)
        writer.add_sparse(out_name, value, compress=level, checksum=algo, attributes=attrs)
        return
    if obj.format == "chunked":  # each stored chunk decoded and encoded again
        parts = Parts(reader, name, True)

        def reencoded():
            for index in reader.chunks(name):
                data = chunked.read_chunk(obj, parts, index, path=reader.path, name=name)
                blob, comp = chunked.encode_chunk(np.ascontiguousarray(data), level, algo)
                yield index, comp, blob

        writer.copy_chunked(out_name, obj, reencoded())
        return
    comp = obj.components.get("data")
    if (
        obj.format == "dense"
        and comp is not None
        and comp.encoding == RAW
        and comp.length > _STREAM_BLOCK
    ):
        _stream_dense(reader, writer, name, out_name, obj, level, algo, attrs)
        return
    parts = {}
    for role in sorted(obj.components, key=lambda r: obj.components[r].offset):
        c = obj.components[role]
        parts[role] = dense.as_logical(reader.read_component(name, role, verify=True), c)
    writer.add_object(
        out_name, obj.format, obj.shape, parts, compress=level, checksum=algo, attributes=attrs
    )


def _stream_dense(reader, writer, name, out_name, obj, level, algo, attrs) -> None:
    """A big raw dense tensor, re-encoded in blocks so memory stays bounded."""
    comp = obj.components["data"]
    flat = dense.as_logical(reader.read_component(name, "data", verify=True), comp)
    step = max(1, _STREAM_BLOCK // max(flat.dtype.itemsize, 1))
    with writer.stream_tensor(
        out_name, obj.shape, flat.dtype, compress=level, checksum=algo, attributes=attrs
    ) as s:
        for start in range(0, flat.size, step):
            s.write(flat[start : start + step])


def copy_verbatim(reader: Reader, writer: Writer, name: str, out_name: str) -> None:
    """Copy an object's stored blobs as they are, after checking their digests (a blob
    whose digest uses an algorithm we do not know is copied unchecked)."""
    obj: Object = reader.manifest.objects[name]
    if obj.format == "chunked":
        chunks = reader.chunk_blobs(name)
        for index, (comp, blob) in chunks.items():
            _refuse_corrupt(reader, name, f"chunk {list(index)}", comp, blob)
        writer.copy_chunked(out_name, obj, ((i, c, b) for i, (c, b) in chunks.items()))
        return
    stored = {}
    for role, comp in obj.components.items():
        blob = reader.stored_bytes(name, role)
        _refuse_corrupt(reader, name, role, comp, blob)
        stored[role] = blob
    writer.copy_object(out_name, obj, stored)


def _refuse_corrupt(reader: Reader, name: str, where: str, comp, blob) -> None:
    if comp.digest is not None and digests.matches(comp.digest, blob) is False:
        raise ChecksumError(
            f"digest mismatch (expected {comp.digest}); refusing to copy a corrupt blob",
            path=reader.path,
            obj=name,
            component=where,
        )


def rewrite(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    compress: bool | int,
    checksum: str | None = KEEP,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Copy ``src`` to ``dst`` with every object re-encoded (compress=False: decompress).

    ``checksum``: KEEP (each object keeps its digest algorithm), None/"none", or an
    algorithm for every component.
    """
    src, dst = files.fspath(src), files.fspath(dst)
    level = normalize_compress(compress)
    checksum = checksum_policy(checksum)
    progress = progress or Progress()
    with Reader(src) as r:
        with open_output(dst, [src], overwrite) as w:
            report = Report(dst, bytes_in=r.size)
            progress.start(
                f"{'compress' if level else 'decompress'} -> {os.path.basename(dst)}", r.size
            )
            w.attributes = r.attributes
            for name in r.names_in_file_order():
                reencode(r, w, name, name, level, checksum)
                progress.advance(stored_size(r.manifest.objects[name]))
                report.tensors += 1
        report.bytes_out = os.path.getsize(dst)
    return report
