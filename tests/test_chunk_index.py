"""The chunk index (SPEC §4.3): every write path stores a chunked object's chunk locations as
binary index segments (no component per chunk), old one-component-per-chunk files still read
and take appends, a corrupt index entry is a ZTensorError naming the object and the chunk when
that chunk is read, segments stay few under repeated appends, and the reference 1.1.1 still
opens such files and reads their dense tensors."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_chunked import chunked_file

import ztensor_array as zt
from ztensor_array.layouts import chunked
from ztensor_array.ops.verify import verify


def _indexed(path, name) -> chunked.ChunkGrid:
    """The object's grid, after checking it keeps no component per chunk."""
    with zt.Reader(path) as r:
        obj = r.metadata(name).object
    assert not any(role.startswith("c") for role in obj.components), sorted(obj.components)
    grid = chunked.chunk_grid(obj)
    assert {seg.role for seg in grid.segments} == set(obj.components)
    return grid


def _same(path, name, want) -> None:
    with zt.Reader(path, verify=True) as r:
        np.testing.assert_array_equal(r.read_tensor(name), want)
    np.testing.assert_array_equal(zt.from_ztensor(path, name).compute(), want)


def test_every_write_path_stores_an_index(tmp_path, zref):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 12)).astype("f4")
    p = tmp_path / "w.zt"
    zt.to_ztensor({"x": x, "dense": x}, p, encoding={"x": {"chunks": (6, 5), "compress": 3}})
    _indexed(p, "x")
    want = x
    more = rng.normal(size=(7, 12)).astype("f4")
    zt.to_ztensor(da.from_array(more, chunks=3), p, "x", mode="a", append_dim=0)
    want = np.concatenate([want, more])
    side = rng.normal(size=(27, 4)).astype("f4")
    zt.to_ztensor(side, p, "x", mode="a", append_dim=1)
    want = np.concatenate([want, side], axis=1)
    patch = np.full((9, 7), 5.0, "f4")
    zt.to_ztensor(patch, p, "x", mode="a", region=(slice(3, 12), slice(2, 9)))
    want[3:12, 2:9] = patch
    _indexed(p, "x")
    _same(p, "x", want)
    with zt.Writer(p, "a") as w:  # the sequential driver
        with zt.Reader(p) as r:
            obj = r.metadata("x").object
        w.write_chunked("x", obj, (30, 16), ((27, 30), (0, 16)), np.ones((3, 16), "f4"))
    want = np.concatenate([want, np.ones((3, 16), "f4")])
    _indexed(p, "x")
    _same(p, "x", want)
    with zref.Reader(str(p)) as ref:  # 1.1.1 opens the file and reads its dense tensor
        assert sorted(ref.get_tensor_names()) == ["dense", "x"]
        np.testing.assert_array_equal(ref.read_tensor("dense"), x)


def test_xarray_writes_store_an_index(tmp_path):
    xr = pytest.importorskip("xarray")
    ds = xr.Dataset({"t": (("a", "b"), np.arange(40.0).reshape(8, 5))}, coords={"a": range(8)})
    p = tmp_path / "x.zt"
    zt.to_ztensor(ds, p, encoding={"t": {"chunks": (3, 2), "compress": True}})
    more = ds.assign_coords(a=range(8, 16))
    zt.to_ztensor(more, p, mode="a", append_dim="a")
    zt.to_ztensor(ds.isel(a=slice(0, 4)) * 0 - 1, p, region={"a": slice(2, 6)}, mode="r+")
    _indexed(p, "t")
    want = np.concatenate([ds.t.values, more.t.values])
    want[2:6] = -1
    with xr.open_dataset(p, engine="ztensor") as back:
        np.testing.assert_array_equal(back.t.values, want)


