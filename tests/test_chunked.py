"""The `chunked` layout: files built by hand (cbor2 + zstandard, not our writer) read back as
numpy computes them; slices decode only the chunks they touch; bad grids are refused at open;
the reference 1.1.1 still opens files that hold chunked objects."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zstandard
from conftest import build_file, component
from hypothesis import given, settings
from hypothesis import strategies as st

import ztensor_array as zt
from ztensor_array.errors import FormatError, UnsupportedError

ZT_NAME = {np.dtype("<f4"): "f32", np.dtype("<i2"): "i16", np.dtype("<f8"): "f64"}


def chunked_file(
    path,
    arr,
    chunk_shape,
    *,
    fill=0,
    skip=(),
    zstd_roles=(),
    extra=None,
    grid_overrides=None,
    dense=None,
):
    """Lay out ``arr`` as a chunked object by hand: one blob per chunk at 64-byte steps."""
    dtype = ZT_NAME[arr.dtype]
    grid = [-(-s // c) for s, c in zip(arr.shape, chunk_shape)]
    comps, blobs = {}, {}
    pos = 64
    for index in itertools.product(*[range(g) for g in grid]):
        role = "c" + "".join(f".{i}" for i in index)
        if index in skip:
            continue
        part = arr[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunk_shape))]
        data = np.ascontiguousarray(part).tobytes()
        extra_keys = {}
        if role in zstd_roles:
            data = zstandard.ZstdCompressor(level=3).compress(data)
            extra_keys["encoding"] = "zstd"
        comps[role] = component(dtype, pos, len(data), **extra_keys)
        blobs[pos] = data
        pos += -(-len(data) // 64) * 64 or 64
    grid_attr = {"chunk_shape": list(chunk_shape), "dtype": dtype, "fill_value": fill}
    grid_attr.update(grid_overrides or {})
    objects = {
        "x": {
            "shape": list(arr.shape),
            "format": "chunked",
            "attributes": {"chunk_grid": grid_attr},
            "components": comps,
        }
    }
    if dense is not None:
        data = np.ascontiguousarray(dense).tobytes()
        objects["d"] = {
            "shape": list(dense.shape),
            "format": "dense",
            "components": {"data": component(ZT_NAME[dense.dtype], pos, len(data))},
        }
        blobs[pos] = data
    if extra:
        objects["x"]["components"].update(extra)
    build_file(path, objects, blobs)
    return objects


def test_edge_chunks_zstd_and_fill(tmp_path):
    arr = np.arange(7 * 5 * 3, dtype="<f4").reshape(7, 5, 3)
    p = tmp_path / "c.zt"
    chunked_file(p, arr, (3, 2, 3), fill=-7.5, skip={(1, 1, 0)}, zstd_roles={"c.0.0.0", "c.2.2.0"})
    want = arr.copy()
    want[3:6, 2:4, :] = -7.5  # never written: fill value
    with zt.Reader(p) as r:
        got = r.read_tensor("x")
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.float32
        assert r.metadata("x").layout == "chunked"


def test_no_chunk_written_reads_fill(tmp_path):
    p = tmp_path / "c.zt"
    chunked_file(
        p, np.zeros((4, 4), "<i2"), (3, 3), fill=-3, skip=set(itertools.product(range(2), range(2)))
    )
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), np.full((4, 4), -3, "<i2"))


def _touched(r):
    """Record the roles the reader decodes (wraps the instance method, not a dependency)."""
    seen = []
    orig = r.read_component

    def spy(name, role, **kw):
        seen.append(role)
        return orig(name, role, **kw)

    r.read_component = spy
    return seen


def test_slice_reads_only_touched_chunks(tmp_path):
    arr = np.arange(10 * 10, dtype="<f8").reshape(10, 10)
    p = tmp_path / "c.zt"
    chunked_file(p, arr, (4, 4))
    with zt.Reader(p) as r:
        seen = _touched(r)
        got = r.read_slice("x", (slice(5, 7), slice(0, 3)))
        np.testing.assert_array_equal(got, arr[5:7, 0:3])
        assert sorted(seen) == ["c.1.0"]
        seen.clear()
        np.testing.assert_array_equal(r.read_slice("x", (9, ...)), arr[9])
        assert sorted(seen) == ["c.2.0", "c.2.1", "c.2.2"]


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=1, max_size=3),
    data=st.data(),
)
def test_slices_match_numpy(tmp_path_factory, shape, data):
    shape = tuple(shape)
    chunk = tuple(data.draw(st.integers(1, max(s, 1) + 1)) for s in shape)
    arr = np.arange(int(np.prod(shape)), dtype="<f4").reshape(shape)
    p = tmp_path_factory.mktemp("h") / "c.zt"
    chunked_file(p, arr, chunk)
    sel = []
    for s in shape:
        if s and data.draw(st.booleans()):
            sel.append(data.draw(st.integers(-s, s - 1)))
        else:
            a = data.draw(st.none() | st.integers(-s - 2, s + 2))
            b = data.draw(st.none() | st.integers(-s - 2, s + 2))
            step = data.draw(st.sampled_from([None, 1, 2, 3, -1, -2]))
            sel.append(slice(a, b, step))
    sel = tuple(sel)
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_slice("x", sel), arr[sel])
        np.testing.assert_array_equal(r.read_tensor("x"), arr)


@pytest.mark.parametrize(
    ("overrides", "extra", "match"),
    [
        ({"chunk_shape": [3, 0]}, None, "chunk_shape"),
        ({"chunk_shape": [3]}, None, "chunk_shape"),
        ({"dtype": 5}, None, "dtype"),
        ({"fill_value": "zero"}, None, "fill_value"),
        ({}, {"c.9.0": component("f32", 64, 36)}, "outside the grid"),
        ({}, {"c.01.0": component("f32", 64, 36)}, "chunk role"),
        ({}, {"data": component("f32", 64, 36)}, "chunk role"),
    ],
)
def test_bad_grids_are_refused_at_open(tmp_path, overrides, extra, match):
    p = tmp_path / "bad.zt"
    chunked_file(p, np.ones((5, 5), "<f4"), (3, 3), grid_overrides=overrides, extra=extra)
    with pytest.raises(FormatError, match=match) as info:
        zt.Reader(p)
    assert str(p) in str(info.value) and "'x'" in str(info.value)


def test_wrong_raw_chunk_length_and_dtype(tmp_path):
    p = tmp_path / "bad.zt"
    objects = chunked_file(p, np.ones((5, 5), "<f4"), (3, 3))
    objects["x"]["components"]["c.1.1"]["length"] = 36  # in-bounds part is 2x2x4 = 16
    build_file(p, objects, {64 * k: bytes(64) for k in range(1, 6)})
    with pytest.raises(FormatError, match="raw chunk length 36 != 16"):
        zt.Reader(p)
    objects["x"]["components"]["c.1.1"].update(length=16, dtype="i32")
    build_file(p, objects, {64 * k: bytes(64) for k in range(1, 6)})
    with pytest.raises(FormatError, match="differs from the grid dtype"):
        zt.Reader(p)
    objects["x"]["attributes"]["chunk_grid"]["dtype"] = "f128"
    build_file(p, objects, {64 * k: bytes(64) for k in range(1, 6)})
    with pytest.raises(UnsupportedError, match="f128"):
        zt.Reader(p)


def test_corrupt_zstd_chunk_names_component(tmp_path):
    p = tmp_path / "c.zt"
    arr = np.arange(16, dtype="<f4").reshape(4, 4)
    chunked_file(p, arr, (2, 4), zstd_roles={"c.1.0"})
    data = bytearray(p.read_bytes())
    with zt.Reader(p) as r:
        off = r.manifest.objects["x"].components["c.1.0"].offset
    data[off + 6] ^= 0xFF
    p.write_bytes(bytes(data))
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_slice("x", (slice(0, 2),)), arr[:2])
        with pytest.raises(zt.ZTensorError, match="c.1.0"):
            r.read_tensor("x")


def test_fill_value_that_does_not_fit_dtype(tmp_path):
    p = tmp_path / "c.zt"
    chunked_file(p, np.zeros((2, 2), "<i2"), (1, 1), fill=1.5, skip={(0, 0)})
    with zt.Reader(p) as r, pytest.raises(FormatError, match="fill_value"):
        r.read_tensor("x")


def test_reference_opens_file_with_chunked_objects(tmp_path, zref):
    p = tmp_path / "mixed.zt"
    dense = np.arange(12, dtype="<f4").reshape(3, 4)
    chunked_file(p, np.ones((5, 5), "<f4"), (3, 3), zstd_roles={"c.0.0"}, dense=dense)
    r = zref.Reader(str(p))
    assert sorted(r.tensor_names) == ["d", "x"]
    np.testing.assert_array_equal(r.read_tensor("d"), dense)


def test_writer_made_chunked_file_opens_in_reference(tmp_path, zref):
    """Our own writer's chunked output (Dask path) next to a dense tensor."""
    p = tmp_path / "ours.zt"
    x = np.arange(50, dtype="<f4").reshape(10, 5)
    zt.to_ztensor(
        {"x": x, "d": x * 2}, p, compress=3, encoding={"d": {"layout": "dense", "compress": False}}
    )
    r = zref.Reader(str(p))
    np.testing.assert_array_equal(r.read_tensor("d"), x * 2)
    with zt.Reader(p) as ours:
        np.testing.assert_array_equal(ours.read_tensor("x"), x)


def test_parallel_decode_many_chunks(tmp_path):
    rng = np.random.default_rng(3)
    arr = rng.standard_normal((64, 48)).astype("<f4")
    p = tmp_path / "c.zt"
    grid = [(i, j) for i in range(8) for j in range(6)]
    chunked_file(p, arr, (8, 8), zstd_roles={f"c.{i}.{j}" for i, j in grid})
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), arr)
        np.testing.assert_array_equal(
            r.read_slice("x", (slice(3, 60, 5), slice(None, None, -3))), arr[3:60:5, ::-3]
        )
