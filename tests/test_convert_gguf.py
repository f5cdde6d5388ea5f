"""``ztensor convert`` of GGUF files written by gguf.GGUFWriter: F32, F16, BF16 and quantized
tensors, metadata as attributes, row-major shapes, and truncated files refused."""

from __future__ import annotations

import resource
import struct

import ml_dtypes
import numpy as np
import pytest
from test_cli import assert_one_line_error, no_temp_files, ztensor

import ztensor_array as zt

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


@pytest.fixture
def gguf_file(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {
        "f32": rng.standard_normal((4, 6)).astype(np.float32),
        "f16": rng.standard_normal((3, 5, 2)).astype(np.float16),
        "bf16": rng.standard_normal((2, 32)).astype(ml_dtypes.bfloat16),
        "i32": rng.integers(-5, 5, 7).astype(np.int32),
    }
    quant_src = {
        "q8_0": (rng.standard_normal((4, 64)).astype(np.float32), Q.Q8_0),
        "q4_0": (rng.standard_normal((2, 64)).astype(np.float32), Q.Q4_0),
    }
    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "hi"])
    for name, arr in arrays.items():
        if arr.dtype == ml_dtypes.bfloat16:
            w.add_tensor(name, arr.view(np.uint8), raw_dtype=Q.BF16)
        else:
            w.add_tensor(name, arr)
    blocks = {}
    for name, (src, qtype) in quant_src.items():
        blocks[name] = gguf.quants.quantize(src, qtype)
        w.add_tensor(name, blocks[name], raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, arrays, blocks, {n: q for n, (_, q) in quant_src.items()}


@pytest.mark.parametrize("flags", [[], ["-c", "--checksum", "sha256"]])
def test_plain_tensors_metadata_and_lossless_blocks(gguf_file, tmp_path, flags):
    path, arrays, blocks, qtypes = gguf_file
    out = tmp_path / "tiny.zt"
    ztensor("convert", "-f", "gguf", path, "-o", out, *flags)
    reader = gguf.GGUFReader(str(path))  # the oracle
    with zt.Reader(out) as r:
        attrs = r.attributes
        assert attrs["general.name"] == "tiny" and attrs["general.architecture"] == "llama"
        assert attrs["llama.block_count"] == 2
        assert attrs["llama.rope.freq_base"] == 10000.0
        assert attrs["tokenizer.ggml.add_bos_token"] is True
        assert attrs["tokenizer.ggml.tokens"] == ["<s>", "</s>", "hi"]
        assert not any(k.startswith("GGUF.") for k in attrs)
        for name, arr in arrays.items():
            got = r.read_tensor(name)
            assert got.dtype == arr.dtype and got.shape == arr.shape  # row-major
            np.testing.assert_array_equal(got.view(np.uint8), arr.view(np.uint8))
        for t in reader.tensors:
            if t.name not in blocks:
                continue
            obj = r.manifest.objects[t.name]
            assert obj.format == "ggml_quantized"
            assert tuple(obj.shape) == tuple(reversed(t.shape.tolist()))
            stored = r.read_components(t.name)["blocks"]
            assert stored.tobytes() == np.asarray(t.data).tobytes() == blocks[t.name].tobytes()
            want = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
            np.testing.assert_array_equal(r.read_tensor(t.name), want)


def test_dequantize_flag(gguf_file, tmp_path):
    path, arrays, blocks, qtypes = gguf_file
    out = tmp_path / "deq.zt"
    ztensor("convert", path, "-o", out, "--dequantize", "-c")
    with zt.Reader(out) as r:
        for name, b in blocks.items():
            obj = r.manifest.objects[name]
            assert obj.format == "dense" and obj.attributes["gguf_type"] == qtypes[name].name
            want = gguf.quants.dequantize(b, qtypes[name])
            got = r.read_tensor(name)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want.reshape(got.shape))
        np.testing.assert_array_equal(r.read_tensor("f32"), arrays["f32"])


@pytest.mark.parametrize("keep", [100, 400, 700])
def test_truncated_gguf_is_refused(gguf_file, tmp_path, keep):
    path, *_ = gguf_file
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:keep])
    out = tmp_path / "cut.zt"
    assert_one_line_error(ztensor("convert", cut, "-o", out, check=False), "cut.gguf")
    assert not out.exists() and no_temp_files(tmp_path)


# --------------------------------------------------------------------------- hostile headers


def _string(text: str | bytes, order: str = "<") -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(f"{order}Q", len(raw)) + raw


