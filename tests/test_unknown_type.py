"""A component `type` this version does not know (a newer writer's logical type).

Like an unknown format: the file opens, the object is listed and verifies, its stored values
are reachable through ``read_component``, and reading its values raises UnsupportedError
naming the file, object, component and type. Other tensors read normally.
"""

from __future__ import annotations

import json

import google_crc32c
import numpy as np
import pytest
from conftest import build_file, component, needs_torch
from hypothesis import given
from hypothesis import strategies as st

import ztensor_array as zt
from ztensor_array import dtypes
from ztensor_array.errors import ChecksumError, FormatError, UnsupportedError
from ztensor_array.reader import Reader

A = np.arange(6, dtype="<f4").reshape(2, 3) * 1.5
B_BYTES = bytes([0x12, 0x34, 0x56, 0x78, 0x9A])
NEW_TYPE = "f4_e2m1"


def _crc(data: bytes) -> str:
    return f"crc32c:0x{google_crc32c.value(data):08X}"


def _objects(**b_extra) -> dict:
    return {
        "a": {"shape": [2, 3], "format": "dense", "components": {"data": component("f32", 64, 24)}},
        "b": {
            "shape": [10],  # ten 4-bit values packed into 5 bytes
            "format": "dense",
            "components": {"data": component("u8", 128, len(B_BYTES), type=NEW_TYPE, **b_extra)},
        },
    }


@pytest.fixture
def newer(tmp_path):
    """f32 tensor "a" and tensor "b" of an unknown logical type over u8, with a digest."""
    p = tmp_path / "newer.zt"
    build_file(p, _objects(digest=_crc(B_BYTES)), {64: A.tobytes(), 128: B_BYTES})
    return p


def _names_everything(err, path, role="data", type_=NEW_TYPE) -> None:
    msg = str(err)
    assert isinstance(err, UnsupportedError)
    assert str(path) in msg and "'b'" in msg and repr(role) in msg and repr(type_) in msg, msg
    assert err.obj == "b" and err.component == role


def test_opens_and_lists(newer):
    with Reader(newer) as r:
        assert r.tensor_names == ["a", "b"]
        assert [m.name for m in r] == ["a", "b"]
        meta = r.metadata("b")
        assert meta.dtype is None and meta.dtype_str == ""
        assert meta.shape == (10,) and meta.layout == "dense"
        assert meta.size == len(B_BYTES)
        assert "'b'" in repr(meta)
        assert r.metadata("a").dtype == np.dtype("float32")


def test_other_tensor_reads(newer):
    with Reader(newer) as r:
        np.testing.assert_array_equal(r.read_tensor("a"), A)
        np.testing.assert_array_equal(r.read_tensor("a", copy=True), A)
        np.testing.assert_array_equal(r.read_tensors(["a"])[0], A)
        np.testing.assert_array_equal(r.read_slice("a", (1, slice(0, 2))), A[1, :2])


@needs_torch
def test_other_tensor_reads_to_torch(newer):
    with Reader(newer) as r:
        assert r.read_tensor("a", to="torch").tolist() == A.tolist()


@pytest.mark.parametrize(
    "read",
    [
        lambda r: r.read_tensor("b"),
        lambda r: r.read_tensor("b", copy=True),
        lambda r: r.read_tensor("b", verify_checksum=True),
        lambda r: r.read_tensor("b", to="torch"),
        lambda r: r["b"],
        lambda r: r.read_tensors(["a", "b"]),
        lambda r: r.read_tensors(["b", "a"], workers=2),
        lambda r: r.to_dict(),
        lambda r: r.read_slice("b", slice(0, 2)),
        lambda r: r.read_components("b"),
        lambda r: next(r.iter_dense_rows("b", 2)),
    ],
)
def test_reading_values_is_refused_with_a_clear_error(newer, read):
    with Reader(newer) as r, pytest.raises(UnsupportedError) as info:
        read(r)
    _names_everything(info.value, newer)


def test_load_file_refuses_like_an_unknown_format(newer, tmp_path):
    """load_file reads every tensor, so an unreadable one fails it (as an unknown format
    does): the error says which object."""
    with pytest.raises(UnsupportedError) as info:
        zt.load_file(newer)
    _names_everything(info.value, newer)
    odd = tmp_path / "odd.zt"
    build_file(
        odd,
        {"odd": {"shape": [4], "format": "hologram", "components": {"x": component("u8", 64, 4)}}},
        {64: b"abcd"},
    )
    with pytest.raises(UnsupportedError):
        zt.load_file(odd)


