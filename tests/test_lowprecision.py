"""f8_e4m3 / f8_e5m2 / complex64 / complex128: written so ztensor 1.1.1 still opens the file,
read back bit for bit here in both spellings (v1.2 storage + `type`, and the spec's direct
dtype), through numpy and torch, dense, sparse and chunked."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import ztensor
from hypothesis import given, settings
from hypothesis import strategies as st

import ztensor_array as zt
from ztensor_array import constants, manifest
from ztensor_array.errors import UnsupportedError
from ztensor_array.manifest import Component, Manifest, Object

ALL_BYTES = np.arange(256, dtype=np.uint8)
LOW = {
    "e4m3": ALL_BYTES.view(ml_dtypes.float8_e4m3fn).reshape(16, 16),
    "e5m2": ALL_BYTES.view(ml_dtypes.float8_e5m2),
    "c64": (np.arange(12) * 0.5 - 1j * np.arange(12)).astype(np.complex64).reshape(3, 4),
    "c128": np.array([1 + 2j, np.nan + 0j, -np.inf * 1j, 0j], dtype=np.complex128),
}


def _same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_reference_opens_and_reads_the_other_tensors(tmp_path, compress):
    path = tmp_path / "low.zt"
    plain = np.arange(10, dtype=np.float32)
    with zt.Writer(path) as w:
        for name, arr in LOW.items():
            w.add_tensor(name, arr, compress=compress, checksum="crc32c")
        w.add_tensor("plain", plain, compress=compress)
    ref = ztensor.Reader(str(path))
    assert sorted(ref.tensor_names) == sorted([*LOW, "plain"])
    np.testing.assert_array_equal(ref.read_tensor("plain"), plain)
    # 1.1.1 sees f8 as its u8 storage: the bytes are right even there
    assert ref.read_tensor("e4m3").tobytes() == LOW["e4m3"].tobytes()
    with zt.Reader(path, verify=True) as r:
        for name, arr in LOW.items():
            _same_bits(np.asarray(r.read_tensor(name)), arr)
        assert r.metadata("e4m3").dtype_str == "float8_e4m3"


def test_written_spelling(tmp_path):
    """dtype = a 1.1.1 storage dtype, `type` = the logical type as v1.2 spells it."""
    import cbor2

    path = tmp_path / "s.zt"
    with zt.Writer(path) as w:
        for name, arr in LOW.items():
            w.add_tensor(name, arr)
    raw = path.read_bytes()
    n = int.from_bytes(raw[-16:-8], "little")
    objs = cbor2.loads(raw[-16 - n : -16])["objects"]
    spelled = {
        k: (v["components"]["data"]["dtype"], v["components"]["data"]["type"])
        for k, v in objs.items()
    }
    assert spelled == {
        "e4m3": ("u8", "f8_e4m3fn"),
        "e5m2": ("u8", "f8_e5m2"),
        "c64": ("f32", "complex64"),
        "c128": ("f64", "complex128"),
    }
    assert objs["c64"]["shape"] == [3, 4]  # the logical shape; storage holds 2 floats each


def _write_raw(path, entries):
    """A file whose manifest we spell by hand (through our CBOR encoder), for spellings our
    Writer never produces: entries = name -> (logical array, dtype, type)."""
    data = bytearray(constants.MAGIC)
    objects = {}
    for name, (arr, dtype, type_) in entries.items():
        data += bytes(-len(data) % 64)
        comp = Component(dtype, len(data), arr.nbytes, type=type_)
        data += arr.tobytes()
        objects[name] = Object(arr.shape, "dense", {"data": comp})
    mbytes = manifest.encode(Manifest(objects))
    path.write_bytes(bytes(data) + mbytes + manifest.footer(mbytes))


def test_spec_literal_direct_dtypes(tmp_path):
    path = tmp_path / "spec.zt"
    _write_raw(
        path,
        {
            "e4m3": (LOW["e4m3"], "f8_e4m3", None),
            "e5m2": (LOW["e5m2"], "f8_e5m2", None),
            "c64": (LOW["c64"], "complex64", None),
            "c128": (LOW["c128"], "complex128", None),
            # a writer that sets both: the direct dtype and v1.2's name for it
            "both": (LOW["e4m3"], "f8_e4m3", "f8_e4m3fn"),
            # f8 over the other one-byte integer
            "i8": (LOW["e5m2"], "i8", "f8_e5m2"),
        },
    )
    with zt.Reader(path) as r:
        for name in LOW:
            _same_bits(np.asarray(r.read_tensor(name)), LOW[name])
        _same_bits(np.asarray(r.read_tensor("both")), LOW["e4m3"])
        _same_bits(np.asarray(r.read_tensor("i8")), LOW["e5m2"])


def test_impossible_type_over_storage_is_refused(tmp_path):
    path = tmp_path / "bad.zt"
    _write_raw(path, {"x": (np.zeros(4, np.uint8), "u8", "complex64")})
    with pytest.raises(UnsupportedError, match="cannot be stored as dtype 'u8'") as info:
        zt.Reader(path)
    assert info.value.obj == "x" and info.value.component == "data"


def test_torch_float8_and_complex_in_and_out(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    from ztensor_array import torch as zt_torch

    tensors = {
        "e4m3": torch.from_numpy(ALL_BYTES.copy()).view(torch.float8_e4m3fn).reshape(16, 16),
        "e5m2": torch.from_numpy(ALL_BYTES.copy()).view(torch.float8_e5m2),
        "c64": torch.from_numpy(LOW["c64"].copy()),
    }
    path = tmp_path / "t.zt"
    zt_torch.save_file(tensors, path)
    back = zt_torch.load_file(path)
    with zt.Reader(path) as r:
        for name, t in tensors.items():
            for got in (back[name], r.read_tensor(name, to="torch")):
                assert got.dtype == t.dtype and got.shape == t.shape
                assert got.view(torch.uint8).equal(t.view(torch.uint8))
        _same_bits(np.asarray(r.read_tensor("e4m3")), LOW["e4m3"])


def test_sparse_values(tmp_path):
    f8 = np.array([1.5, -2.0, 448.0], dtype=np.float32).astype(ml_dtypes.float8_e4m3fn)
    c128 = np.array([1 + 1j, -2j, 3.5], dtype=np.complex128)
    path = tmp_path / "s.zt"
    with zt.Writer(path) as w:
        w.add_sparse_csr("f8", f8, [2, 0, 1], [0, 1, 2, 3], (3, 3))
        w.add_sparse_coo("c", c128, [[0, 1, 2], [1, 1, 0]], (3, 2), compress=True)
        w.add_sparse_csr("c64", c128.astype(np.complex64), [0, 1, 0], [0, 2, 3], (2, 2))
        w.add_tensor("plain", np.ones(2))
    with zt.Reader(path) as r:
        m = r.read_tensor("f8")  # scipy has no float8: values widened exactly
        assert m.dtype == np.float32
        np.testing.assert_array_equal(m.toarray()[[0, 1, 2], [2, 0, 1]], [1.5, -2.0, 448.0])
        _same_bits(r.read_components("f8")["values"], f8)
        coo = r.read_tensor("c")
        _same_bits(coo.data, c128)  # bit for bit, -0.0 real part included
        np.testing.assert_array_equal(np.stack([coo.row, coo.col]), [[0, 1, 2], [1, 1, 0]])
        _same_bits(r.read_tensor("c64").data, c128.astype(np.complex64))
    ref = ztensor.Reader(str(path))
    np.testing.assert_array_equal(ref.read_tensor("plain"), np.ones(2))


def test_chunked_arrays(tmp_path):
    path = tmp_path / "c.zt"
    zt.to_ztensor(LOW["e4m3"], path, name="e4m3", chunks=(5, 7), compress=True)
    zt.to_ztensor(LOW["c64"], path, name="c64", chunks=(2, 3), mode="a")
    zt.to_ztensor(np.arange(3), path, name="plain", mode="a")
    with zt.Reader(path) as r:
        assert r.metadata("e4m3").layout == "chunked"
        _same_bits(np.asarray(r.read_tensor("e4m3")), LOW["e4m3"])
        _same_bits(np.asarray(r.read_tensor("c64")), LOW["c64"])
    _same_bits(np.asarray(zt.from_ztensor(path, "c64")), LOW["c64"])
    ref = ztensor.Reader(str(path))
    np.testing.assert_array_equal(ref.read_tensor("plain"), np.arange(3))


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["e4m3", "e5m2", "c64", "c128"]),
    raw=st.binary(min_size=0, max_size=96),
    compress=st.booleans(),
)
def test_property_any_bits_roundtrip(tmp_path_factory, kind, raw, compress):
    dt = LOW[kind].dtype
    raw = raw[: len(raw) // dt.itemsize * dt.itemsize]
    arr = np.frombuffer(raw, dtype=dt)
    path = tmp_path_factory.mktemp("h") / "h.zt"
    with zt.Writer(path) as w:
        w.add_tensor("x", arr, compress=compress)
    with zt.Reader(path) as r:
        _same_bits(np.asarray(r.read_tensor("x")), arr)
