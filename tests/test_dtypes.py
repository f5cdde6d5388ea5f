"""The dtype table against independent oracles: numpy/ml_dtypes, torch, safetensors, gguf."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from conftest import ALL_DTYPES, CORE_DTYPES, LONG_NAME, NUMPY_OF

from ztensor_array import dtypes
from ztensor_array.errors import UnsupportedError, ZTensorError


def test_table_holds_the_17_spec_dtypes():
    assert set(dtypes.NAMES) == set(ALL_DTYPES)
    assert len(dtypes.NAMES) == 17
    assert dtypes.CORE_NAMES == frozenset(CORE_DTYPES)


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_numpy_mapping_and_itemsize(name):
    assert dtypes.to_numpy(name) == NUMPY_OF[name]
    assert dtypes.itemsize(name) == NUMPY_OF[name].itemsize
    assert dtypes.from_numpy(NUMPY_OF[name]) == name


@pytest.mark.parametrize("name", [d for d in ALL_DTYPES if NUMPY_OF[d].itemsize > 1])
def test_big_endian_numpy_maps_to_same_name(name):
    big = NUMPY_OF[name].newbyteorder(">")
    if big == NUMPY_OF[name]:  # ml_dtypes types have no byte order
        pytest.skip(f"{name}: ml_dtypes types carry no byte order")
    assert dtypes.from_numpy(big) == name
    assert dtypes.little_endian(big) == NUMPY_OF[name]


def test_f8_are_the_ocp_variants():
    import ml_dtypes

    assert dtypes.to_numpy("f8_e4m3") == np.dtype(ml_dtypes.float8_e4m3fn)
    assert dtypes.to_numpy("f8_e5m2") == np.dtype(ml_dtypes.float8_e5m2)
    with pytest.raises(UnsupportedError):
        dtypes.from_numpy(ml_dtypes.float8_e4m3fnuz)


@pytest.mark.parametrize("bad", ["f128", "float32", "", None, 3])
def test_unknown_names_raise_ztensor_error(bad):
    with pytest.raises(ZTensorError):
        dtypes.lookup(bad)


@pytest.mark.parametrize("bad", [np.dtype("U3"), np.dtype("O"), np.dtype("f16"), np.dtype("M8[s]")])
def test_numpy_without_equivalent_raises(bad):
    with pytest.raises(UnsupportedError):
        dtypes.from_numpy(bad)


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_legacy_long_names_roundtrip(name):
    long = dtypes.to_legacy(name)
    assert dtypes.from_legacy(long) == name
    if name in LONG_NAME:
        assert long == LONG_NAME[name]


def test_legacy_names_match_reference_dtype_str(zref):
    # the reference's own table of long names is the oracle for the 13 core dtypes
    assert set(zref.DTYPE_ZT_TO_NP) == {LONG_NAME[d] for d in CORE_DTYPES}
    for name in CORE_DTYPES:
        assert zref.DTYPE_ZT_TO_NP[dtypes.to_legacy(name)] == NUMPY_OF[name]


# ------------------------------------------------------------------------------ torch

try:
    import torch
except ImportError:  # torch is the optional `torch` extra
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is the optional `torch` extra")

TORCH_OF: dict = {}
if torch is not None:
    TORCH_OF = {
        "f64": torch.float64,
        "f32": torch.float32,
        "f16": torch.float16,
        "bf16": torch.bfloat16,
        "f8_e4m3": torch.float8_e4m3fn,
        "f8_e5m2": torch.float8_e5m2,
        "complex64": torch.complex64,
        "complex128": torch.complex128,
        "i64": torch.int64,
        "i32": torch.int32,
        "i16": torch.int16,
        "i8": torch.int8,
        "u64": torch.uint64,
        "u32": torch.uint32,
        "u16": torch.uint16,
        "u8": torch.uint8,
        "bool": torch.bool,
    }


@needs_torch
@pytest.mark.parametrize("name", ALL_DTYPES)
def test_torch_mapping(name):
    assert dtypes.to_torch(name) is TORCH_OF[name]
    assert dtypes.from_torch(TORCH_OF[name]) == name
    # same element width in both worlds
    assert torch.empty(0, dtype=TORCH_OF[name]).element_size() == NUMPY_OF[name].itemsize


@needs_torch
def test_torch_without_equivalent_raises():
    with pytest.raises(UnsupportedError):
        dtypes.from_torch(torch.quint8)


# ------------------------------------------------------------------------------ safetensors


def _safetensors_header(arrays) -> dict:
    from safetensors.numpy import save

    blob = save(arrays)
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n])


@pytest.mark.parametrize(
    "name", [d for d in ALL_DTYPES if d not in ("bf16", "f8_e4m3", "f8_e5m2", "complex128")]
)
def test_safetensors_names_from_the_real_library(name):
    pytest.importorskip("safetensors", reason="safetensors is in the `test` extra")
    arr = np.zeros(2, NUMPY_OF[name])
    try:
        header = _safetensors_header({"x": arr})
    except Exception as exc:  # the library itself may not accept every numpy dtype
        pytest.skip(f"safetensors.numpy cannot save {name}: {exc}")
    st = header["x"]["dtype"]
    assert dtypes.from_safetensors(st) == name
    assert dtypes.to_safetensors(name) == st


@needs_torch
def test_safetensors_bf16_and_f8_names_via_torch():
    pytest.importorskip("safetensors", reason="safetensors is in the `test` extra")
    from safetensors.torch import save

    for name in ("bf16", "f8_e4m3", "f8_e5m2"):
        blob = save({"x": torch.zeros(2, dtype=TORCH_OF[name])})
        (n,) = struct.unpack("<Q", blob[:8])
        st = json.loads(blob[8 : 8 + n])["x"]["dtype"]
        assert dtypes.from_safetensors(st) == name
        assert dtypes.to_safetensors(name) == st


def test_unknown_safetensors_name():
    with pytest.raises(UnsupportedError):
        dtypes.from_safetensors("F4")


# ------------------------------------------------------------------------------ gguf


def test_gguf_plain_types_from_the_real_library():
    gguf = pytest.importorskip("gguf", reason="gguf is in the `test` extra")
    plain = {"F64": "f64", "F32": "f32", "F16": "f16", "BF16": "bf16"}
    plain.update({"I64": "i64", "I32": "i32", "I16": "i16", "I8": "i8"})
    for ggml_name, name in plain.items():
        assert ggml_name in gguf.GGMLQuantizationType.__members__
        assert dtypes.from_gguf(ggml_name) == name
        assert dtypes.to_gguf(name) == ggml_name
        # one element per block, block bytes == our item size
        block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_name]]
        assert block == 1 and nbytes == dtypes.itemsize(name)
    with pytest.raises(UnsupportedError):
        dtypes.from_gguf("Q4_0")


# ------------------------------------------------------------------------------ v1.2 spelling


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_storage_spelling_is_readable_by_1_1_1(name):
    storage, type_ = dtypes.storage_spelling(name)
    assert storage in CORE_DTYPES  # 1.1.1 can open whatever we write
    assert dtypes.logical_name(storage, type_) == name
    # the storage dtype tiles the logical one exactly
    assert NUMPY_OF[name].itemsize % NUMPY_OF[storage].itemsize == 0


def test_logical_name_accepts_spec_spelling_and_rejects_unknown():
    assert dtypes.logical_name("u8", "f8_e4m3fn") == "f8_e4m3"
    assert dtypes.logical_name("f32", "complex64") == "complex64"
    assert dtypes.logical_name("f8_e5m2", None) == "f8_e5m2"
    with pytest.raises(UnsupportedError):
        dtypes.logical_name("u8", "f4_e2m1")
    # unknown (a newer writer's type: listed, not read) versus known but misplaced (refused)
    assert not dtypes.is_known_type("f4_e2m1")
    assert dtypes.is_known_type(None) and dtypes.is_known_type("f8_e4m3fn")
    assert dtypes.is_known_type("f32")
    with pytest.raises(UnsupportedError, match="cannot be stored"):
        dtypes.logical_name("u8", "f32")
