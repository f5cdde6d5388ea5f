"""codecs/: zstd frames (reference-compatible, size-bounded, bomb-proof) and digests."""

from __future__ import annotations

import hashlib
import tracemalloc

import cbor2
import google_crc32c
import numcodecs
import numpy as np
import pytest
import zstandard

from ztensor_array import Reader, Writer
from ztensor_array.codecs import digests, get_codec, register, zstd
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


# --------------------------------------------------------------------------- zstd


@pytest.mark.parametrize("level", [1, 3, 19])
def test_decodes_reference_frames_without_content_size(zref, tmp_path, level):
    arr = np.random.default_rng(level).standard_normal((64, 33)).astype(np.float32)
    frame = _reference_frame(zref, tmp_path, arr, level)
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN  # the trap
    with pytest.raises(zstandard.ZstdError):  # a one-shot decoder cannot do it
        zstandard.ZstdDecompressor().decompress(frame)
    out = zstd.decompress(frame, arr.nbytes)
    assert out.tobytes() == arr.tobytes()
    # and our frames for the same bytes are the reference's
    assert zstd.compress(arr.tobytes(), level) == frame


def test_our_frames_have_no_content_size():
    frame = zstd.compress(b"x" * 1000, 3)
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == b"x" * 1000


@pytest.mark.parametrize("level", [1, 3, 9, 19, 22])
def test_chunk_frames_record_their_size_at_every_level(level):
    """Frames of the chunked layout carry their decoded size (checked before decoding) and
    decode with zstandard, whichever zstd made them; bad levels are refused the same way."""
    data = np.sin(np.arange(50_000, dtype=np.float32) / 50).tobytes()
    frame = zstd.compress_sized(memoryview(data), level)
    assert zstandard.get_frame_parameters(frame).content_size == len(data)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert zstd.decompress(frame, len(data)).tobytes() == data
    with pytest.raises(ValueError):
        zstd.compress_sized(data, 23)


@pytest.mark.parametrize("level", range(1, 23))
def test_every_level_roundtrips(level):
    data = (np.arange(5000, dtype=np.int32) % 97).tobytes()
    frame = zstd.compress(data, level)
    assert len(frame) < len(data)
    assert zstd.decompress(frame, len(data)).tobytes() == data
    codec = zstd.ZstdCodec(level)
    assert bytes(codec.decode(codec.encode(np.frombuffer(data, np.uint8)))) == data


@pytest.mark.parametrize("level", [0, 23, -1, 3.0, True, "3"])
def test_bad_levels_rejected(level):
    with pytest.raises(ValueError):
        zstd.compress(b"abc", level)


def test_short_and_long_decodes_are_errors():
    data = bytes(range(256)) * 10
    frame = zstd.compress(data, 3)
    with pytest.raises(zstd.ZstdFrameError, match="only"):
        zstd.decompress(frame, len(data) + 1)
    with pytest.raises(zstd.ZstdFrameError, match="more than"):
        zstd.decompress(frame, len(data) - 1)
    with pytest.raises(zstd.ZstdFrameError):
        zstd.decompress(frame + frame, len(data))  # a second frame is "more"
    with pytest.raises(zstd.ZstdFrameError):
        zstd.decompress(frame + b"garbage", len(data))


@pytest.mark.parametrize(
    "junk", [b"", b"\x00" * 16, b"not a frame at all", zstd.compress(b"abc" * 99, 3)[:-4]]
)
def test_corrupt_frames(junk):
    with pytest.raises(zstd.ZstdFrameError):
        zstd.decompress(junk, 297)


def test_empty_payload():
    assert zstd.decompress(zstd.compress(b"", 3), 0).size == 0


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
        with pytest.raises(zstd.ZstdFrameError, match="more than"):
            zstd.decompress(frame, 4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_bomb_unbounded_variant_stops_at_limit():
    frame = _bomb(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(zstd.ZstdFrameError):
            zstd.decompress_unbounded(frame, 10_000)
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
    register()
    codec = numcodecs.get_codec({"id": "ztensor.zstd", "level": 7})
    assert isinstance(codec, zstd.ZstdCodec) and codec.level == 7
    raw = numcodecs.get_codec({"id": "ztensor.raw"})
    arr = np.arange(10, dtype="<i4")
    assert bytes(raw.decode(raw.encode(arr))) == arr.tobytes()
    out = np.empty_like(arr)
    codec.decode(codec.encode(arr), out=out)
    np.testing.assert_array_equal(out, arr)
    assert isinstance(get_codec("zstd", level=5), zstd.ZstdCodec)
    with pytest.raises(ValueError):
        get_codec("lz4")


def test_codec_decode_into_wrong_size_raises():
    codec = zstd.ZstdCodec(3)
    enc = codec.encode(np.arange(10, dtype="<i4"))
    with pytest.raises(ValueError):
        codec.decode(enc, out=np.empty(9, dtype="<i4"))


# --------------------------------------------------------------------------- digests


def test_crc32c_known_answer():
    # the CRC-32C check value of the ASCII digits 1..9 (RFC 3720, appendix B.4)
    assert digests.compute("crc32c", b"123456789") == "crc32c:0xE3069283"


@pytest.mark.parametrize("data", [b"", b"\x00", b"abc", bytes(range(256)) * 300])
def test_digest_strings_against_independent_libraries(data):
    crc = google_crc32c.value(data)
    assert digests.compute("crc32c", data) == f"crc32c:0x{crc:08X}"
    assert digests.compute("sha256", data) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_crc32c_zero_padded_uppercase():
    # find a short input whose CRC has a leading zero nibble
    for i in range(10_000):
        data = i.to_bytes(4, "little")
        if google_crc32c.value(data) < 1 << 28:
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
            f"crc32c:0x{google_crc32c.value(stored):08X}"
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
