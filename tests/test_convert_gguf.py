"""``ztensor convert`` of GGUF files written by gguf.GGUFWriter: F32, F16, BF16 and quantized
tensors, metadata as attributes, row-major shapes, and truncated files refused."""

from __future__ import annotations

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