def test_read_component_returns_stored_values(newer):
    with Reader(newer) as r:
        stored = r.read_component("b", "data")
        assert stored.dtype == np.uint8 and stored.tobytes() == B_BYTES
        assert r.read_component("b", "data", verify=True, copy=True).tobytes() == B_BYTES
        assert bytes(r.stored_bytes("b", "data")) == B_BYTES


def test_digest_verifies_over_stored_bytes(newer, tmp_path):
    from ztensor_array.ops.verify import verify

    assert verify(newer) == []
    bad = tmp_path / "bad.zt"
    build_file(bad, _objects(digest=_crc(b"other")), {64: A.tobytes(), 128: B_BYTES})
    with Reader(bad) as r, pytest.raises(ChecksumError) as info:
        r.read_component("b", "data", verify=True)
    assert info.value.obj == "b"
    assert [p.where for p in verify(bad)] == ["object 'b' component 'data'"]


def test_zstd_component_of_unknown_type(tmp_path):
    """Compressed: the decoded size is trusted from uncompressed_length when given, and
    bounded by the generic zstd ratio otherwise."""
    import zstandard

    frame = zstandard.ZstdCompressor().compress(B_BYTES)
    for extra in ({}, {"uncompressed_length": len(B_BYTES)}):
        p = tmp_path / f"z{len(extra)}.zt"
        objs = _objects(encoding="zstd", **extra)
        objs["b"]["components"]["data"]["length"] = len(frame)
        build_file(p, objs, {64: A.tobytes(), 128: frame})
        with Reader(p) as r:
            assert r.read_component("b", "data").tobytes() == B_BYTES
            with pytest.raises(UnsupportedError):
                r.read_tensor("b")
    p = tmp_path / "lie.zt"  # uncompressed_length must still be a whole number of u16
    objs = _objects(encoding="zstd", uncompressed_length=5)
    objs["b"]["components"]["data"].update(dtype="u16", length=len(frame))
    build_file(p, objs, {64: A.tobytes(), 128: frame})
    with pytest.raises(FormatError, match="item size"):
        Reader(p)


def test_storage_checks_still_run(tmp_path):
    """Only the length-vs-shape check is skipped: a raw length must still be a multiple of
    the storage item size, and bounds still hold."""
    p = tmp_path / "odd.zt"
    objs = _objects()
    objs["b"]["components"]["data"]["dtype"] = "u16"  # 5 bytes are not whole u16s
    build_file(p, objs, {64: A.tobytes(), 128: B_BYTES})
    with pytest.raises(FormatError, match="multiple") as info:
        Reader(p)
    assert info.value.obj == "b"
    p = tmp_path / "out.zt"
    objs = _objects()
    objs["b"]["components"]["data"]["length"] = 4096
    build_file(p, objs, {64: A.tobytes(), 128: B_BYTES})
    with pytest.raises(FormatError, match="outside"):
        Reader(p)


@pytest.mark.parametrize(
    ("dtype", "type_", "nbytes"),
    [("f64", "f8_e5m2", 8), ("u8", "complex64", 8), ("u8", "f32", 4), ("u16", "f16", 2)],
)
def test_known_type_over_wrong_dtype_is_still_refused(tmp_path, dtype, type_, nbytes):
    p = tmp_path / "bad.zt"
    objs = _objects()
    objs["b"] = {
        "shape": [1],
        "format": "dense",
        "components": {"data": component(dtype, 128, nbytes, type=type_)},
    }
    build_file(p, objs, {64: A.tobytes(), 128: bytes(nbytes)})
    with pytest.raises(UnsupportedError, match="cannot be stored") as info:
        Reader(p)
    assert str(p) in str(info.value) and info.value.obj == "b"


def test_non_text_type_is_still_refused(tmp_path):
    p = tmp_path / "bad.zt"
    build_file(p, _objects(), {64: A.tobytes(), 128: B_BYTES})
    objs = _objects()
    objs["b"]["components"]["data"]["type"] = 7
    build_file(p, objs, {64: A.tobytes(), 128: B_BYTES})
    with pytest.raises(FormatError, match="type is not text"):
        Reader(p)


