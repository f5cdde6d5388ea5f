"""Manifest encoding/decoding and every structural validation at open.

Malformed files are built by hand (cbor2 + struct, see conftest.build_file), never through our
writer, and each must raise the right ZTensorError subclass naming file, object, component.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import subprocess
import sys

import cbor2
import numpy as np
import pytest
from conftest import MAGIC, build_file, component, dense_file
from hypothesis import given, settings
from hypothesis import strategies as st

import ztensor_array as za
from ztensor_array import Reader, layouts, manifest, validation
from ztensor_array.errors import (
    FormatError,
    TornFileError,
    UnsupportedError,
    ZTensorError,
)
from ztensor_array.layouts.base import Layout
from ztensor_array.manifest import Component, Manifest, Object
from ztensor_array.ops.repair import last_complete_state


def _dense(dtype, offset, length, shape, **extra):
    return {
        "shape": list(shape),
        "format": "dense",
        "components": {"data": component(dtype, offset, length, **extra)},
    }


def _open_fails(path, cls, *names):
    """Open must raise ``cls``; its message names the file and each of ``names``."""
    with pytest.raises(cls) as info:
        Reader(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for n in names:
        assert repr(n) in msg, (n, msg)
    return info.value


# --------------------------------------------------------------------------- dataclasses


def test_dataclasses_are_frozen():
    c = Component("f32", 64, 4)
    o = Object((1,), "dense", {"data": c})
    m = Manifest({"t": o})
    for obj, field in ((c, "offset"), (o, "shape"), (m, "version")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, 0)


def test_encode_decode_roundtrip():
    c = Component("u8", 64, 10, "zstd", "crc32c:0x0000ABCD", 16, "f8_e4m3fn")
    o = Object((4, 4), "dense", {"data": c}, {"k": [1, 2.5, "x"]})
    m = Manifest({"b": o, "a": Object((0,), "dense", {"data": Component("f32", 128, 0)})})
    back = manifest.decode(manifest.encode(m))
    assert back.version == "1.1.0"
    assert set(back.objects) == {"a", "b"}
    assert back.objects["b"] == o
    assert back.objects["a"].components["data"] == Component("f32", 128, 0)


def test_encoding_shape_is_the_reference_writers():
    # field order, sorted names, encoding omitted when raw, shortest ints: compare with
    # cbor2's own canonical-free encoding of the dict built in that order
    m = Manifest(
        {
            "z": Object((2,), "dense", {"data": Component("f32", 64, 8)}),
            "a": Object((3,), "sparse_coo", {"values": Component("f32", 128, 12, "zstd")}),
        }
    )
    want = cbor2.dumps(
        {
            "version": "1.1.0",
            "objects": {
                "a": {
                    "shape": [3],
                    "format": "sparse_coo",
                    "components": {
                        "values": {"dtype": "f32", "offset": 128, "length": 12, "encoding": "zstd"}
                    },
                },
                "z": {
                    "shape": [2],
                    "format": "dense",
                    "components": {"data": {"dtype": "f32", "offset": 64, "length": 8}},
                },
            },
        }
    )
    assert manifest.encode(m) == want


def test_names_sort_bytewise_not_by_code_point():
    # U+FF21 sorts after U+10000 by UTF-16 but before it by UTF-8 bytes; ASCII first
    names = ["\U00010000", "\uff21", "b", "B", "a"]
    m = Manifest({n: Object((0,), "dense", {"data": Component("u8", 64, 0)}) for n in names})
    order = list(cbor2.loads(manifest.encode(m))["objects"])
    assert order == sorted(names, key=lambda s: s.encode("utf-8"))
    assert order[:3] == ["B", "a", "b"]


def test_decode_accepts_any_cbor_layout(tmp_path):
    # indefinite-length maps and arrays, keys in a different order, non-shortest integers
    def indef_map(items):
        return b"\xbf" + b"".join(cbor2.dumps(k) + v for k, v in items) + b"\xff"

    comp = indef_map(
        [
            ("length", b"\x1b" + (8).to_bytes(8, "big")),  # 8 as a u64
            ("offset", b"\x19\x00\x40"),  # 64 as a u16
            ("dtype", cbor2.dumps("f32")),
        ]
    )
    obj = indef_map(
        [
            ("components", indef_map([("data", comp)])),
            ("format", cbor2.dumps("dense")),
            ("shape", b"\x9f\x02\xff"),
        ]
    )
    root = indef_map([("objects", indef_map([("t", obj)])), ("version", cbor2.dumps("1.1.0"))])
    data = np.array([1.5, -2.0], "<f4").tobytes()
    build_file(tmp_path / "a.zt", {}, {64: data}, manifest_bytes=root)
    with Reader(tmp_path / "a.zt") as r:
        np.testing.assert_array_equal(r.read_tensor("t"), [1.5, -2.0])


def test_unknown_keys_are_ignored(tmp_path):
    obj = _dense("u8", 64, 2, [2], future_field={"x": 1})
    obj["also_new"] = [1, 2]
    build_file(tmp_path / "a.zt", {"t": obj}, {64: b"\x07\x09"})
    with Reader(tmp_path / "a.zt") as r:
        assert r.read_tensor("t").tolist() == [7, 9]


def test_empty_file_is_48_bytes_and_valid(tmp_path):
    data = build_file(tmp_path / "e.zt", {}, {})
    assert len(data) == 8 + len(cbor2.dumps({"version": "1.1.0", "objects": {}})) + 16
    with Reader(tmp_path / "e.zt") as r:
        assert len(r) == 0


# --------------------------------------------------------------------------- container


def test_bad_leading_magic(tmp_path):
    p = tmp_path / "a.zt"
    dense_file(p, {"t": np.zeros(2, "<f4")}, head=b"ZTEN9999")
    err = _open_fails(p, FormatError)
    assert "magic" in str(err)


def test_bad_trailing_magic(tmp_path):
    p = tmp_path / "a.zt"
    dense_file(p, {"t": np.zeros(2, "<f4")}, tail=b"ZTENxxxx")
    _open_fails(p, TornFileError)


@pytest.mark.parametrize("size", [0, 5, 8, 23])
def test_too_short_files(tmp_path, size):
    p = tmp_path / "a.zt"
    p.write_bytes((MAGIC * 4)[:size])
    _open_fails(p, FormatError)


def test_manifest_size_above_the_cap(tmp_path):
    p = tmp_path / "a.zt"
    dense_file(p, {"t": np.zeros(2, "<f4")}, declared_size=(128 << 20) + 1)
    err = _open_fails(p, FormatError)
    assert "128 MiB" in str(err)


@pytest.mark.parametrize("delta", [1, 100, 1 << 20])
def test_manifest_reaching_before_byte_8(tmp_path, delta):
    p = tmp_path / "a.zt"
    data = dense_file(p, {"t": np.zeros(2, "<f4")})
    too_big = len(data) - 16 - 8 + delta  # would start inside the header magic
    p.write_bytes(data[:-16] + struct.pack("<Q", too_big) + MAGIC)
    _open_fails(p, FormatError)


def test_manifest_size_too_small_is_rejected(tmp_path):
    # declared size shorter than the real CBOR: the range holds a partial item
    p = tmp_path / "a.zt"
    data = dense_file(p, {"t": np.zeros(2, "<f4")})
    real = struct.unpack("<Q", data[-16:-8])[0]
    p.write_bytes(data[:-16] + struct.pack("<Q", real - 3) + MAGIC)
    _open_fails(p, FormatError)


def test_trailing_bytes_after_cbor_item(tmp_path):
    p = tmp_path / "a.zt"
    mb = cbor2.dumps({"version": "1.1.0", "objects": {}}) + b"\x00"
    build_file(p, {}, {}, manifest_bytes=mb)
    err = _open_fails(p, FormatError)
    assert "trailing" in str(err)


@pytest.mark.parametrize("prefix", [b"\x81" * 5000, b"\xa1\x61k" * 3000, b"\x9f" * 5000])
def test_deep_cbor_nesting(tmp_path, prefix):
    p = tmp_path / "a.zt"
    build_file(p, {}, {}, manifest_bytes=prefix + b"\x00")
    _open_fails(p, FormatError)


@pytest.mark.parametrize(
    "mb",
    [
        b"\x9b" + (1 << 60).to_bytes(8, "big"),  # array of 2**60 items
        b"\x5b" + (1 << 62).to_bytes(8, "big"),  # byte string of 2**62 bytes
        b"\xbb" + (1 << 40).to_bytes(8, "big"),  # map of 2**40 pairs
        b"\xff",
        b"",
    ],
)
def test_cbor_headers_claiming_huge_sizes(tmp_path, mb):
    p = tmp_path / "a.zt"
    build_file(p, {}, {}, manifest_bytes=mb)
    _open_fails(p, FormatError)


@pytest.mark.parametrize(
    "root",
    [
        [],
        {"version": 1, "objects": {}},
        {"version": "1.1.0", "objects": []},
        {"version": "1.1.0", "objects": {1: {}}},
        {"version": "1.1.0", "objects": {}, "attributes": [1]},
    ],
)
def test_wrong_root_types(tmp_path, root):
    p = tmp_path / "a.zt"
    build_file(p, {}, {}, manifest_bytes=cbor2.dumps(root))
    _open_fails(p, FormatError)


_DENSE = {"a": {"shape": [4], "format": "dense", "components": {"data": component("f32", 64, 16)}}}


@pytest.mark.parametrize(
    "root, missing",
    [
        ({"objects": _DENSE}, "version"),
        ({"version": "1.1.0"}, "objects"),
        ({"version": "1.1.0", "attributes": {"k": "v"}}, "objects"),
        ({}, "version"),
    ],
)
def test_version_and_objects_are_required_as_the_reference_requires(tmp_path, zref, root, missing):
    """A manifest without `version` or `objects` is not an empty or default file: 1.1.1
    refuses it ("missing field"), and so do we, naming what is missing."""
    p = tmp_path / "a.zt"
    build_file(p, {}, {64: np.arange(4, dtype="<f4").tobytes()}, manifest_bytes=cbor2.dumps(root))
    with pytest.raises(Exception, match=f"missing field `{missing}`"):
        zref.Reader(str(p))
    with pytest.raises(FormatError, match=f"no {missing}"):
        Reader(p)
    # and repair does not take such a manifest for a complete state
    assert last_complete_state(p) is None
    # with both present (objects empty or not) both implementations open the file
    for objects in ({}, _DENSE):
        build_file(p, objects, {64: np.arange(4, dtype="<f4").tobytes()})
        with Reader(p) as r:
            assert r.tensor_names == zref.Reader(str(p)).tensor_names == list(objects)


def test_unsupported_major_version(tmp_path):
    p = tmp_path / "a.zt"
    build_file(p, {}, {}, version="2.0.0")
    _open_fails(p, UnsupportedError)


# --------------------------------------------------------------------------- objects


@pytest.mark.parametrize(
    "obj",
    [
        {"shape": "2", "format": "dense", "components": {}},
        {"shape": [-1], "format": "dense", "components": {}},
        {"shape": [1.5], "format": "dense", "components": {}},
        {"shape": [2], "format": 7, "components": {}},
        {"shape": [2], "format": "dense", "components": []},
        {"shape": [2], "format": "dense", "components": {"data": [1]}},
        {"shape": [2], "format": "dense", "components": {"data": {"dtype": "u8"}}},
        {"shape": [2], "format": "dense", "components": {"data": component("u8", -64, 2)}},
        {"shape": [2], "format": "dense", "components": {"data": component("u8", 64, 2.0)}},
        {"shape": [2], "format": "dense", "components": {"data": component(8, 64, 2)}},
        {"shape": [2], "format": "dense", "components": {}},  # no 'data'
    ],
)
def test_malformed_objects(tmp_path, obj):
    p = tmp_path / "a.zt"
    build_file(p, {"bad": obj}, {64: b"\x01\x02"})
    _open_fails(p, FormatError, "bad")


def test_misaligned_component(tmp_path):
    p = tmp_path / "a.zt"
    build_file(p, {"t": _dense("u8", 72, 4, [4])}, {72: b"abcd"})
    err = _open_fails(p, FormatError, "t", "data")
    assert err.obj == "t" and err.component == "data"
    assert "multiple of 64" in str(err)


@pytest.mark.parametrize("offset,length", [(0, 4), (4, 4), (64, 10_000), (1 << 62, 4)])
def test_component_out_of_bounds(tmp_path, offset, length):
    p = tmp_path / "a.zt"
    obj = _dense("u8", offset, length, [length])
    build_file(p, {"t": obj}, {64: b"abcd"}, pad_to=128)
    # offsets 0 and 4 are unaligned too; either rule may fire, both are FormatErrors
    err = _open_fails(p, FormatError, "t", "data")
    assert err.component == "data"


def test_component_reaching_into_manifest(tmp_path):
    p = tmp_path / "a.zt"
    # blob area ends at 68 (manifest follows immediately); claim 8 bytes from 64
    build_file(p, {"t": _dense("u8", 64, 8, [8])}, {64: b"abcd"})
    _open_fails(p, FormatError, "t", "data")


def test_overlapping_components(tmp_path):
    p = tmp_path / "a.zt"
    objects = {
        "a": _dense("u8", 64, 100, [100]),
        "b": _dense("u8", 128, 8, [8]),  # inside a's bytes [64, 164)
    }
    build_file(p, objects, {64: bytes(200)})
    err = _open_fails(p, FormatError, "a", "b", "data")
    assert "shared" in str(err)


def test_overlap_between_roles_of_one_object(tmp_path):
    p = tmp_path / "a.zt"
    obj = {
        "shape": [2, 2],
        "format": "sparse_csr",
        "components": {
            "values": component("f32", 64, 8),
            "indices": component("u64", 64, 16),
            "indptr": component("u64", 128, 24),
        },
    }
    build_file(p, {"m": obj}, {64: bytes(88)})
    _open_fails(p, FormatError, "m")


def test_zero_length_components_may_share_an_offset(tmp_path):
    p = tmp_path / "a.zt"
    objects = {"a": _dense("f32", 64, 0, [0, 3]), "b": _dense("u8", 64, 0, [0])}
    build_file(p, objects, {}, pad_to=64)
    with Reader(p) as r:
        assert r.read_tensor("a").shape == (0, 3)
        assert r.read_tensor("b").shape == (0,)


@pytest.mark.parametrize("length", [12, 20, 0])
def test_raw_length_differs_from_shape_times_itemsize(tmp_path, length):
    p = tmp_path / "a.zt"
    build_file(p, {"t": _dense("f32", 64, length, [2, 2])}, {64: bytes(32)})
    err = _open_fails(p, FormatError, "t", "data")
    assert "16" in str(err)


def test_raw_length_not_multiple_of_itemsize(tmp_path):
    p = tmp_path / "a.zt"
    obj = {
        "shape": [2],
        "format": "sparse_coo",
        "components": {"values": component("f32", 64, 6), "coords": component("u64", 128, 8)},
    }
    build_file(p, {"s": obj}, {64: bytes(80)})
    _open_fails(p, FormatError, "s")


@pytest.mark.parametrize(
    "shape", [[1 << 32, 1 << 32], [1 << 63], [1 << 64, 0, 1 << 64], [2] * 70, [(1 << 64) - 1]]
)
def test_shape_product_overflow(tmp_path, shape):
    p = tmp_path / "a.zt"
    build_file(p, {"t": _dense("f32", 64, 16, shape)}, {64: bytes(16)})
    _open_fails(p, FormatError, "t")


def test_huge_zstd_declared_size_is_refused(tmp_path):
    # a 16-byte frame cannot decode to 2**40 bytes: refused before any allocation
    p = tmp_path / "a.zt"
    build_file(p, {"t": _dense("u8", 64, 16, [1 << 40], encoding="zstd")}, {64: bytes(16)})
    _open_fails(p, FormatError, "t", "data")


def test_unknown_dtype(tmp_path):
    p = tmp_path / "a.zt"
    build_file(p, {"t": _dense("f4_e2m1", 64, 2, [4])}, {64: b"ab"})
    err = _open_fails(p, UnsupportedError, "t", "data")
    assert isinstance(err, ZTensorError)
    assert "f4_e2m1" in str(err)


def test_unknown_logical_type_opens_but_does_not_read(tmp_path):
    """Like an unknown format (a newer writer's type); more in test_unknown_type.py."""
    p = tmp_path / "a.zt"
    build_file(p, {"t": _dense("u8", 64, 2, [7], type="f4_e2m1")}, {64: b"ab"})
    with Reader(p) as r:
        assert r.tensor_names == ["t"] and r.metadata("t").shape == (7,)
        assert r.read_component("t", "data").tobytes() == b"ab"
        with pytest.raises(UnsupportedError) as info:
            r.read_tensor("t")
    msg = str(info.value)
    assert str(p) in msg and "'t'" in msg and "'data'" in msg and "'f4_e2m1'" in msg


def test_known_logical_type_over_wrong_dtype(tmp_path):
    p = tmp_path / "a.zt"
    build_file(p, {"t": _dense("f64", 64, 8, [1], type="f8_e5m2")}, {64: bytes(8)})
    _open_fails(p, UnsupportedError, "t", "data", "f8_e5m2")


def test_unknown_encoding(tmp_path):
    p = tmp_path / "a.zt"
    build_file(p, {"t": _dense("u8", 64, 2, [2], encoding="lz4")}, {64: b"ab"})
    err = _open_fails(p, UnsupportedError, "t", "data")
    assert "lz4" in str(err)


def test_unknown_format_is_listed_but_not_readable(tmp_path):
    p = tmp_path / "a.zt"
    objects = {
        "odd": {
            "shape": [4],
            "format": "hologram",
            "components": {"blob": component("u8", 64, 4)},
        },
        "ok": _dense("u8", 128, 2, [2]),
    }
    build_file(p, objects, {64: b"abcd", 128: b"\x05\x06"})
    with Reader(p) as r:
        assert r.tensor_names == ["odd", "ok"]
        assert r.metadata("odd").layout == "hologram"
        assert r.read_tensor("ok").tolist() == [5, 6]
        with pytest.raises(UnsupportedError) as info:
            r.read_tensor("odd")
        assert str(p) in str(info.value) and "'odd'" in str(info.value)
        assert "hologram" in str(info.value)


# --------------------------------------------------------------------------- sparse structure


def _csr(rows, cols, nnz, idx="u64", indptr_len=None):
    n_ptr = rows + 1 if indptr_len is None else indptr_len
    isz = {"u64": 8, "i32": 4, "u8": 1}[idx]
    v_len, i_len, p_len = nnz * 4, nnz * isz, n_ptr * isz
    return {
        "shape": [rows, cols],
        "format": "sparse_csr",
        "components": {
            "values": component("f32", 64, v_len),
            "indices": component(idx, 64 + 64 * (1 + v_len // 64), i_len),
            "indptr": component(idx, 1024, p_len),
        },
    }


def test_csr_indptr_wrong_length_at_open(tmp_path):
    p = tmp_path / "a.zt"
    build_file(p, {"m": _csr(3, 3, 2, indptr_len=3)}, {}, pad_to=2048)
    _open_fails(p, FormatError, "m", "indptr")


def test_csr_values_indices_count_mismatch_at_open(tmp_path):
    p = tmp_path / "a.zt"
    obj = _csr(3, 3, 2)
    obj["components"]["values"]["length"] = 12
    build_file(p, {"m": obj}, {}, pad_to=2048)
    _open_fails(p, FormatError, "m")


def test_csr_index_dtype_must_be_integer(tmp_path):
    p = tmp_path / "a.zt"
    obj = _csr(3, 3, 2)
    obj["components"]["indices"]["dtype"] = "f64"
    build_file(p, {"m": obj}, {}, pad_to=2048)
    _open_fails(p, FormatError, "m", "indices")


def test_csr_not_2d(tmp_path):
    p = tmp_path / "a.zt"
    obj = _csr(3, 3, 2)
    obj["shape"] = [3, 3, 1]
    build_file(p, {"m": obj}, {}, pad_to=2048)
    _open_fails(p, FormatError, "m")


def test_coo_coords_wrong_length_at_open(tmp_path):
    p = tmp_path / "a.zt"
    obj = {
        "shape": [4, 4],
        "format": "sparse_coo",
        "components": {"values": component("f32", 64, 12), "coords": component("u64", 128, 40)},
    }
    build_file(p, {"c": obj}, {}, pad_to=256)
    _open_fails(p, FormatError, "c", "coords")


def test_registered_layout_check_is_used(tmp_path):
    calls = []

    class Custom(Layout):
        format = "test_custom"

        def check(self, name, obj, path):
            calls.append(name)
            if obj.attributes.get("bad"):
                raise FormatError("custom rule broken", path=path, obj=name)

    layouts.register(Custom())
    try:
        p = tmp_path / "a.zt"
        obj = {
            "shape": [1],
            "format": "test_custom",
            "attributes": {"bad": True},
            "components": {"x": component("u8", 64, 1)},
        }
        build_file(p, {"q": obj}, {64: b"\x01"})
        _open_fails(p, FormatError, "q")
        assert calls == ["q"]
    finally:
        layouts.unregister("test_custom")


# ----------------------------------------------------------------- v1.2 uncompressed_length


def _frame(data: bytes) -> bytes:
    import zstandard

    c = zstandard.ZstdCompressor(level=3).compressobj()
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    "encoding,ulen,stored",
    [
        ("zstd", 20, _frame(bytes(20))),  # shape [4] f32 is 16 bytes, not 20
        ("zstd", 12, _frame(bytes(12))),
        ("raw", 20, bytes(20)),
        ("raw", 20, bytes(16)),  # disagrees with the raw length itself
    ],
    ids=["zstd-long", "zstd-short", "raw-long", "raw-mismatch"],
)
def test_uncompressed_length_must_agree_with_shape(tmp_path, encoding, ulen, stored):
    p = tmp_path / "a.zt"
    extra = {"uncompressed_length": ulen}
    if encoding != "raw":
        extra["encoding"] = encoding
    build_file(p, {"t": _dense("f32", 64, len(stored), [4], **extra)}, {64: stored})
    _open_fails(p, FormatError, "t", "data")


def test_uncompressed_length_not_a_multiple_of_itemsize(tmp_path):
    # sparse values carry no size in the manifest except this field
    p = tmp_path / "a.zt"
    frame = _frame(bytes(10))
    obj = {
        "shape": [4, 4],
        "format": "sparse_coo",
        "components": {
            "values": component("f32", 64, len(frame), encoding="zstd", uncompressed_length=10),
            "coords": component("u64", 128, 32),
        },
    }
    build_file(p, {"c": obj}, {64: frame, 128: bytes(32)})
    _open_fails(p, FormatError, "c", "values")


def test_correct_uncompressed_length_is_read(tmp_path):
    p = tmp_path / "a.zt"
    arr = np.arange(4, dtype="<f4")
    frame = _frame(arr.tobytes())
    obj = _dense("f32", 64, len(frame), [4], encoding="zstd", uncompressed_length=16)
    build_file(p, {"t": obj}, {64: frame})
    with Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("t"), arr)


_ISZ = {"f32": 4, "u8": 1, "i16": 2, "f64": 8}
_BAD = {  # (where, key) -> values the full checks must refuse or treat differently
    ("obj", "shape"): ["x", [True, 2], [1.0], [-1, -2], [2**70, 2**70]],
    ("obj", "format"): ["sparse_csr", 3, "zz"],
    ("obj", "attributes"): [None, {"a": 1}, [1]],
    ("obj", "k"): [1],
    ("comp", "dtype"): ["bogus", 4, "f32", "u8"],
    ("comp", "offset"): [0, 65, -64, 1 << 40, "64", 64, 192],
    ("comp", "length"): [-1, 0, 1, 130, 1 << 40],
    ("comp", "encoding"): ["raw", "zstd", "lz4", None],
    ("comp", "digest"): ["crc32c:0x00000000", 7, None],
    ("comp", "type"): ["complex64", "x"],
    ("comp", "uncompressed_length"): [0, 8, 64],
    ("comps", "values"): [{"dtype": "u8", "offset": 64, "length": 1}],
}


@st.composite
def _near_plain_objects(draw):
    """Valid plain dense objects at distinct offsets, some with one field changed."""
    objects = {}
    for i, name in enumerate(draw(st.lists(st.sampled_from("abcd"), min_size=1, unique=True))):
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        dtype = draw(st.sampled_from(sorted(_ISZ)))
        comp = {"dtype": dtype, "offset": 64 * (i + 1), "length": math.prod(shape) * _ISZ[dtype]}
        obj = {"shape": shape, "format": "dense", "components": {"data": comp}}
        for _ in range(draw(st.integers(0, 2))):
            where, key = draw(st.sampled_from(sorted(_BAD)))
            value = draw(st.sampled_from(_BAD[where, key]))
            {"obj": obj, "comp": comp, "comps": obj["components"]}[where][key] = value
        objects[name] = obj
    return objects


@settings(max_examples=400, deadline=None)
@given(objects=_near_plain_objects())
def test_quick_validation_accepts_only_what_the_full_checks_accept(objects):
    """The per-open fast pass over raw maps agrees with parsing and checking every object:
    it never accepts a manifest the full checks refuse, nor reports other byte spans."""
    blob_end = 64 * 6
    quick = Manifest(manifest.ObjectTable(objects), None, "1.1.0")
    try:
        table = manifest.ObjectTable(objects)
        parsed = {n: table[n] for n in table}
        validation.validate(Manifest(parsed, None, "1.1.0"), blob_end)
        full_ok = True
    except ZTensorError:
        full_ok = False
    try:
        validation.validate(quick, blob_end)
        quick_ok = True
    except ZTensorError:
        quick_ok = False
    assert quick_ok == full_ok
    if quick_ok:
        for name, (shape, dtype, offset, length) in quick.objects.plain_items():
            comp = parsed[name].components["data"]
            assert shape == parsed[name].shape
            assert dtype == comp.dtype
            assert offset == (comp.offset if comp.encoding == "raw" else -1)
            assert length == comp.length
            assert parsed[name].format == "dense" and set(parsed[name].components) == {"data"}


def test_listing_a_plain_file_parses_no_objects_and_matches_parsed_metadata(tmp_path):
    arrays = {"a": np.ones((2, 3), np.float32), "b": np.arange(5, dtype=np.int16), "c": np.ones(())}
    p = tmp_path / "l.zt"
    za.save_file(arrays, p)
    za.save_file(arrays, tmp_path / "ref.zt")
    with Reader(p) as r:
        listed = [(m.name, m.shape, m.dtype, m.layout, m.dtype_str) for m in r]
        assert r.manifest.objects._parsed == {}  # nothing parsed to list
        expected = [
            (n, o.shape, m.dtype, o.format, m.dtype_str)
            for n in r.tensor_names
            for o in [r.manifest.objects[n]]
            for m in [za.reader.TensorMetadata(n, o)]
        ]
    assert listed == expected
    assert [(n, s, d) for n, s, d, _, _ in listed] == [
        (n, a.shape, a.dtype) for n, a in sorted(arrays.items())
    ]


def test_import_loads_no_layout_beyond_dense_and_no_thread_pool():
    """Layout modules are imported by format name when first needed, so `import
    ztensor_array` stays cheap; the chunked layout's thread pool only when a read uses it,
    ml_dtypes (~0.5 s) only when a bf16 or f8 dtype is used."""
    code = (
        "import sys, ztensor_array\n"
        "print(sorted(m for m in sys.modules if m.startswith('ztensor_array.layouts')))\n"
        "print('concurrent.futures' in sys.modules, 'ml_dtypes' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == str(
        [
            "ztensor_array.layouts",
            "ztensor_array.layouts.base",
            "ztensor_array.layouts.dense",
            "ztensor_array.layouts.select",  # selections of dense reads: a small pure module
        ]
    )
    assert out[1] == "False False"
