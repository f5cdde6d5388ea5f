"""Dask: from_ztensor / to_ztensor round trips on the threaded, processes, sync and
distributed schedulers; picklable small block readers; growth along axis 0; failures that
leave the previous file intact. Oracles: the numpy input, scipy.sparse, and the reference
ztensor 1.1.1 reader."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse
from conftest import dense_file
from dask.base import tokenize
from dask.delayed import Delayed
from hypothesis import given, settings
from hypothesis import strategies as st

import ztensor_array as zt

SCHEDULERS = ["threads", "processes", "sync", "distributed"]


@pytest.fixture(scope="module")
def process_pool():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(params=SCHEDULERS)
def scheduler(request, process_pool):
    if request.param == "distributed":
        from distributed import Client

        cluster = request.getfixturevalue("cluster")
        with Client(cluster, set_as_default=True):
            yield "distributed"
    elif request.param == "processes":
        with dask.config.set(scheduler="processes", pool=process_pool):
            yield "processes"
    else:
        with dask.config.set(scheduler=request.param):
            yield request.param


def _data(shape=(53, 29), dtype="<f4", seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 100).astype(dtype)


# irregular dask chunks, with edge chunks on every axis
IRREGULAR = ((20, 3, 30), (7, 22))

CASES = {
    "raw_dense": {},
    "chunked_raw": {"chunks": (16, 10)},
    "chunked_zstd": {"compress": 3, "chunks": (16, 10)},
    "chunked_zstd_dask_grid": {"compress": 1},
}


def _blocks(arr):
    """Each block of the array, computed alone from the graph (with no optimization) in this
    process, in block order."""
    graph = dict(arr.__dask_graph__())
    return [dask.get(graph, k) for k in _flat_keys(arr.__dask_keys__())]


def _flat_keys(keys):
    if isinstance(keys, list):
        for k in keys:
            yield from _flat_keys(k)
    else:
        yield keys


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_every_scheduler(tmp_path, scheduler, case):
    x = _data()
    src = da.from_array(x, chunks=IRREGULAR)
    p = tmp_path / "rt.zt"
    zt.to_ztensor(src, p, "x", **CASES[case])
    with zt.Reader(p) as r:
        layout = r.metadata("x").layout
        np.testing.assert_array_equal(r.read_tensor("x"), x)
    assert layout == ("dense" if case == "raw_dense" else "chunked")
    arr = zt.from_ztensor(p, "x")
    assert arr.dtype == x.dtype and arr.shape == x.shape
    np.testing.assert_array_equal(arr.compute(), x)
    np.testing.assert_allclose(arr.sum().compute(), x.sum(dtype=np.float64), rtol=1e-5)
    # a rechunked read on the same scheduler
    np.testing.assert_array_equal(zt.from_ztensor(p, "x", chunks=(11, 13)).compute(), x)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_raw_dense_output_opens_in_reference(tmp_path, zref):
    x = _data((40, 17), "<i2", seed=1)
    y = _data((9,), "<f8", seed=2)
    p = tmp_path / "ref.zt"
    zt.to_ztensor(
        {"x": da.from_array(x, chunks=(7, 5)), "y": y, "z": x},
        p,
        encoding={"z": {"layout": "dense", "compress": 3}},
    )
    r = zref.Reader(str(p))
    np.testing.assert_array_equal(r.read_tensor("x"), x)
    np.testing.assert_array_equal(r.read_tensor("y"), y)
    np.testing.assert_array_equal(r.read_tensor("z"), x)
    assert r.metadata("x").dtype == np.int16
    # the dense zstd frame is the reference writer's own bytes for the same data
    q = tmp_path / "ref_made.zt"
    with zref.Writer(str(q)) as w:
        w.add_tensor("z", x, compress=3)
    with zt.Reader(p) as ours, zt.Reader(q) as theirs:
        assert bytes(ours.stored_bytes("z", "data")) == bytes(theirs.stored_bytes("z", "data"))


def test_auto_chunks_follow_stored_grid(tmp_path):
    x = _data((50, 30))
    p = tmp_path / "g.zt"
    zt.to_ztensor(x, p, "x", chunks=(16, 12), compress=True)
    arr = zt.from_ztensor(p, "x")
    assert arr.chunks == ((16, 16, 16, 2), (12, 12, 6))
    assert arr.npartitions == 12


def test_zstd_dense_is_one_block(tmp_path):
    x = _data((30, 20))
    p = tmp_path / "z.zt"
    with zt.Writer(p) as w:
        w.add_tensor("x", x, compress=True)
    arr = zt.from_ztensor(p, "x")
    assert arr.npartitions == 1
    np.testing.assert_array_equal(arr.compute(), x)
    split = zt.from_ztensor(p, "x", chunks=(10, 10))
    assert split.npartitions == 6
    np.testing.assert_array_equal(split.compute(), x)


def test_raw_blocks_are_zero_copy_views_of_the_map(tmp_path):
    x = _data((40, 10))
    p = tmp_path / "v.zt"
    dense_file(p, {"x": x})  # a file not made by our writer
    arr = zt.from_ztensor(p, "x", chunks=(10, 10))
    for block in _blocks(arr):
        assert not block.flags.owndata and not block.flags.writeable
    np.testing.assert_array_equal(arr.compute(scheduler="sync"), x)
    # one whole raw chunk of a chunked tensor is a view of the map too
    q = tmp_path / "c.zt"
    zt.to_ztensor(x, q, "x", chunks=(10, 10))
    for block in _blocks(zt.from_ztensor(q, "x")):
        assert not block.flags.owndata and not block.flags.writeable


def test_graph_pickles_small_and_arrays_cloudpickle(tmp_path):
    x = _data((64, 48))
    p = tmp_path / ("n" * 60 + ".zt")  # a long path still pickles small
    m = scipy.sparse.random(40, 30, density=0.2, format="csr", random_state=0, dtype="f4")
    zt.to_ztensor(
        {"dense": x, "chunked": x, "zstd": x},
        p,
        encoding={"chunked": {"chunks": (8, 8)}, "zstd": {"compress": 3, "chunks": (8, 8)}},
    )
    with zt.Writer(p, "a") as w:
        w.add_sparse("csr", m)
        w.add_sparse("coo", m.tocoo())
        w.add_tensor("zdense", x, compress=True)
    arrays = zt.from_ztensor(p)
    assert sorted(arrays) == ["chunked", "coo", "csr", "dense", "zdense", "zstd"]
    for name, arr in arrays.items():
        for key, task in dict(arr.__dask_graph__()).items():
            blob = pickle.dumps(task)
            assert len(blob) < 1024, (name, key, len(blob))
        inlined = zt.from_ztensor(p, name, inline_array=True)
        for task in dict(inlined.__dask_graph__()).values():
            assert len(pickle.dumps(task)) < 1024, name
        again = cloudpickle.loads(cloudpickle.dumps(arr))
        assert again.name == arr.name
        got, want = again.compute(), arr.compute()
        if scipy.sparse.issparse(want):
            got, want = got.toarray(), want.toarray()
        np.testing.assert_array_equal(got, want)
        with zt.Reader(p) as r:
            expect = r.read_tensor(name)
        if scipy.sparse.issparse(expect):
            expect = expect.toarray()
        np.testing.assert_array_equal(got, expect)


def test_sparse_csr_row_blocks(tmp_path):
    m = scipy.sparse.random(57, 31, density=0.15, format="csr", random_state=2, dtype="f8")
    p = tmp_path / "s.zt"
    with zt.Writer(p) as w:
        w.add_sparse("m", m)
    arr = zt.from_ztensor(p, "m", chunks=(10, -1))
    assert isinstance(arr._meta, scipy.sparse.csr_matrix)
    assert arr.chunks == ((10,) * 5 + (7,), (31,))
    assert arr.dtype == np.float64
    blocks = _blocks(arr)
    assert all(isinstance(b, scipy.sparse.csr_matrix) for b in blocks)
    np.testing.assert_array_equal(blocks[2].toarray(), m[20:30].toarray())
    np.testing.assert_array_equal(arr.compute().toarray(), m.toarray())
    dense = arr.map_blocks(lambda b: b.toarray(), dtype=arr.dtype, meta=np.empty((0, 0)))
    np.testing.assert_allclose(dense.sum(axis=0).compute(), np.asarray(m.sum(axis=0)).ravel())
    with pytest.raises(zt.ZTensorError, match="row blocks"):
        zt.from_ztensor(p, "m", chunks=(10, 10))


def test_tokens_are_deterministic_and_track_the_tensor(tmp_path):
    """Keys are deterministic; an array keeps reading the tensor it was made from while the
    file only grows (another tensor appended), and refuses with a clear error once the path
    names another file or the tensor itself was replaced."""
    p = tmp_path / "t.zt"
    x = _data()
    zt.to_ztensor(x, p, "x", chunks=(10, 10))
    a, b = zt.from_ztensor(p, "x"), zt.from_ztensor(p, "x")
    assert a.name == b.name and tokenize(a) == tokenize(b)
    source = dict(a.__dask_graph__())["original-" + a.name]
    assert tokenize(source) == tokenize(pickle.loads(pickle.dumps(source)))
    zt.to_ztensor({"y": x}, p, mode="a")  # the file grows, "x" is untouched
    assert zt.from_ztensor(p, "x").name == a.name
    np.testing.assert_array_equal(a.compute(scheduler="sync"), x)
    with zt.Writer(p, "a") as w:  # "x" itself replaced: same name, other bytes
        w.replace("x", x + 1)
    c = zt.from_ztensor(p, "x")
    assert c.name != a.name
    with pytest.raises(zt.ZTensorError, match="changed since"):
        a.compute(scheduler="sync")
    np.testing.assert_array_equal(c.compute(scheduler="sync"), x + 1)
    zt.to_ztensor(x, tmp_path / "other.zt", "x", chunks=(10, 10))
    os.replace(tmp_path / "other.zt", p)  # same content, another file
    with pytest.raises(zt.ZTensorError, match="replaced since"):
        c.compute(scheduler="sync")


def test_identity_is_not_size_and_mtime(tmp_path):
    """A file rewritten in place with the same size and mtime but other content is not
    mistaken for the one an array was built from."""
    p = tmp_path / "i.zt"
    x = _data((8, 8))
    zt.to_ztensor(x, p, "x")
    arr = zt.from_ztensor(p, "x")
    st = os.stat(p)
    other = tmp_path / "o.zt"
    zt.to_ztensor(x[::-1].copy(), other, "x")
    with open(p, "r+b") as f:  # the same inode, the same size, another tensor
        f.write(other.read_bytes())
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(p).st_size == st.st_size and os.stat(p).st_mtime_ns == st.st_mtime_ns
    with pytest.raises(zt.ZTensorError, match="modified since"):
        arr.compute(scheduler="sync")


def test_compute_false_returns_delayed(tmp_path):
    p = tmp_path / "d.zt"
    x = _data((20, 20))
    delayed = zt.to_ztensor(da.from_array(x, chunks=7), p, "x", compress=3, compute=False)
    assert isinstance(delayed, Delayed)
    assert os.listdir(tmp_path) == []  # nothing happens until it is computed
    cloudpickle.loads(cloudpickle.dumps(delayed)).compute()
    np.testing.assert_array_equal(zt.from_ztensor(p, "x").compute(), x)
    before = p.read_bytes()
    grow = zt.to_ztensor(x, p, "x", mode="a", append_dim=0, compute=False)
    extra = zt.to_ztensor(x, p, "y", mode="a", compute=False)
    assert p.read_bytes() == before
    grow.compute()
    with pytest.raises(zt.ZTensorError, match="changed since the write was planned"):
        extra.compute()  # planned against the file before the growth: refused, no harm
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), np.concatenate([x, x]))
        assert r.tensor_names == ["x"]
    assert sorted(os.listdir(tmp_path)) == ["d.zt"]


def _boom(block, block_info=None):
    if block_info[0]["chunk-location"] == (1, 1):
        raise RuntimeError("boom in a block")
    return block


@pytest.mark.parametrize("kw", [{}, {"compress": 3}], ids=["raw", "zstd"])
@pytest.mark.parametrize("mode", ["w", "a"])
def test_failed_computation_leaves_previous_file(tmp_path, kw, mode):
    p = tmp_path / "f.zt"
    zt.to_ztensor({"old": _data((10, 10))}, p, compress=3)
    before = p.read_bytes()
    bad = da.from_array(_data((30, 30)), chunks=10).map_blocks(_boom, dtype="f4")
    with pytest.raises(RuntimeError, match="boom"):
        zt.to_ztensor(bad, p, "new", mode=mode, **kw)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]


@pytest.mark.parametrize("kw", [{}, {"compress": 3}], ids=["raw", "zstd"])
@pytest.mark.parametrize("mode", ["w", "a"])
def test_failed_deferred_write_cleans_up(tmp_path, scheduler, kw, mode):
    """compute=False, then a block of the computation raises: no temp file, no lock file,
    the previous file byte for byte, and the next write (an append too) just works."""
    p = tmp_path / "f.zt"
    zt.to_ztensor({"old": _data((10, 10))}, p, compress=3)
    before = p.read_bytes()
    bad = da.from_array(_data((30, 30)), chunks=10).map_blocks(_boom, dtype="f4")
    deferred = zt.to_ztensor(bad, p, "new", mode=mode, compute=False, **kw)
    with pytest.raises(RuntimeError, match="boom"):
        deferred.compute()
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]
    good = _data((30, 30), seed=5)
    zt.to_ztensor(da.from_array(good, chunks=10), p, "new", mode="a", compute=False, **kw).compute()
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("new"), good)
        np.testing.assert_array_equal(r.read_tensor("old"), _data((10, 10)))
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]


@pytest.mark.parametrize("mode", ["w", "a"])
@pytest.mark.parametrize("sched", ["threads", "sync", "processes"])
def test_failed_deferred_write_in_dask_compute_cleans_up(tmp_path, process_pool, mode, sched):
    """dask.compute of several collections on a local scheduler: the failure is undone too,
    and computing the undone Delayed again leaves nothing behind either."""
    p = tmp_path / "f.zt"
    zt.to_ztensor({"old": _data((10, 10))}, p)
    before = p.read_bytes()
    bad = da.from_array(_data((30, 30)), chunks=10).map_blocks(_boom, dtype="f4")
    deferred = zt.to_ztensor(bad, p, "new", mode=mode, compress=3, compute=False)
    other = da.ones(4, chunks=2).sum()
    extra = {"pool": process_pool} if sched == "processes" else {}
    with dask.config.set(scheduler=sched, **extra):
        with pytest.raises(RuntimeError, match="boom"):
            dask.compute(other, deferred)
        assert p.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["f.zt"]
        # refused in this process; a worker process may start it again, and it fails again
        again = zt.ZTensorError if sched != "processes" else (zt.ZTensorError, RuntimeError)
        with pytest.raises(again, match="undone|boom"):
            deferred.compute()
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]


def test_unpickled_deferred_write_cleans_up_after_dask_compute(tmp_path):
    """A deferred write shipped by pickle is still undone when dask.compute of it fails."""
    p = tmp_path / "f.zt"
    zt.to_ztensor({"old": _data((10, 10))}, p)
    before = p.read_bytes()
    bad = da.from_array(_data((30, 30)), chunks=10).map_blocks(_boom, dtype="f4")
    deferred = zt.to_ztensor(bad, p, "new", mode="a", compress=3, compute=False)
    loaded = pickle.loads(pickle.dumps(deferred))
    del deferred
    with pytest.raises(RuntimeError, match="boom"):
        dask.compute(loaded, scheduler="threads")
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]


def test_unknown_chunk_sizes_are_refused(tmp_path):
    x = da.from_array(_data((10, 4)), chunks=3)
    y = x[x[:, 0] > 0]
    with pytest.raises(zt.ZTensorError, match="compute_chunk_sizes"):
        zt.to_ztensor(y, tmp_path / "u.zt", "y")
    assert os.listdir(tmp_path) == []


def test_mode_w_dash_refuses_existing(tmp_path):
    p = tmp_path / "m.zt"
    zt.to_ztensor(_data((4, 4)), p, "x")
    with pytest.raises(FileExistsError):
        zt.to_ztensor(_data((4, 4)), p, "x")
    zt.to_ztensor(_data((5, 5), seed=3), p, "y", mode="a", compress=True)
    with zt.Reader(p) as r:
        assert r.tensor_names == ["x", "y"]
        np.testing.assert_array_equal(r.read_tensor("y"), _data((5, 5), seed=3))
    with pytest.raises(zt.ZTensorError, match="already exists"):
        zt.to_ztensor(_data((4, 4)), p, "x", mode="a")


def test_grow_ten_times_along_axis_0(tmp_path, zref):
    p = tmp_path / "g.zt"
    zt.to_ztensor({"keep": np.arange(6, dtype="<i4")}, p)
    rng = np.random.default_rng(7)
    parts = []
    for k in range(10):
        n = int(rng.integers(1, 9))
        part = rng.integers(-1000, 1000, (n, 5)).astype("<i4")
        parts.append(part)
        src = da.from_array(part, chunks=(max(1, n // 2), 5)) if k % 2 else part
        zt.to_ztensor(src, p, "x", mode="a", append_dim=0, chunks=(4, 3), compress=k % 3)
        want = np.concatenate(parts)
        with zt.Reader(p) as r:
            np.testing.assert_array_equal(r.read_tensor("x"), want)
            assert r.metadata("x").attributes["chunk_grid"]["chunk_shape"] == [4, 3]
        np.testing.assert_array_equal(zt.from_ztensor(p, "x").compute(), want)
    np.testing.assert_array_equal(zref.Reader(str(p)).read_tensor("keep"), np.arange(6))


def test_bad_growth_fails_before_writing(tmp_path):
    p = tmp_path / "g.zt"
    zt.to_ztensor(_data((6, 4)), p, "x", chunks=(4, 4))
    zt.to_ztensor({"dense": _data((6, 4))}, p, mode="a")
    before = p.read_bytes()
    cases = [
        (dict(append_dim=2), "not an axis"),
        (dict(append_dim=1), "along axis 1"),
        (dict(append_dim=0, arr=_data((3, 4), "<f8")), "f64"),
        (dict(append_dim=0, arr=_data((3, 5))), "shape"),
        (dict(append_dim=0, name="dense"), "needs a chunked object"),
    ]
    for kw, match in cases:
        arr = kw.pop("arr", _data((3, 4)))
        name = kw.pop("name", "x")
        with pytest.raises(zt.ZTensorError, match=match):
            zt.to_ztensor(arr, p, name, mode="a", **kw)
        assert p.read_bytes() == before


def test_checksums_and_dtypes(tmp_path):
    import ml_dtypes

    x = _data((12, 8)).astype(ml_dtypes.bfloat16)
    big = _data((12, 8), ">f8")
    p = tmp_path / "c.zt"
    zt.to_ztensor(
        {"bf": da.from_array(x, chunks=5), "big": big, "z": big},
        p,
        checksum="crc32c",
        encoding={"z": {"compress": 3, "chunks": (5, 5)}},
    )
    with zt.Reader(p, verify=True) as r:
        np.testing.assert_array_equal(r.read_tensor("bf"), x)
        np.testing.assert_array_equal(r.read_tensor("big"), big)
        np.testing.assert_array_equal(r.read_tensor("z"), big)
        assert all(
            c.digest.startswith("crc32c:0x")
            for n in r.tensor_names
            for c in r.metadata(n).components.values()
        )
    arr = zt.from_ztensor(p, "z", verify_checksum=True)
    np.testing.assert_array_equal(arr.compute(), big)


def test_fill_value_and_empty_axes(tmp_path):
    p = tmp_path / "e.zt"
    zt.to_ztensor({"empty": np.zeros((0, 4), "<f4"), "scalar": np.array(2.5)}, p, compress=3)
    with zt.Reader(p) as r:
        assert r.read_tensor("empty").shape == (0, 4)
        assert r.read_tensor("scalar").shape == () and r.read_tensor("scalar") == 2.5
    assert zt.from_ztensor(p, "empty").compute().shape == (0, 4)
    q = tmp_path / "f.zt"
    zt.to_ztensor(_data((5, 5)), q, "x", chunks=(2, 2), encoding={"fill_value": -1.0})
    with zt.Reader(q) as r:
        assert r.metadata("x").attributes["chunk_grid"]["fill_value"] == -1.0


def test_region_rewrites_only_the_chunks_it_touches(tmp_path):
    """Aligned and unaligned boxes: chunks the box covers whole come from the new data,
    chunks it covers in part are the stored chunk patched; untouched chunks keep their
    blobs, and the stored encoding and digest algorithm are kept."""
    p = tmp_path / "r.zt"
    x = _data((10, 6))
    zt.to_ztensor(x, p, "x", chunks=(4, 3), compress=3, checksum="crc32c")
    zt.to_ztensor({"d": x}, p, mode="a")
    want = x.copy()
    boxes = [
        (slice(4, 8), slice(0, 3)),
        (slice(8, None), slice(3, 6)),
        (slice(0, 4),),
        (slice(2, 6),),  # unaligned rows: chunks 0 and 1 patched
        (slice(1, 9), slice(2, 4)),  # unaligned on both axes, inside every chunk row
    ]
    for box in boxes:
        with zt.Reader(p) as r:
            before = r.chunks("x")
        grid_rows = range(box[0].indices(10)[0] // 4, -(-box[0].indices(10)[1] // 4))
        new = _data(want[box].shape, seed=9)
        want[box] = new
        zt.to_ztensor(da.from_array(new, chunks=2), p, "x", mode="a", region=box)
        with zt.Reader(p, verify=True) as r:
            np.testing.assert_array_equal(r.read_tensor("x"), want)
            np.testing.assert_array_equal(r.read_tensor("d"), x)
            after = r.chunks("x")
        cols = box[1].indices(6)[:2] if len(box) > 1 else (0, 6)
        grid_cols = range(cols[0] // 3, -(-cols[1] // 3))
        for (i, j), comp in after.items():
            touched = i in grid_rows and j in grid_cols
            assert (comp != before[i, j]) == touched, (box, i, j)
            assert comp.encoding == "zstd" and comp.digest.startswith("crc32c:")
    before = p.read_bytes()
    bad = [
        ("x", (slice(0, 4),), _data((3, 6)), "region shape"),
        ("x", (slice(0, 4),), _data((4, 6), "<f8"), "f64"),
        ("d", (slice(0, 4),), _data((4, 6)), "chunked object"),
        ("nope", (slice(0, 4),), _data((4, 6)), "existing object"),
    ]
    for name, box, arr, match in bad:
        with pytest.raises(zt.ZTensorError, match=match):
            zt.to_ztensor(arr, p, name, mode="a", region=box)
    assert p.read_bytes() == before


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
    data=st.data(),
    dtype=st.sampled_from(["<f4", "<i2", "|u1", "<f8"]),
    compress=st.sampled_from([False, 1]),
)
def test_chunked_round_trip_property(tmp_path_factory, shape, data, dtype, compress):
    shape = tuple(shape)
    x = (np.arange(int(np.prod(shape)), dtype=np.int64) * 37 % 251).astype(dtype).reshape(shape)
    store = tuple(data.draw(st.integers(1, max(s, 1) + 2)) for s in shape)
    split = tuple(data.draw(st.integers(1, max(s, 1))) for s in shape)
    p = tmp_path_factory.mktemp("prop") / "p.zt"
    with dask.config.set(scheduler="sync"):
        zt.to_ztensor(da.from_array(x, chunks=split or ()), p, "x", chunks=store, compress=compress)
        got = zt.from_ztensor(p, "x")
        assert got.chunks == tuple(
            tuple(min(c, s - i) for i in range(0, s, c)) or (0,) for s, c in zip(shape, store)
        )
        np.testing.assert_array_equal(got.compute(), x)
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), x)
        assert r.metadata("x").attributes["chunk_grid"]["chunk_shape"] == list(store)


def test_append_refuses_a_corrupt_partial_edge_chunk(tmp_path):
    """The partial last chunk row is read back to be rewritten: a flipped byte in it must
    raise ChecksumError (not be carried into the new blob) and leave the file as it was."""
    p = tmp_path / "c.zt"
    zt.to_ztensor(_data((6, 4)), p, "x", chunks=(4, 4), checksum="crc32c")
    with zt.Reader(p) as r:
        edge = r.chunks("x")[1, 0]
    raw = bytearray(p.read_bytes())
    raw[edge.offset] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(zt.ChecksumError) as info:
        zt.to_ztensor(_data((2, 4)), p, "x", mode="a", append_dim=0)
    assert "c.1.0" in str(info.value) and "'x'" in str(info.value)
    assert p.read_bytes() == bytes(raw)
