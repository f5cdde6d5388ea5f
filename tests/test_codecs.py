"""codecs/: the registry, each encoding's codec (reference-compatible, size-bounded,
bomb-proof zstd frames; raw), and digests."""

from __future__ import annotations

import hashlib
import mmap
import subprocess
import sys
import tracemalloc

import cbor2
import numcodecs
import numpy as np
import pytest
import zstandard

from ztensor_array import Reader, Writer, codecs, manifest
from ztensor_array.codecs import CodecError, digests
from ztensor_array.codecs.raw import RawCodec
from ztensor_array.codecs.zstd import ZstdCodec
from ztensor_array.errors import ChecksumError, DecodeError


def _manifest(data: bytes) -> dict:
    n = int.from_bytes(data[-16:-8], "little")
    return cbor2.loads(data[-16 - n : -16])


def _reference_frame(zref, tmp_path, array: np.ndarray, level) -> bytes:
    p = tmp_path / f"ref{level}.zt"
    with zref.Writer(str(p)) as w:
        w.add_tensor("t", array, compress=level)
    data = p.read_bytes()
    c = _manifest(data)["objects"]["t"]["components"]["data"]
    assert c["encoding"] == "zstd"
    return data[c["offset"] : c["offset"] + c["length"]]


def _zstd(level: int = 3) -> ZstdCodec:
    return codecs.get("zstd", level=level)


# --------------------------------------------------------------------------- zstd


@pytest.mark.parametrize("level", [1, 3, 19])
def test_decodes_reference_frames_without_content_size(zref, tmp_path, level):
    arr = np.random.default_rng(level).standard_normal((64, 33)).astype(np.float32)
    frame = _reference_frame(zref, tmp_path, arr, level)
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN  # the trap
    with pytest.raises(zstandard.ZstdError):  # a one-shot decoder cannot do it
        zstandard.ZstdDecompressor().decompress(frame)
    codec = _zstd(level)
    out = codec.decode_exact(frame, arr.nbytes)
    assert out.tobytes() == arr.tobytes()
    # and our frames for the same bytes are the reference's, whole or in the writer's pieces
    assert codec.encode(arr.tobytes()) == frame
    assert b"".join(codec.encode_parts(arr)) == frame


def test_our_frames_have_no_content_size():
    frame = _zstd().encode(b"x" * 1000)
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == b"x" * 1000


@pytest.mark.parametrize("level", [1, 3, 9, 19, 22])
def test_chunk_frames_record_their_size_at_every_level(level):
    """Frames of the chunked layout carry their decoded size (checked before decoding) and
    decode with zstandard, whichever zstd made them; bad levels are refused the same way."""
    data = np.sin(np.arange(50_000, dtype=np.float32) / 50).tobytes()
    frame = _zstd(level).encode_chunk(memoryview(data))
    assert zstandard.get_frame_parameters(frame).content_size == len(data)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert _zstd().decode_exact(frame, len(data)).tobytes() == data
    with pytest.raises(ValueError):
        codecs.compressor(23)


@pytest.mark.parametrize("level", range(1, 23))
def test_every_level_roundtrips(level):
    data = (np.arange(5000, dtype=np.int32) % 97).tobytes()
    codec = codecs.compressor(level)
    frame = codec.encode(data)
    assert len(frame) < len(data)
    assert codec.decode_exact(frame, len(data)).tobytes() == data
    assert bytes(codec.decode(codec.encode(np.frombuffer(data, np.uint8)))) == data


@pytest.mark.parametrize("level", [0, 23, -1, 3.0, True, "3"])
def test_bad_levels_rejected(level):
    codecs.compressor(1)  # cached: True == 1 must still not find it
    with pytest.raises(ValueError):
        codecs.compressor(level)
    with pytest.raises(ValueError):
        ZstdCodec(level)


