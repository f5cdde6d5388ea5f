"""ggml_quantized: GGUF blocks kept byte for byte, dequantized exactly as the gguf package does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import ztensor

import ztensor_array as zt
from ztensor_array.errors import UnsupportedError, ZTensorError

gguf = pytest.importorskip("gguf")
from gguf import quants  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType  # noqa: E402

BLOCK_TYPES = [t for t, (elems, _) in GGML_QUANT_SIZES.items() if elems > 1]


def _quantizable() -> list[GGMLQuantizationType]:
    """Every block type the installed gguf package can quantize (asked, not assumed)."""
    probe = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
    out = []
    for t in BLOCK_TYPES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quants.quantize(probe, t)
        except NotImplementedError:
            continue
        out.append(t)
    return out


QUANTIZABLE = _quantizable()


def _dequantizable(t) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quants.dequantize(np.zeros((1, GGML_QUANT_SIZES[t][1]), np.uint8), t)
    except NotImplementedError:
        return False
    return True


def test_quantizable_set_is_not_empty():
    assert {"Q4_0", "Q8_0"} <= {t.name for t in QUANTIZABLE}


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda t: t.name)
@pytest.mark.parametrize("compress", [False, True])
def test_quantized_roundtrip_byte_identical(tmp_path, qtype, compress):
    rng = np.random.default_rng(qtype.value)
    x = rng.standard_normal((3, 4, 512)).astype(np.float32)
    blocks = quants.quantize(x, qtype)
    path = tmp_path / "g.zt"
    with zt.Writer(path) as w:
        w.add_ggml_quantized("t", blocks, qtype, x.shape, compress=compress, checksum="sha256")
    with zt.Reader(path, verify=True) as r:
        raw = r.read_components("t")["blocks"]
        assert raw.dtype == np.uint8 and raw.tobytes() == blocks.tobytes()
        got = r.read_tensor("t")
        assert r.metadata("t").attributes["ggml_type"] == qtype.name
        assert r.metadata("t").dtype == np.float32
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, quants.dequantize(blocks, qtype))


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
def test_any_block_type_keeps_bytes(tmp_path, qtype):
    """Types gguf cannot quantize (K-quants, IQ*): random blocks survive byte for byte and
    dequantize as gguf does (NaNs from random f16 scales included, position for position)."""
    elems, size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(1000 + qtype.value)
    blocks = rng.integers(0, 256, size=(2, 3 * size), dtype=np.uint8)
    shape = (2, 3 * elems)
    path = tmp_path / "b.zt"
    with zt.Writer(path) as w:
        w.add_ggml_quantized("t", blocks, qtype.name, shape)
    with zt.Reader(path) as r:
        assert r.read_components("t")["blocks"].tobytes() == blocks.tobytes()
        if _dequantizable(qtype):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = quants.dequantize(blocks, qtype)
                got = r.read_tensor("t")
            np.testing.assert_array_equal(got, want)
        else:
            with pytest.raises(UnsupportedError, match="read_components"):
                r.read_tensor("t")


def test_gguf_file_roundtrip_block_for_block(tmp_path):
    """The converter path: GGUF tensor -> .zt -> the same bytes a GGUF writer accepts."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    q8 = quants.quantize(x, GGMLQuantizationType.Q8_0)
    src = tmp_path / "m.gguf"
    gw = gguf.GGUFWriter(str(src), "llama")
    gw.add_tensor("w", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()
    (t,) = gguf.GGUFReader(str(src)).tensors
    path = tmp_path / "m.zt"
    with zt.Writer(path) as w:
        w.add_ggml_quantized(t.name, t.data, int(t.tensor_type), tuple(reversed(t.shape)))
    with zt.Reader(path) as r:
        assert r.metadata("w").shape == (8, 64)
        back = r.read_components("w")["blocks"]
        np.testing.assert_array_equal(r.read_tensor("w"), quants.dequantize(q8, t.tensor_type))
    assert back.tobytes() == np.asarray(t.data).tobytes() == q8.tobytes()


def test_write_errors(tmp_path):
    q = quants.quantize(np.zeros((2, 64), np.float32), GGMLQuantizationType.Q4_0)
    with zt.Writer(tmp_path / "e.zt") as w:
        with pytest.raises(ZTensorError, match="do not match shape"):
            w.add_ggml_quantized("a", q, "Q4_0", (2, 96))
        with pytest.raises(ZTensorError, match="multiple of"):
            w.add_ggml_quantized("b", q, "Q4_0", (4, 16))
        with pytest.raises(ZTensorError, match="dense"):
            w.add_ggml_quantized("c", q, "F16", (2, 36))
        with pytest.raises(UnsupportedError, match="unknown GGML type"):
            w.add_ggml_quantized("d", q, "Q9_9", (2, 64))
        with pytest.raises(ZTensorError, match="uint8"):
            w.add_ggml_quantized("e", q.view(np.int8), "Q4_0", (2, 64))
        w.add_tensor("ok", np.zeros(1))


def test_reference_opens_file_with_blocks(tmp_path):
    q = quants.quantize(np.ones((1, 32), np.float32), GGMLQuantizationType.Q4_0)
    path = tmp_path / "r.zt"
    with zt.Writer(path) as w:
        w.add_tensor("bias", np.arange(3, dtype=np.float32))
        w.add_ggml_quantized("w", q, "Q4_0", (1, 32))
    r = ztensor.Reader(str(path))
    assert sorted(r.tensor_names) == ["bias", "w"]
    np.testing.assert_array_equal(r.read_tensor("bias"), np.arange(3, dtype=np.float32))
