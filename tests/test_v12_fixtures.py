"""Files written by the reference ztensor 1.2.3 (committed fixtures, see
tests/data/v12/make_fixtures.py) read back exactly; and we write f8/complex the way it does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cbor2
import numpy as np
import pytest

import ztensor_array as zt

HERE = Path(__file__).parent / "data" / "v12"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_v12_fixtures", HERE / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
EXPECTED = GEN.expected()


def _raw_manifest(path) -> dict:
    data = Path(path).read_bytes()
    n = int.from_bytes(data[-16:-8], "little")
    return cbor2.loads(data[-16 - n : -16])


def _same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_fixtures_exercise_v12_fields():
    """Guard: the committed files really carry what this module claims to test."""
    dense = _raw_manifest(HERE / "dense_v12.zt")
    assert dense["version"] == "1.2.0"
    comp = dense["objects"]["zstd_f32"]["components"]["data"]
    assert comp["encoding"] == "zstd" and comp["uncompressed_length"] == 64 * 16 * 4
    types = _raw_manifest(HERE / "types_v12.zt")["objects"]
    assert types["e4m3"]["components"]["data"]["type"] == "f8_e4m3fn"
    assert types["c64"]["components"]["data"]["dtype"] == "f32"
    assert isinstance(_raw_manifest(HERE / "attrs_v12.zt")["attributes"]["epoch"], int)


@pytest.mark.parametrize("verify", [False, True])
def test_dense_every_dtype(verify):
    with zt.Reader(HERE / "dense_v12.zt", verify=verify) as r:
        assert sorted(r.tensor_names) == sorted(EXPECTED["dense_v12.zt"])
        for name, want in EXPECTED["dense_v12.zt"].items():
            _same_bits(np.asarray(r.read_tensor(name)), want)


def test_f8_and_complex_types():
    with zt.Reader(HERE / "types_v12.zt", verify=True) as r:
        for name, want in EXPECTED["types_v12.zt"].items():
            _same_bits(np.asarray(r.read_tensor(name)), want)
        assert r.metadata("c64").dtype == np.complex64
        parts = r.read_components("e5m2")
        _same_bits(parts["data"], EXPECTED["types_v12.zt"]["e5m2"])


def test_quantized_group_and_sparse():
    exp = EXPECTED["layouts_v12.zt"]
    g = GEN.GPTQ
    with zt.Reader(HERE / "layouts_v12.zt", verify=True) as r:
        attrs = r.metadata("gptq").attributes
        assert attrs["source"] == b"gptq" and attrs["damp"] == 0.01 and attrs["desc_act"] is False
        groups = np.arange(g["cols"]) // g["group_size"]
        q, z, s = exp["gptq.q"], exp["gptq.z"], exp["gptq.scales"]
        want = ((q - z[groups]).astype(np.float32) * s[groups].astype(np.float32)).T
        np.testing.assert_array_equal(r.read_tensor("gptq"), want.astype(np.float16))
        parts = r.read_components("gptq")
        _same_bits(parts["packed_weight"], exp["gptq.packed_weight"].reshape(-1))
        _same_bits(parts["zeros"], exp["gptq.qzeros"].reshape(-1))
        csr = r.read_tensor("csr").toarray()
        coo = r.read_tensor("coo").toarray()
    want_csr = np.zeros((3, 3), np.float32)
    want_csr[[0, 1, 2], [2, 0, 1]] = [1.5, -2.0, 3.25]
    np.testing.assert_array_equal(csr, want_csr)
    want_coo = np.zeros((2, 4, 2), np.int64)
    want_coo[0, 1, 0] = 7
    want_coo[1, 0, 1] = 8
    np.testing.assert_array_equal(coo, want_coo)


def test_non_text_global_attributes():
    with zt.Reader(HERE / "attrs_v12.zt") as r:
        assert r.attributes == GEN.GLOBAL_ATTRS
        _same_bits(r.read_tensor("x"), EXPECTED["attrs_v12.zt"]["x"])


def test_we_write_f8_and_complex_as_v12_does(tmp_path):
    """Same component maps as ztensor 1.2.3 (dtype, type, key order, digest), bar offsets."""
    exp = EXPECTED["types_v12.zt"]
    path = tmp_path / "ours.zt"
    with zt.Writer(path) as w:
        for name in ("e4m3", "e5m2", "c64"):
            w.add_tensor(name, exp[name], checksum="crc32c")
    ours = _raw_manifest(path)["objects"]
    ref = _raw_manifest(HERE / "types_v12.zt")["objects"]
    for name in ("e4m3", "e5m2", "c64"):
        mine, theirs = ours[name]["components"]["data"], ref[name]["components"]["data"]
        assert list(mine) == list(theirs)
        mine.pop("offset"), theirs.pop("offset")
        assert mine == theirs
        assert ours[name]["shape"] == ref[name]["shape"]