def test_old_files_read_take_appends_and_compact_to_an_index(tmp_path):
    p = tmp_path / "old.zt"
    x = np.arange(48, dtype="<f4").reshape(8, 6)
    chunked_file(p, x, (3, 4), skip={(2, 1)})
    want = x.copy()
    want[6:, 4:] = 0  # the chunk never written reads as the fill value
    _same(p, "x", want)
    more = np.full((2, 6), 9.0, "f4")
    zt.to_ztensor(more, p, "x", mode="a", append_dim=0)  # a segment over c.<i>.<j> roles
    want = np.concatenate([want, more])
    _same(p, "x", want)
    with zt.Reader(p) as r:
        roles = set(r.metadata("x").components)
    assert "c.0.0" in roles and "c.2.0" not in roles  # the edge chunk row moved to the index
    zt.compact(p)
    _indexed(p, "x")
    _same(p, "x", want)


def test_segments_stay_few_under_many_appends(tmp_path):
    p = tmp_path / "g.zt"
    zt.to_ztensor(np.zeros((4, 8), "f4"), p, "x", chunks=(4, 4))
    for k in range(1, 64):
        zt.to_ztensor(np.full((4, 8), k, "f4"), p, "x", mode="a", append_dim=0)
    grid = _indexed(p, "x")
    assert len(grid.segments) <= 8  # a binary counter over 64 appends
    want = np.repeat(np.arange(64, dtype="f4"), 4)[:, None] * np.ones((1, 8), "f4")
    _same(p, "x", want)


def _entry_offset(path, name, index) -> int:
    """File offset of the index entry of the chunk at ``index`` (newest segment holding it)."""
    with zt.Reader(path) as r:
        obj = r.metadata(name).object
    for seg in reversed(chunked.chunk_grid(obj).segments):
        if seg.contains(index):
            return obj.components[seg.role].offset + seg.position(index) * seg.words * 8
    raise AssertionError("no segment holds the chunk")


CORRUPTIONS = ["out_of_bounds", "misaligned", "overlaps_manifest_component", "short", "huge"]


@settings(max_examples=30, deadline=None)
@given(
    how=st.sampled_from(CORRUPTIONS),
    at=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    compress=st.sampled_from([0, 3]),
)
def test_a_corrupt_index_entry_is_refused_when_read(tmp_path_factory, how, at, compress):
    p = tmp_path_factory.mktemp("idx") / "c.zt"
    x = np.arange(81, dtype="<f8").reshape(9, 9)
    zt.to_ztensor({"x": x, "d": x}, p, encoding={"x": {"chunks": (3, 3), "compress": compress}})
    with zt.Reader(p) as r:
        comp = r.chunks("x")[at]
        dense_at = r.metadata("d").components["data"].offset
        size = r.size
    offset, length = comp.offset, comp.length
    if how == "out_of_bounds":
        offset = size + 64 * 1000
    elif how == "misaligned":
        offset += 8
    elif how == "overlaps_manifest_component":
        offset = dense_at
    elif how == "short":
        length = max(0, length - 1)
    else:
        length = 1 << 40
    data = bytearray(p.read_bytes())
    e = _entry_offset(p, "x", at)
    data[e : e + 16] = np.array([offset, length], "<u8").tobytes()
    p.write_bytes(bytes(data))
    label = f"c.{at[0]}.{at[1]}"
    with zt.Reader(p) as r:
        with pytest.raises(zt.ZTensorError) as info:
            r.read_slice("x", (slice(3 * at[0], 3 * at[0] + 3), slice(3 * at[1], 3 * at[1] + 3)))
        assert label in str(info.value) and "'x'" in str(info.value) and str(p) in str(info.value)
        other = ((at[0] + 1) % 3, at[1])
        part = (slice(3 * other[0], 3 * other[0] + 3), slice(3 * other[1], 3 * other[1] + 3))
        np.testing.assert_array_equal(r.read_slice("x", part), x[part])
        np.testing.assert_array_equal(r.read_tensor("d"), x)
    problems = verify(p, deep=True)
    assert any(label in str(pr) for pr in problems), problems


