"""Legacy zTensor v0.1 files: their trailing CBOR index, turned into our Manifest.

A v0.1 file is ``ZTEN0001``, the blobs, a CBOR array with one map per tensor, and the byte
length of that CBOR as a u64 LE in the last 8 bytes (no footer magic). Each map names the
tensor's blob (``offset``/``size``), its long dtype name, ``layout``, ``shape``, ``encoding``
and optionally ``data_endianness`` and ``checksum``; other keys are ignored.

Dense entries become ``dense`` objects. A sparse tensor is one blob: a raw CSR blob without
a checksum becomes a ``sparse_csr`` object whose three components are sub-ranges of the blob
(zero-copy); other sparse blobs keep their single component under the in-memory formats of
``layouts/legacy.py``, so that their digest and zstd frame still cover what they covered.
Offsets, overlaps and sizes are then checked by ``validation.validate`` (without alignment:
v0.1 writers did not all align).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import constants, dtypes, manifest, validation
from .codecs import RAW
from .errors import FormatError, TornFileError, UnsupportedError
from .layouts import legacy as layout
from .manifest import Component, Manifest, Object, expect, is_uint

LENGTH_SIZE = 8  # trailing u64 LE byte length of the CBOR index
VERSION = "0.1"
LAYOUTS = ("dense", "sparsecsr", "sparsecoo")
ENDIANNESS = ("little", "big")

Pread = Callable[[int, int], bytes]


def locate(size: int, tail: bytes, path) -> tuple[int, int]:
    """(offset, length) of the CBOR index from the file size and its last 8 bytes."""
    if size < len(constants.LEGACY_MAGIC) + LENGTH_SIZE:
        raise TornFileError(f"v0.1 file of {size} bytes is too short", path=path)
    length = int.from_bytes(tail, "little")
    if length > constants.MAX_MANIFEST_SIZE:
        raise FormatError(
            f"v0.1 index size {length} exceeds the {constants.MAX_MANIFEST_SIZE >> 20} MiB limit",
            path=path,
        )
    start = size - LENGTH_SIZE - length
    if start < len(constants.LEGACY_MAGIC):
        raise FormatError(
            f"v0.1 index size {length} does not fit in a file of {size} bytes", path=path
        )
    return start, length


def _entry(raw: Any, index: int, path) -> tuple[str, Object]:
    """(name, Object) of one index entry, every field type-checked."""
    expect(isinstance(raw, Mapping), f"v0.1 index entry {index} is not a map", path)
    name = raw.get("name")
    expect(isinstance(name, str), f"v0.1 index entry {index} has no text name", path)
    offset, size = raw.get("offset"), raw.get("size")
    long_dtype, layout_name = raw.get("dtype"), raw.get("layout", "dense")
    shape, encoding = raw.get("shape"), raw.get("encoding", RAW)
    endian, checksum = raw.get("data_endianness") or "little", raw.get("checksum")
    expect(is_uint(offset), f"offset {offset!r} is not an unsigned integer", path, name)
    expect(is_uint(size), f"size {size!r} is not an unsigned integer", path, name)
    expect(isinstance(long_dtype, str), f"dtype {long_dtype!r} is not text", path, name)
    expect(isinstance(shape, list), f"shape {shape!r} is not an array", path, name)
    expect(all(is_uint(d) for d in shape), f"shape {shape!r} has a non-uint entry", path, name)
    expect(isinstance(checksum, str | None), "checksum is not text", path, name)
    expect(isinstance(layout_name, str), f"layout {layout_name!r} is not text", path, name)
    expect(isinstance(encoding, str), f"encoding {encoding!r} is not text", path, name)
    expect(isinstance(endian, str), f"data_endianness {endian!r} is not text", path, name)
    if layout_name not in LAYOUTS:
        raise UnsupportedError(f"unknown v0.1 layout {layout_name!r}", path=path, obj=name)
    if encoding not in manifest.ENCODINGS:
        raise UnsupportedError(f"unknown v0.1 encoding {encoding!r}", path=path, obj=name)
    if endian not in ENDIANNESS:
        raise UnsupportedError(f"unknown data_endianness {endian!r}", path=path, obj=name)
    try:
        dtype = dtypes.from_legacy(long_dtype)
    except UnsupportedError as exc:
        raise UnsupportedError(exc.reason, path=path, obj=name) from None
    shape = tuple(shape)
    whole = Component(dtype, offset, size, encoding, checksum, byte_order=endian)
    if layout_name == "dense":
        return name, Object(shape, "dense", {"data": whole})
    if layout_name == "sparsecoo":
        return name, Object(shape, layout.COO, {"records": whole})
    if encoding == RAW and checksum is None and len(shape) == 2:
        return name, _csr_ranges(name, shape, whole, path)
    return name, Object(shape, layout.CSR, {"blob": whole})


def _csr_ranges(name: str, shape: tuple[int, ...], blob: Component, path) -> Object:
    """A raw CSR blob as a v1 ``sparse_csr`` object over three sub-ranges of it."""
    nnz = layout.csr_nnz(shape, blob.length, dtypes.itemsize(blob.dtype))
    expect(
        nnz is not None,
        f"sparsecsr blob of {blob.length} bytes fits no nnz for shape {list(shape)}",
        path,
        name,
    )
    ptr_len = (shape[0] + 1) * layout.INDEX_SIZE
    idx_len = nnz * layout.INDEX_SIZE

    def part(dtype: str, start: int, length: int) -> Component:
        return Component(dtype, blob.offset + start, length, byte_order=blob.byte_order)

    comps = {
        "indptr": part("u64", 0, ptr_len),
        "indices": part("u64", ptr_len, idx_len),
        "values": part(blob.dtype, ptr_len + idx_len, blob.length - ptr_len - idx_len),
    }
    return Object(shape, "sparse_csr", comps)


def parse(data: bytes, blob_end: int, *, path=None) -> Manifest:
    """Manifest from the CBOR index bytes; ``blob_end`` is where the index starts."""
    manifest.check_object_count(manifest.declared_length(data, 0, major=4), path)
    root = manifest.load_cbor(data, path)
    expect(isinstance(root, list), "v0.1 index is not a CBOR array", path)
    manifest.check_object_count(len(root), path)
    objects: dict[str, Object] = {}
    for i, raw in enumerate(root):
        name, obj = _entry(raw, i, path)
        expect(name not in objects, "tensor name appears twice in the v0.1 index", path, name)
        objects[name] = obj
    m = Manifest(objects, None, VERSION)
    validation.validate(m, blob_end, path=path, aligned=False)
    return m


def read_manifest(pread: Pread, size: int, path) -> tuple[Manifest, None]:
    """The Manifest of a v0.1 file; None as manifest offset, since v0.1 has no v1 footer."""
    tail = pread(LENGTH_SIZE, size - LENGTH_SIZE) if size >= LENGTH_SIZE else b""
    start, length = locate(size, tail, path)
    return parse(pread(length, start), start, path=path), None