def _gguf_bytes(kvs, tensors=(), data: bytes = b"", order: str = "<", pad: bool = True) -> bytes:
    """A GGUF v3 file built by hand: header, metadata, tensor infos, padding, data."""
    head = b"GGUF" + struct.pack(f"{order}IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    head += b"".join(tensors)
    return head + bytes(-len(head) % 32 if pad else 0) + data


def _tensor_info(name: str, dims, ggml_type: int, offset: int, order: str = "<") -> bytes:
    return (
        _string(name, order)
        + struct.pack(f"{order}I{len(dims)}Q", len(dims), *dims)
        + struct.pack(f"{order}IQ", ggml_type, offset)
    )


def _convert_bytes(tmp_path, data: bytes):
    src = tmp_path / "hostile.gguf"
    src.write_bytes(data)
    out = tmp_path / "hostile.zt"
    # the address-space cap turns a regression (memory grown without bound) into a failure
    proc = ztensor("convert", src, "-o", out, check=False, limit=(resource.RLIMIT_AS, 6 << 30))
    assert not out.exists() and no_temp_files(tmp_path)
    return proc


_ARRAY, _STRING, _UINT8, _UINT32 = 9, 8, 0, 4


def test_an_array_of_2_to_the_40_items_in_113_bytes_fails_fast(tmp_path):
    kv = _string("general.huge") + struct.pack("<IIQ", _ARRAY, _UINT8, 1 << 40)
    data = _gguf_bytes([kv + bytes(113 - 24 - len(kv))], pad=False)
    assert len(data) == 113
    assert_one_line_error(_convert_bytes(tmp_path, data), "hostile.gguf", "1099511627776")


@pytest.mark.parametrize(
    "kv",
    [
        _string("strings") + struct.pack("<IIQ", _ARRAY, _STRING, 1 << 40),
        _string("nested") + struct.pack("<IIQ", _ARRAY, _ARRAY, 1 << 40),
        struct.pack("<Q", 1 << 62) + b"key",
        _string("type") + struct.pack("<I", 77) + bytes(8),
    ],
    ids=["strings", "nested", "key", "type"],
)
def test_declared_counts_and_lengths_are_checked_against_the_file(tmp_path, kv):
    assert_one_line_error(_convert_bytes(tmp_path, _gguf_bytes([kv])), "hostile.gguf")


def test_a_string_cut_at_the_end_of_the_file_is_refused(tmp_path):
    kv = _string("general.name") + struct.pack("<IQ", _STRING, 100) + b"short"
    assert_one_line_error(_convert_bytes(tmp_path, _gguf_bytes([kv])), "general.name")


def test_counts_beyond_the_file_are_refused(tmp_path):
    head = b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0)
    assert_one_line_error(_convert_bytes(tmp_path, head + bytes(64)), "tensor count")
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 60)
    assert_one_line_error(_convert_bytes(tmp_path, head + bytes(64)), "metadata count")


def test_a_tensor_offset_that_wraps_around_2_to_the_64_is_refused(tmp_path):
    """The data area starts at byte 64 here; 2^64 - 64 + 64 wraps to 0 in uint64
    arithmetic, so the tensor would read the file's own header."""
    info = _tensor_info("w", [4], int(Q.F32), (1 << 64) - 64)
    data = _gguf_bytes([], [info], np.arange(4, dtype=np.float32).tobytes())
    assert len(data) - 16 == 64  # where the data area starts
    assert_one_line_error(_convert_bytes(tmp_path, data), "object 'w'", "beyond the end")
    # the same file with offset 0 is fine: the check is about the wrap, not the layout
    good = _gguf_bytes([], [_tensor_info("w", [4], int(Q.F32), 0)], data[-16:])
    (tmp_path / "good.gguf").write_bytes(good)
    ztensor("convert", tmp_path / "good.gguf", "-o", tmp_path / "good.zt")
    with zt.Reader(tmp_path / "good.zt") as r:
        np.testing.assert_array_equal(r.read_tensor("w"), np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("dims", [[1 << 32, 1 << 32], [0, 1 << 63], [1] * 100])
def test_tensor_dimensions_beyond_the_file_or_numpy_are_refused(tmp_path, dims):
    data = _gguf_bytes([], [_tensor_info("w", dims, int(Q.F32), 0)], bytes(16))
    assert_one_line_error(_convert_bytes(tmp_path, data), "hostile.gguf")


def test_big_endian_files_still_pass_the_header_check(tmp_path):
    """The walk reads a big-endian header as gguf.GGUFReader does (the oracle)."""
    from ztensor_array.convert.gguf import check_header

    kvs = [
        _string("tokens", ">")
        + struct.pack(">IIQ", _ARRAY, _STRING, 2)
        + _string("a", ">")
        + _string("bc", ">"),
        _string("general.alignment", ">") + struct.pack(">II", _UINT32, 64),
    ]
    info = _tensor_info("w", [6], int(Q.F32), 0, ">")
    head = _gguf_bytes(kvs, [info], order=">", pad=False)
    data = head + bytes(-len(head) % 64) + np.arange(6, dtype=">f4").tobytes()
    check_header(data, "be.gguf", gguf)
    check_header(data + bytes(40), "be.gguf", gguf)  # tensors need not reach the end
    (tmp_path / "be.gguf").write_bytes(data)
    oracle = gguf.GGUFReader(str(tmp_path / "be.gguf"))
    assert oracle.fields["tokens"].contents() == ["a", "bc"]
    assert oracle.tensors[0].data_offset == len(data) - 24
    with pytest.raises(zt.ZTensorError, match="beyond the end"):
        check_header(data[:-1], "be.gguf", gguf)