def test_short_and_long_decodes_are_errors():
    data = bytes(range(256)) * 10
    codec = _zstd()
    frame = codec.encode(data)
    with pytest.raises(CodecError, match="only"):
        codec.decode_exact(frame, len(data) + 1)
    with pytest.raises(CodecError, match="more than"):
        codec.decode_exact(frame, len(data) - 1)
    with pytest.raises(CodecError):
        codec.decode_exact(frame + frame, len(data))  # a second frame is "more"
    with pytest.raises(CodecError):
        codec.decode_exact(frame + b"garbage", len(data))


@pytest.mark.parametrize(
    "junk",
    [b"", b"\x00" * 16, b"not a frame at all", ZstdCodec(3).encode(b"abc" * 99)[:-4]],
)
def test_corrupt_frames(junk):
    with pytest.raises(CodecError):
        _zstd().decode_exact(junk, 297)
    if junk:  # no bytes at all are no frame: zero bytes when no size is known
        with pytest.raises(CodecError):
            _zstd().decode_limited(junk, 1000)


def test_empty_payload():
    assert _zstd().decode_exact(_zstd().encode(b""), 0).size == 0


def _bomb(nbytes: int) -> bytes:
    """A small frame that decodes to ``nbytes`` zero bytes."""
    c = zstandard.ZstdCompressor(level=1).compressobj()
    chunk = bytes(1 << 20)
    parts = [c.compress(chunk) for _ in range(nbytes >> 20)]
    return b"".join(parts) + c.flush()


