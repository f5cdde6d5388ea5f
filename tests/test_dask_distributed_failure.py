"""Deferred (compute=False) and immediate Dask writes that fail on a distributed cluster of
worker processes: the previous file stays byte for byte, no hidden temp or lock file is
left in the folder, and the next write to the same path succeeds. Oracles: the arrays
written before, the folder listing, and the reference ztensor 1.1.1 reader."""

from __future__ import annotations

import os

import dask
import dask.array as da
import numpy as np
import pytest

import ztensor_array as zt

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, set_as_default=True) as c,
    ):
        yield c


def _data(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 100).astype("<f4")


def _boom(block, block_info=None):
    if block_info[0]["chunk-location"] == (1, 1):
        raise RuntimeError("boom in a block")
    return block


def _bad():
    return da.from_array(_data((30, 30), seed=1), chunks=10).map_blocks(_boom, dtype="f4")


OLD = {"old": _data((10, 10)), "older": _data((7,), seed=2)}
KW = {"raw": {}, "zstd": {"compress": 3}}


def _previous(path):
    """A finalized file the reference reader can read (one zstd, one raw dense object)."""
    with zt.Writer(path) as w:
        w.add_tensor("old", OLD["old"], compress=3)
        w.add_tensor("older", OLD["older"])
    return path.read_bytes()


def _check_intact(path, before, zref):
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temp or lock file
    with zt.Reader(path) as r:
        assert r.tensor_names == sorted(OLD)  # the new object is absent
        for name, value in OLD.items():
            np.testing.assert_array_equal(r.read_tensor(name), value)
    with zref.Reader(str(path)) as ref:  # the reference reader agrees
        theirs = {name: np.array(ref.read_tensor(name), copy=True) for name in OLD}
    for name, value in OLD.items():
        np.testing.assert_array_equal(theirs[name], value)


def _check_next_write(path, mode, kw):
    good = _data((30, 30), seed=5)
    zt.to_ztensor(da.from_array(good, chunks=10), path, "new", mode=mode, **kw)
    with zt.Reader(path) as r:
        np.testing.assert_array_equal(r.read_tensor("new"), good)
        if mode == "a":
            for name, value in OLD.items():
                np.testing.assert_array_equal(r.read_tensor(name), value)
    assert sorted(os.listdir(path.parent)) == [path.name]


def _client_compute(client, d):
    return client.compute(d).result()


def _dask_compute(client, d):
    return dask.compute(d)


def _dask_compute_with_others(client, d):
    return dask.compute(da.ones(4, chunks=2).sum(), d)


HOW = {
    "client.compute": _client_compute,
    "dask.compute": _dask_compute,
    "dask.compute_several": _dask_compute_with_others,
}


@pytest.mark.parametrize("how", list(HOW))
@pytest.mark.parametrize("kw", list(KW))
@pytest.mark.parametrize("mode", ["w", "a"])
def test_failed_deferred_write_on_cluster(tmp_path, client, zref, mode, kw, how):
    p = tmp_path / "f.zt"
    before = _previous(p)
    deferred = zt.to_ztensor(_bad(), p, "new", mode=mode, compute=False, **KW[kw])
    with pytest.raises(RuntimeError, match="boom"):
        HOW[how](client, deferred)
    _check_intact(p, before, zref)
    _check_next_write(p, mode, KW[kw])


@pytest.mark.parametrize("kw", list(KW))
@pytest.mark.parametrize("mode", ["w", "a"])
def test_failed_immediate_write_on_cluster(tmp_path, client, zref, mode, kw):
    p = tmp_path / "f.zt"
    before = _previous(p)
    with pytest.raises(RuntimeError, match="boom"):
        zt.to_ztensor(_bad(), p, "new", mode=mode, **KW[kw])
    _check_intact(p, before, zref)
    _check_next_write(p, mode, KW[kw])


@pytest.mark.parametrize("mode", ["w", "a"])
def test_failed_deferred_write_then_compute_again(tmp_path, client, zref, mode):
    """The same failed Delayed computed a second time fails again and still leaves nothing."""
    p = tmp_path / "f.zt"
    before = _previous(p)
    deferred = zt.to_ztensor(_bad(), p, "new", mode=mode, compress=3, compute=False)
    for _ in range(2):
        with pytest.raises((RuntimeError, zt.ZTensorError), match="boom|undone"):
            client.compute(deferred).result()
        _check_intact(p, before, zref)


@pytest.mark.parametrize("mode", ["w", "a"])
def test_successful_deferred_write_on_cluster(tmp_path, client, mode):
    """The cleanup machinery leaves a successful write alone."""
    p = tmp_path / "f.zt"
    _previous(p)
    good = _data((30, 30), seed=7)
    d = zt.to_ztensor(da.from_array(good, chunks=10), p, "new", mode=mode, compute=False)
    client.compute(d).result()
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("new"), good)
        assert ("old" in r.tensor_names) == (mode == "a")
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]


def _hold(block, block_info=None):
    """Waits for the test's go signal, so the write is mid-way when its client goes away."""
    distributed.Event("ztensor-test-go").wait()
    return block


def _wait_for(condition, what: str, limit: float = 60.0) -> None:
    """Waits for something the cluster does in the background (not a timing assertion)."""
    import time

    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["w", "a"])
def test_write_abandoned_by_its_client_is_undone(tmp_path, client, zref, mode):
    """The only client of a deferred write goes away mid-way (its tasks released before the
    commit ran): the scheduler undoes the write; late block writes cannot bring it back."""
    p = tmp_path / "f.zt"
    before = _previous(p)
    go = distributed.Event("ztensor-test-go", client=client)
    go.clear()
    source = da.from_array(_data((30, 30), seed=1), chunks=10)
    held = source.map_blocks(_hold, meta=np.empty((0, 0), "f4"))
    deferred = zt.to_ztensor(held, p, "new", mode=mode, compress=3, compute=False)
    with distributed.Client(client.scheduler.address, set_as_default=False) as other:
        pending = other.compute(deferred)  # never waited for
        _wait_for(lambda: len(os.listdir(tmp_path)) > 1, "the write to begin")
        assert not pending.done()
    _wait_for(lambda: os.listdir(tmp_path) == ["f.zt"], "the scheduler to undo the write")
    go.set()  # the held blocks finish; their writes are refused
    client.run(lambda: None)  # a round trip to every worker
    _check_intact(p, before, zref)
    _check_next_write(p, mode, {"compress": 3})


def test_first_task_refuses_a_write_whose_commit_cannot_run(tmp_path, client):
    """What the write's first task is told when it asks the scheduler: a commit task that
    erred, or that the scheduler no longer knows while the asking task is not running,
    will never run (so the first task undoes the file it just made)."""
    from ztensor_array.backends.dask.watch import watch_write

    p = tmp_path / "f.zt"
    _previous(p)
    deferred = zt.to_ztensor(_bad(), p, "new", mode="w", compute=False)
    erred = client.compute(deferred)  # held: its erred commit task stays on the scheduler
    with pytest.raises(RuntimeError, match="boom"):
        erred.result()
    plan = deferred._plan
    assert client.run_on_scheduler(watch_write, deferred.key, "no-such-task", plan) is False
    assert client.run_on_scheduler(watch_write, "no-such-key", "no-such-task", plan) is False
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]