def test_verify_finds_chunks_sharing_bytes(tmp_path):
    p = tmp_path / "s.zt"
    zt.to_ztensor(np.arange(16.0).reshape(4, 4), p, "x", chunks=(2, 2))
    with zt.Reader(p) as r:
        first = r.chunks("x")[0, 0]
    data = bytearray(p.read_bytes())
    e = _entry_offset(p, "x", (1, 1))
    data[e : e + 16] = np.array([first.offset, first.length], "<u8").tobytes()
    p.write_bytes(bytes(data))
    problems = [str(pr) for pr in verify(p)]
    assert any("c.1.1" in pr and "shared with chunk [0, 0]" in pr for pr in problems), problems


def test_the_manifest_grows_with_segments_not_chunks(tmp_path):
    small, big = tmp_path / "s.zt", tmp_path / "b.zt"
    zt.to_ztensor(np.zeros((10, 10), "f4"), small, "x", chunks=(5, 5))
    zt.to_ztensor(np.zeros((400, 400), "f4"), big, "x", chunks=(5, 5))  # 6400 chunks
    with zt.Reader(small) as a, zt.Reader(big) as b:
        ma, mb = a.size - a.manifest_offset, b.size - b.manifest_offset
        assert len(b.chunks("x")) == 6400
    assert mb - ma < 64, (ma, mb)
    assert os.path.getsize(big) > 6400 * 100


def test_an_append_writes_what_it_adds_not_the_old_index(tmp_path):
    """Appending rows of 100 chunks to an object of 10,000 writes the new chunks, index
    entries for them (the newest small segments merge, a binary counter) and the manifest:
    never the old index (160 KB) again, and the manifest keeps its size (issue 14)."""
    p = tmp_path / "big.zt"
    zt.to_ztensor(np.zeros((800, 800), "f4"), p, "x", chunks=(8, 8), compress=True)
    with zt.Reader(p) as r:
        obj = r.metadata("x").object
        (first,) = chunked.chunk_grid(obj).segments
        old_index = obj.components[first.role].length
        manifest = r.size - r.manifest_offset
    assert old_index == 10_000 * 16  # offset and length per chunk
    for k in range(8):
        before = os.path.getsize(p)
        row = da.full((8, 800), k + 1, dtype="f4", chunks=(8, 40))
        zt.to_ztensor(row, p, "x", mode="a", append_dim=0)
        assert os.path.getsize(p) - before < old_index // 8
        with zt.Reader(p) as r:
            obj = r.metadata("x").object
            assert chunked.chunk_grid(obj).segments[0] == first  # never rewritten
            assert r.size - r.manifest_offset < 2 * manifest
    with zt.Reader(p) as r:
        got = r.read_slice("x", (slice(800, None),))
    np.testing.assert_array_equal(got[::8, 0], np.arange(1, 9, dtype="f4"))


def test_dask_writes_one_task_per_block_of_chunks(tmp_path):
    """A numpy array of 10,000 chunks is written by a few tasks, each writing a band of
    whole chunks; a dask array whose blocks are smaller than a chunk gets blocks merged up
    to whole chunks, never one task per element block."""
    p = tmp_path / "w.zt"
    x = np.arange(800 * 800, dtype="f4").reshape(800, 800)
    graph = zt.to_ztensor(x, p, "x", chunks=(8, 8), compress=True, compute=False)
    assert len(graph.__dask_graph__()) < 64
    graph.compute()
    small_blocks = da.from_array(x, chunks=(4, 200))  # 800 blocks, each half a chunk row
    graph = zt.to_ztensor(small_blocks, p, "y", mode="a", chunks=(8, 800), compute=False)
    writes = [k for k in graph.__dask_graph__() if "ztensor-write" in str(k)]
    assert len(writes) == 100  # one per chunk of 8 rows
    graph.compute()
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), x)
        np.testing.assert_array_equal(r.read_tensor("y"), x)