def test_reference_ignores_the_type(newer, tmp_path, zref):
    """The reference 1.1.1 ignores `type`: it opens the file and reads "a"; "b" comes back
    as its stored u8 values when they happen to fill the shape, and as a bare numpy
    ValueError when they do not (we refuse both with UnsupportedError: SPEC §10)."""
    with zref.Reader(str(newer)) as r:
        np.testing.assert_array_equal(r.read_tensor("a"), A)
        with pytest.raises(ValueError, match="reshape"):
            r.read_tensor("b")
    fits = tmp_path / "fits.zt"
    objs = _objects()
    objs["b"]["shape"] = [len(B_BYTES)]
    build_file(fits, objs, {64: A.tobytes(), 128: B_BYTES})
    with zref.Reader(str(fits)) as r:
        got = np.asarray(r.read_tensor("b"))
        assert got.dtype == np.uint8 and got.tobytes() == B_BYTES
    with Reader(fits) as r, pytest.raises(UnsupportedError):
        r.read_tensor("b")


def test_info_shows_the_stored_type(newer):
    from click.testing import CliRunner

    from ztensor_array.cli import cli

    result = CliRunner().invoke(cli, ["info", "--json", str(newer)])
    assert result.exit_code == 0, result.output
    objs = {o["name"]: o for o in json.loads(result.output)["objects"]}
    comp = objs["b"]["components"]["data"]
    assert comp["dtype"] == NEW_TYPE and comp["storage_dtype"] == "u8"
    assert comp["raw_bytes"] == len(B_BYTES)
    assert objs["a"]["dtype"] == "f32"
    result = CliRunner().invoke(cli, ["info", str(newer)])
    assert result.exit_code == 0, result.output
    assert NEW_TYPE in result.output