def test_bomb_never_allocates_more_than_declared():
    frame = _bomb(256 << 20)  # 256 MiB of zeros in a few KiB
    assert len(frame) < 64 << 10
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="more than"):
            _zstd().decode_exact(frame, 4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_bomb_unbounded_variant_stops_at_limit():
    frame = _bomb(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(CodecError):
            _zstd().decode_limited(frame, 10_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_bomb_in_a_file(tmp_path):
    """A zstd component that decodes past its declared shape: DecodeError, bounded memory."""
    import scipy.sparse  # noqa: F401  (imported up front: its import would dominate the peak)
    from conftest import build_file, component

    import ztensor_array.layouts.sparse  # noqa: F401

    frame = _bomb(128 << 20)
    step = 64 * (len(frame) // 64 + 1)
    p = tmp_path / "bomb.zt"
    objects = {
        "dense": {
            "shape": [16, 16],
            "format": "dense",
            "components": {"data": component("f32", 64, len(frame), encoding="zstd")},
        },
        # sparse values have no size in the manifest: bounded by the object's extent
        "coo": {
            "shape": [4, 4],
            "format": "sparse_coo",
            "components": {
                "values": component("f32", 64 + step, len(frame), encoding="zstd"),
                "coords": component("u64", 64 + 2 * step, 16),
            },
        },
    }
    build_file(p, objects, {64: frame, 64 + step: frame, 64 + 2 * step: bytes(16)})
    with Reader(p) as r:
        tracemalloc.start()
        try:
            for name in ("dense", "coo"):
                with pytest.raises(DecodeError) as info:
                    r.read_tensor(name)
                assert f"'{name}'" in str(info.value) and str(p) in str(info.value)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_numcodecs_registration():
    codecs.register()
    codec = numcodecs.get_codec({"id": "ztensor.zstd", "level": 7})
    assert isinstance(codec, ZstdCodec) and codec.level == 7
    raw = numcodecs.get_codec({"id": "ztensor.raw"})
    arr = np.arange(10, dtype="<i4")
    assert bytes(raw.decode(raw.encode(arr))) == arr.tobytes()
    out = np.empty_like(arr)
    codec.decode(codec.encode(arr), out=out)
    np.testing.assert_array_equal(out, arr)
    assert codec.get_config() == {"id": "ztensor.zstd", "level": 7}


def test_numcodecs_finds_the_codecs_through_entry_points():
    """Without register(): an installed copy is found by the numcodecs.codecs entry points."""
    code = (
        "import numcodecs, numpy as np\n"
        "c = numcodecs.get_codec({'id': 'ztensor.zstd', 'level': 3})\n"
        "a = np.arange(100, dtype='<f4')\n"
        "assert type(c).__module__ == 'ztensor_array.codecs.zstd', type(c)\n"
        "assert bytes(c.decode(c.encode(a))) == a.tobytes()\n"
        "assert type(numcodecs.get_codec({'id': 'ztensor.raw'})).__name__ == 'RawCodec'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_codec_decode_into_wrong_size_raises():
    for codec in (_zstd(), codecs.get("raw")):
        enc = codec.encode(np.arange(10, dtype="<i4"))
        with pytest.raises(ValueError):
            codec.decode(enc, out=np.empty(9, dtype="<i4"))


# --------------------------------------------------------------------------- registry


def test_registry_names_every_manifest_encoding():
    """The manifest accepts exactly the registered encodings; each one's codec says its
    name, its numcodecs id, and is shared per configuration."""
    assert manifest.ENCODINGS == codecs.ENCODINGS == {"raw", "zstd"}
    for encoding in codecs.ENCODINGS:
        codec = codecs.get(encoding)
        assert codec.encoding == encoding
        assert codec.codec_id == f"ztensor.{encoding}"
        assert codecs.get(encoding) is codec
    assert isinstance(codecs.get("raw"), RawCodec)
    assert codecs.compressor(5) is codecs.get("zstd", level=5)
    with pytest.raises(ValueError, match="lz4"):
        codecs.get("lz4")


_DATA = np.sin(np.arange(30_000, dtype=np.float32) / 40)


@pytest.mark.parametrize("encoding", sorted(codecs.ENCODINGS))
def test_every_codec_method_gives_the_same_bytes(encoding):
    """Pieces, chunk blobs, streams and numcodecs' encode all decode to the input, through
    every decode method."""
    codec = codecs.get(encoding)
    raw = _DATA.tobytes()
    blob = codec.encode(_DATA)
    assert b"".join(bytes(p) for p in codec.encode_parts(_DATA)) == bytes(blob)
    stream = codec.stream_encoder()
    streamed = b"".join(bytes(stream.compress(raw[i : i + 7000])) for i in range(0, len(raw), 7000))
    streamed += stream.flush()
    for stored in (blob, codec.encode_chunk(_DATA), streamed):
        assert codec.decode_exact(stored, len(raw)).tobytes() == raw
        assert codec.decode_limited(stored, len(raw)).tobytes() == raw
        out = np.empty_like(_DATA)
        codec.decode_into(stored, out)
        np.testing.assert_array_equal(out, _DATA)
        sizes = [5000, 40_000, len(raw) - 45_000]
        pieces = list(codec.decode_pieces(stored, sizes))
        assert [p.size for p in pieces] == sizes
        assert b"".join(p.tobytes() for p in pieces) == raw
        with pytest.raises(CodecError):
            codec.decode_limited(stored, len(raw) - 1)
        for wrong in ([len(raw) - 1], [len(raw), 1]):
            with pytest.raises(CodecError):
                list(codec.decode_pieces(stored, wrong))


def test_raw_decoding_is_zero_copy():
    src = np.frombuffer(_DATA.tobytes(), dtype=np.uint8)
    raw = codecs.get("raw")
    assert np.shares_memory(raw.decode_exact(src, src.size), src)
    assert all(np.shares_memory(p, src) for p in raw.decode_pieces(src, [100, src.size - 100]))
    with pytest.raises(CodecError, match="only"):
        raw.decode_exact(src, src.size + 1)


# --------------------------------------------------------------------------- digests


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # reflected Castagnoli polynomial
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c_oracle(data: bytes) -> int:
    """CRC-32C straight from its definition (RFC 3720 B.4), independent of any library."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_answer():
    # the CRC-32C check value of the ASCII digits 1..9 (RFC 3720, appendix B.4)
    assert digests.compute("crc32c", b"123456789") == "crc32c:0xE3069283"
    assert crc32c_oracle(b"123456789") == 0xE3069283


def test_crc32c_of_a_mapped_file_copies_nothing(tmp_path):
    """Mapped components are hashed in place (memoryviews of an mmap, as the reader gives)."""
    p = tmp_path / "big.bin"
    p.write_bytes(np.random.default_rng(1).bytes(32 << 20))
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)[3:]
        tracemalloc.start()
        try:
            text = digests.compute("crc32c", view)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        want = digests.compute("crc32c", bytes(view))
        del view
    assert text == want and peak < 1 << 20, peak


@pytest.mark.parametrize("data", [b"", b"\x00", b"abc", bytes(range(256)) * 300])
def test_digest_strings_against_independent_libraries(data):
    crc = crc32c_oracle(data)
    assert digests.compute("crc32c", data) == f"crc32c:0x{crc:08X}"
    assert digests.compute("sha256", data) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_crc32c_zero_padded_uppercase():
    # find a short input whose CRC has a leading zero nibble
    for i in range(10_000):
        data = i.to_bytes(4, "little")
        if crc32c_oracle(data) < 1 << 28:
            break
    text = digests.compute("crc32c", data)
    assert text.startswith("crc32c:0x0") and len(text) == len("crc32c:0x") + 8
    assert text[9:] == text[9:].upper()


def test_incremental_hasher_equals_one_shot():
    data = np.random.default_rng(0).bytes(100_000)
    for algo in digests.ALGORITHMS:
        h = digests.Hasher(algo)
        for i in range(0, len(data), 7777):
            h.update(np.frombuffer(data[i : i + 7777], np.uint8))  # writable-or-not buffers
        assert h.text() == digests.compute(algo, data)


def test_matches_accepts_either_case_and_skips_unknown():
    data = b"hello"
    text = digests.compute("crc32c", data)
    assert digests.matches(text, data) is True
    assert digests.matches(text.lower(), data) is True
    assert digests.matches(text, b"hellO") is False
    sha = digests.compute("sha256", data)
    assert digests.matches("sha256:" + sha[7:].upper(), data) is True
    assert digests.matches("blake3:00", data) is None
    assert digests.matches("garbage", data) is None


@pytest.mark.parametrize("algo", ["crc32c", "sha256"])
def test_digests_verified_by_the_reference(zref, tmp_path, algo):
    arr = np.arange(3000, dtype=np.float32)
    p = tmp_path / "d.zt"
    with Writer(p) as w:
        w.add_tensor("z", arr, compress=True, checksum=algo)
        w.add_tensor("r", arr, checksum=algo)
    data = p.read_bytes()
    comps = {n: o["components"]["data"] for n, o in _manifest(data)["objects"].items()}
    for c in comps.values():  # our digest covers the stored bytes, computed independently
        stored = data[c["offset"] : c["offset"] + c["length"]]
        want = (
            f"crc32c:0x{crc32c_oracle(stored):08X}"
            if algo == "crc32c"
            else "sha256:" + hashlib.sha256(stored).hexdigest()
        )
        assert c["digest"] == want
    with zref.Reader(str(p)) as r:
        np.testing.assert_array_equal(r.read_tensor("z", verify_checksum=True), arr)
    # flip one stored byte of the frame: the reference's verification notices, so does ours
    c = comps["z"]
    bad = bytearray(data)
    bad[c["offset"] + c["length"] - 3] ^= 0x10
    p.write_bytes(bad)
    with zref.Reader(str(p)) as r, pytest.raises(zref.ZTensorError, match="(?i)checksum"):
        r.read_tensor("z", verify_checksum=True)
    with Reader(p) as r, pytest.raises(ChecksumError):
        r.read_tensor("z", verify_checksum=True)