def _same_object_and_bytes(src, dst, name="b") -> None:
    with Reader(src) as a, Reader(dst) as b:
        old, new = a.manifest.objects[name], b.manifest.objects[name]
        assert old.shape == new.shape and old.format == new.format
        for role, comp in old.components.items():
            got = new.components[role]
            assert (got.dtype, got.type, got.encoding, got.digest) == (
                comp.dtype,
                comp.type,
                comp.encoding,
                comp.digest,
            )
            assert bytes(b.stored_bytes(name, role)) == bytes(a.stored_bytes(name, role))
        np.testing.assert_array_equal(b.read_tensor("a"), A)


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_rewrite_commands_keep_it_as_stored(newer, tmp_path, command):
    from click.testing import CliRunner

    from ztensor_array.cli import cli

    out = tmp_path / f"{command}.zt"
    result = CliRunner().invoke(cli, [command, str(newer), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    _same_object_and_bytes(newer, out)
    with Reader(out) as r:
        assert r.manifest.objects["a"].components["data"].encoding == (
            "zstd" if command == "compress" else "raw"
        )


def test_merge_compact_and_copy_from_keep_it_as_stored(newer, tmp_path):
    from ztensor_array.ops.compact import compact
    from ztensor_array.ops.merge import merge

    merged = tmp_path / "merged.zt"
    merge([str(newer)], str(merged))
    _same_object_and_bytes(newer, merged)
    compact(merged)
    _same_object_and_bytes(newer, merged)
    copied = tmp_path / "copied.zt"
    with Reader(newer) as r, zt.Writer(copied) as w:
        w.copy_from(r, "a")
        w.copy_from(r, "b")
    _same_object_and_bytes(newer, copied)


def test_dask_and_xarray_refuse_it(newer):
    xr = pytest.importorskip("xarray")
    from ztensor_array.backends.dask import from_ztensor

    np.testing.assert_array_equal(from_ztensor(newer, "a").compute(), A)
    for call in (lambda: from_ztensor(newer, "b"), lambda: from_ztensor(newer)):
        with pytest.raises(UnsupportedError) as info:
            call()
        _names_everything(info.value, newer)
    with pytest.raises(UnsupportedError) as info:
        xr.open_dataset(newer, engine="ztensor")
    assert info.value.obj == "b" and NEW_TYPE in str(info.value)
    # leaving it out opens the rest
    with xr.open_dataset(newer, engine="ztensor", drop_variables=["b"]) as ds:
        assert list(ds.data_vars) == ["a"]
        np.testing.assert_array_equal(ds["a"].values, A)


def test_sparse_and_quantized_objects_of_unknown_type_open(tmp_path):
    p = tmp_path / "sp.zt"
    objs = {
        "csr": {
            "shape": [2, 4],
            "format": "sparse_csr",
            "components": {
                "values": component("u8", 64, 3, type=NEW_TYPE),
                "indices": component("u64", 128, 16),
                "indptr": component("u64", 192, 24),
            },
        },
        "coo": {
            "shape": [4],
            "format": "sparse_coo",
            "components": {
                "values": component("u8", 256, 1, type=NEW_TYPE),
                "coords": component("u64", 320, 16),
            },
        },
        "q": {
            "shape": [2, 8],
            "format": "quantized_group",
            "attributes": {"bits": 4, "group_size": 8},
            "components": {
                "packed_weight": component("i32", 384, 8),
                "scales": component("u16", 448, 4, type=NEW_TYPE),
                "zeros": component("i32", 512, 4),
            },
        },
    }
    blobs = {
        64: b"\x01\x02\x03",
        128: np.array([0, 3], "<u8").tobytes(),
        192: np.array([0, 1, 2], "<u8").tobytes(),
        256: b"\x01",
        320: np.array([0, 2], "<u8").tobytes(),
        384: bytes(8),
        448: bytes(4),
        512: bytes(4),
    }
    build_file(p, objs, blobs)
    with Reader(p) as r:
        assert r.tensor_names == ["coo", "csr", "q"]
        for name, role in (("csr", "values"), ("coo", "values"), ("q", "scales")):
            assert r.metadata(name).dtype is None
            with pytest.raises(UnsupportedError) as info:
                r.read_tensor(name)
            assert info.value.obj == name and info.value.component == role


def test_chunked_object_of_unknown_type_is_refused_at_open(tmp_path):
    """A chunk's type must match the grid's (known) dtype: an unknown one contradicts it."""
    p = tmp_path / "ch.zt"
    objs = {
        "c": {
            "shape": [4],
            "format": "chunked",
            "attributes": {"chunk_grid": {"chunk_shape": [4], "dtype": "u8"}},
            "components": {"c.0": component("u8", 64, 4, type=NEW_TYPE)},
        }
    }
    build_file(p, objs, {64: bytes(4)})
    with pytest.raises(UnsupportedError) as info:
        Reader(p)
    assert str(p) in str(info.value) and info.value.component == "c.0"


_KNOWN = set(dtypes.BY_NAME) | {"f8_e4m3fn"}
_STORAGE = sorted(dtypes.BY_NAME)


@given(
    type_=st.text(min_size=1, max_size=12).filter(lambda t: t not in _KNOWN),
    storage=st.sampled_from(_STORAGE),
    count=st.integers(0, 3),
)
def test_any_unknown_type_over_any_known_dtype_opens(tmp_path_factory, type_, storage, count):
    assert not dtypes.is_known_type(type_)
    nbytes = count * dtypes.itemsize(storage)
    p = tmp_path_factory.mktemp("h") / "t.zt"
    objs = _objects()
    objs["b"] = {
        "shape": [count, 7],  # any shape: the logical size is unknown
        "format": "dense",
        "components": {"data": component(storage, 128, nbytes, type=type_)},
    }
    build_file(p, objs, {64: A.tobytes(), 128: bytes(range(nbytes))})
    with Reader(p) as r:
        assert r.tensor_names == ["a", "b"]
        assert r.metadata("b").dtype is None and r.metadata("b").shape == (count, 7)
        assert r.read_component("b", "data").tobytes() == bytes(range(nbytes))
        np.testing.assert_array_equal(r.read_tensor("a"), A)
        with pytest.raises(UnsupportedError) as info:
            r.read_tensor("b")
        assert repr(type_) in str(info.value)


def test_appending_keeps_it(newer):
    with zt.Writer(newer, mode="a") as w:
        w.add_tensor("c", np.ones(3, np.float32))
    with Reader(newer) as r:
        assert r.tensor_names == ["a", "b", "c"]
        comp = r.manifest.objects["b"].components["data"]
        assert (comp.dtype, comp.type, comp.digest) == ("u8", NEW_TYPE, _crc(B_BYTES))
        assert r.read_component("b", "data", verify=True).tobytes() == B_BYTES
        np.testing.assert_array_equal(r.read_tensor("c"), np.ones(3, np.float32))
