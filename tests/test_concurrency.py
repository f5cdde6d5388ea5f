"""Writers under concurrency and crashes (issue 15, items 1-7 and 15; SPEC §9.3).

Races are made deterministic with events and hooks in our own code (never sleeps that hope
for an ordering); crashes are real SIGKILLs of a child process at a chosen point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import ztensor as reference

import ztensor_array as zt
from ztensor_array import files, parallel
from ztensor_array.manifest import Component, Object
from ztensor_array.ops import repair as repair_mod


@pytest.fixture
def short_wait(monkeypatch):
    """Writers give up on a held lock after 50 ms (the default waits a second)."""
    monkeypatch.setattr(files, "LOCK_WAIT", 0.05)


def _names(path) -> list[str]:
    with zt.Reader(path) as r:
        return r.tensor_names


def _base(tmp_path, name="f.zt", *, aligned: bool = False):
    """A finalized file whose size is not a multiple of 64 (a parallel begin pads it), or
    with ``aligned`` one whose size is (a parallel begin leaves it as it is)."""
    p = tmp_path / name
    for k in range(200):
        with zt.Writer(p, "w") as w:
            w.add_tensor("x", np.arange(10.0))
            w.add_tensor("y", np.arange(7, dtype=np.int16))
            if k:
                w.attributes = {"pad": "p" * k}
        if (p.stat().st_size % 64 == 0) == aligned:
            return p
    raise AssertionError("no padding gave the size wanted")


def _begun(p, blob=b"chunk" * 100):
    """A parallel append begun, one blob of it written: the file has a torn tail."""
    plan = parallel.plan(p, "a")
    parallel.begin(plan, [])
    with plan.fence.hold():
        offset = parallel.append_blob(plan.target, blob)
    return plan, offset, len(blob)


def _commit_blob(plan, offset, length):
    comp = Component("u8", offset, length, "raw", None, None, None)
    return parallel.commit(plan, {"new": Object((length,), "dense", {"data": comp}, None)})


# --------------------------------------------------------------------------- item 1


def test_a_reader_during_a_parallel_append_sees_the_last_complete_state(tmp_path):
    p = _base(tmp_path)
    plan, offset, n = _begun(p)
    assert _names(p) == ["x", "y"]  # not a torn-file error that sends users to repair
    np.testing.assert_array_equal(zt.load_file(p)["x"], np.arange(10.0))
    _commit_blob(plan, offset, n)
    assert _names(p) == ["new", "x", "y"]
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]


def test_repair_refuses_a_parallel_append_in_progress(tmp_path, short_wait):
    p = _base(tmp_path)
    plan, offset, n = _begun(p)
    size = p.stat().st_size
    with pytest.raises(zt.AppendInProgressError, match="parallel append") as info:
        zt.repair(p)
    assert "abandon" in str(info.value)
    assert p.stat().st_size == size  # nothing was cut
    _commit_blob(plan, offset, n)
    assert _names(p) == ["new", "x", "y"]
    assert zt.load_file(p)["new"].tobytes() == b"chunk" * 100


def test_repair_abandons_a_dead_parallel_append_on_request(tmp_path):
    p = _base(tmp_path)
    before = p.read_bytes()
    plan, _, _ = _begun(p)
    report = zt.repair(p, abandon=True)
    assert report.kept_size == len(before) and p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]
    with pytest.raises(zt.ZTensorError, match="aborted"), plan.fence.hold():
        pass  # a late worker of the abandoned append writes nothing


@pytest.mark.parametrize("aligned", [False, True])
def test_no_writer_finalizes_in_the_middle_of_a_parallel_append(tmp_path, short_wait, aligned):
    """Writer "a", compact and a second parallel append are refused while one runs,
    whether or not the file size happened to be a multiple of 64 already."""
    p = _base(tmp_path, aligned=aligned)
    plan = parallel.plan(p, "a")
    parallel.begin(plan, [])  # nothing written yet: an aligned file is still complete
    with pytest.raises(zt.AppendInProgressError):
        zt.Writer(p, "a")
    plan_blob = b"chunk" * 100
    with plan.fence.hold():
        offset, n = parallel.append_blob(plan.target, plan_blob), len(plan_blob)
    with pytest.raises(zt.AppendInProgressError):
        zt.Writer(p, "a")
    with pytest.raises(zt.AppendInProgressError):
        zt.compact(p)
    with pytest.raises(zt.AppendInProgressError):
        parallel.plan(p, "a")
    _commit_blob(plan, offset, n)
    assert "new" in _names(p)


def test_parallel_appends_through_a_symlink_exclude_each_other(tmp_path, short_wait):
    p = _base(tmp_path, aligned=True)  # the first begin leaves the size as planned
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "link.zt"
    link.symlink_to(p)
    first, second = parallel.plan(p, "a"), parallel.plan(link, "a")
    parallel.begin(first, [])
    with pytest.raises(zt.AppendInProgressError):
        parallel.begin(second, [])
    with first.fence.hold():
        offset = parallel.append_blob(first.target, b"abc")
    _commit_blob(first, offset, 3)
    assert _names(link) == ["new", "x", "y"]


def test_appenders_through_a_symlink_exclude_each_other(tmp_path, short_wait):
    p = _base(tmp_path)
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "link.zt"
    link.symlink_to(p)
    with zt.Writer(p, "a") as w:
        w.add_tensor("a", np.arange(2))
        for attempt in (lambda: zt.Writer(link, "a"), lambda: zt.repair(link)):
            with pytest.raises(zt.FileBusyError):
                attempt()
    assert _names(link) == ["a", "x", "y"]


def test_dask_append_in_progress_meets_readers_and_writers(tmp_path, short_wait):
    """A real ``to_ztensor`` append, paused inside its first chunk task: readers see the
    previous state; Writer "a", compact and repair are refused; the append then commits."""
    da = pytest.importorskip("dask.array")
    import dask

    p = _base(tmp_path)
    started, release = threading.Event(), threading.Event()

    def slow(block):
        if not block.size:
            return block
        started.set()
        assert release.wait(30)
        return block

    data = da.from_array(np.arange(4000.0), chunks=1000).map_blocks(slow, dtype=np.float64)
    result = {}

    def run():
        with dask.config.set(scheduler="threads", num_workers=1):
            try:
                result["size"] = zt.to_ztensor({"big": data}, p, mode="a", compress=True)
            except BaseException as exc:  # reported below
                result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    try:
        assert started.wait(30)
        assert files.read_marker(str(p), files.identity(str(p))) is not None
        assert _names(p) == ["x", "y"]
        for attempt in (lambda: zt.Writer(p, "a"), lambda: zt.compact(p), lambda: zt.repair(p)):
            with pytest.raises(zt.AppendInProgressError):
                attempt()
    finally:
        release.set()
        t.join(60)
    assert "error" not in result, result.get("error")
    np.testing.assert_array_equal(zt.load_file(p)["big"], np.arange(4000.0))
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]


# --------------------------------------------------------------------------- item 2


def test_compact_does_not_drop_an_open_append(tmp_path, short_wait):
    """An append that opened before compact keeps its tensors: compact waits for it (and
    here gives up), instead of renaming a copy over the file the append finalizes into."""
    p = _base(tmp_path)
    w = zt.Writer(p, "a")
    w.add_tensor("queued", np.arange(50_000.0), compress=True)
    with pytest.raises(zt.FileBusyError):
        zt.compact(p)
    w.finalize()
    np.testing.assert_array_equal(zt.load_file(p)["queued"], np.arange(50_000.0))


def test_an_append_waiting_for_compact_lands_in_the_new_file(tmp_path, monkeypatch):
    """Compact holds the lock from its read to its rename; an appender waiting for it then
    finds the path names a new file and appends to that one."""
    monkeypatch.setattr(files, "LOCK_WAIT", 30.0)
    p = _base(tmp_path)
    with zt.Writer(p, "a") as w:  # orphaned bytes for compact to drop
        w.remove("y")
    copying, go_on = threading.Event(), threading.Event()
    real_copy = zt.Writer.copy_from

    def paused_copy(self, *args, **kwargs):
        copying.set()
        assert go_on.wait(30)
        return real_copy(self, *args, **kwargs)

    monkeypatch.setattr(zt.Writer, "copy_from", paused_copy)
    saved = {}
    compactor = threading.Thread(target=lambda: saved.setdefault("n", zt.compact(p)))
    compactor.start()
    assert copying.wait(30)  # compact holds the lock and has read the old file
    monkeypatch.setattr(zt.Writer, "copy_from", real_copy)
    appended = {}

    def append():
        with zt.Writer(p, "a") as a:
            a.add_tensor("late", np.arange(5))
        appended["ok"] = True

    appender = threading.Thread(target=append)
    appender.start()
    appender.join(0.2)
    assert appender.is_alive()  # waiting for compact's lock
    go_on.set()
    compactor.join(30)
    appender.join(30)
    assert saved["n"] > 0 and appended["ok"]
    assert _names(p) == ["late", "x"]


def test_an_appender_whose_file_was_replaced_fails_loudly(tmp_path):
    p = _base(tmp_path)
    w = zt.Writer(p, "a")
    w.add_tensor("lost", np.arange(3))
    other = tmp_path / "other.zt"
    zt.save_file({"z": np.arange(2)}, other)
    os.replace(other, p)  # e.g. another tool renamed a new file over it
    with pytest.raises(zt.FileReplacedError, match="replaced"):
        w.finalize()
    assert _names(p) == ["z"]


# --------------------------------------------------------------------------- item 3


def test_repair_locks_before_it_scans(tmp_path, monkeypatch):
    """An append that finishes while repair looks for the last complete state is not cut:
    repair waits for the appender's lock before it scans (the appender here finalizes as
    soon as repair's scan starts, or after two seconds if the scan never starts first)."""
    monkeypatch.setattr(files, "LOCK_WAIT", 30.0)
    p = _base(tmp_path)
    scanning, finalized = threading.Event(), threading.Event()
    real_scan = repair_mod.last_complete_state

    def scan(*args, **kwargs):
        found = real_scan(*args, **kwargs)
        scanning.set()
        finalized.wait(5)
        return found

    monkeypatch.setattr(repair_mod, "last_complete_state", scan)
    w = zt.Writer(p, "a")
    w.add_tensor("appended", np.arange(100_000, dtype=np.int32))
    w._flush()  # its blob is written: the file has a torn tail now
    reports = []
    repairer = threading.Thread(target=lambda: reports.append(zt.repair(p)))
    repairer.start()
    scanning.wait(2)
    w.finalize()
    finalized.set()
    repairer.join(30)
    assert reports and not reports[0].changed
    np.testing.assert_array_equal(zt.load_file(p)["appended"], np.arange(100_000))


# --------------------------------------------------------------------------- item 4

_KILLED_APPEND = textwrap.dedent(
    """
    import os, signal, sys, numpy as np, ztensor_array as zt
    from ztensor_array import files
    path, nested, when = sys.argv[1], sys.argv[2], sys.argv[3]
    blob = np.frombuffer(open(nested, "rb").read(), dtype=np.uint8)
    if when == "after-footer":  # killed after the footer, before the marker is removed
        files.FileLock.end_append = lambda self, m: os.kill(os.getpid(), signal.SIGKILL)
    w = zt.Writer(path, mode="a")
    w.add_tensor("stored_file", blob)
    w._flush()
    if when == "after-blob":
        os.kill(os.getpid(), signal.SIGKILL)
    w.finalize()
    """
)


def _killed_append(tmp_path, when: str):
    p = _base(tmp_path)
    before = p.read_bytes()
    nested = tmp_path / "nested.zt"  # a complete file stored as the append's last blob
    zt.save_file({"x": np.full(10, 666.0), "y": np.full(7, 9, np.int16)}, nested)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_APPEND, str(p), str(nested), when],
        capture_output=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    if when == "after-blob":  # the torn tail ends with a valid footer
        assert p.read_bytes().endswith(nested.read_bytes())
    return p, before


def test_a_killed_append_whose_tail_looks_complete_is_not_a_state(tmp_path):
    p, before = _killed_append(tmp_path, "after-blob")
    got = zt.load_file(p)  # the previous state, not the stored file's manifest
    np.testing.assert_array_equal(got["x"], np.arange(10.0))
    assert sorted(got) == ["x", "y"]
    report = zt.repair(p)
    assert report.changed and p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt", "nested.zt"]
    np.testing.assert_array_equal(reference.Reader(str(p)).read_tensor("x"), np.arange(10.0))


def test_an_append_killed_after_its_footer_is_complete(tmp_path):
    """The manifest that carries the marker's token is the append's own: complete."""
    p, before = _killed_append(tmp_path, "after-footer")
    assert sorted(zt.load_file(p)) == ["stored_file", "x", "y"]
    with zt.Writer(p, "a") as w:  # the dead marker of a complete append is cleared
        w.add_tensor("more", np.arange(2))
    assert sorted(zt.load_file(p)) == ["more", "stored_file", "x", "y"]
    report = zt.repair(p)
    assert not report.changed
    assert sorted(os.listdir(tmp_path)) == ["f.zt", "nested.zt"]  # the marker is gone
    assert sorted(reference.Reader(str(p)).get_tensor_names()) == ["more", "stored_file", "x", "y"]


def test_appended_files_stay_readable_by_the_reference(tmp_path):
    """The token key is an extra root key; the reference reader ignores it."""
    p = _base(tmp_path)
    with zt.Writer(p, "a") as w:
        w.add_tensor("z", np.arange(4, dtype=np.float32))
    with zt.Reader(p) as r:
        assert files.APPEND_KEY in r.manifest.extra
    ref = reference.Reader(str(p))
    np.testing.assert_array_equal(ref.read_tensor("z"), np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(ref.read_tensor("x"), np.arange(10.0))


# --------------------------------------------------------------------------- item 5


def test_a_manifest_over_the_readers_cap_is_refused_before_the_file_changes(tmp_path, monkeypatch):
    from ztensor_array import constants

    p = _base(tmp_path)
    before = p.read_bytes()
    monkeypatch.setattr(constants, "MAX_MANIFEST_SIZE", 2000)
    with pytest.raises(zt.ZTensorError, match="limit every reader enforces"):
        with zt.Writer(p, "a") as w:
            for i in range(40):
                w.add_tensor(f"t{i:03d}", np.arange(3))
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]
    with pytest.raises(zt.ZTensorError, match="limit every reader enforces"):
        zt.save_file({f"t{i:03d}": np.arange(3) for i in range(40)}, tmp_path / "new.zt")
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]


# --------------------------------------------------------------------------- item 6


@pytest.mark.parametrize("mode", ["a", "w"])
def test_a_failed_parallel_begin_is_undone(tmp_path, mode):
    """Begin preallocates the raw regions; one larger than the filesystem allows (8 PiB:
    EFBIG, as a file size limit or a full quota give) fails it, and it undoes itself."""
    da = pytest.importorskip("dask.array")
    p = _base(tmp_path)
    before = p.read_bytes()
    huge = da.zeros((1 << 50,), dtype=np.uint8, chunks=(1 << 49,))  # never computed
    with pytest.raises(zt.ZTensorError) as info:
        zt.to_ztensor({"big": huge}, p, mode=mode)
    assert str(p) in str(info.value)  # the error names the file
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]  # no marker, no hidden temp file
    zt.to_ztensor({"later": np.arange(3.0)}, p, mode="a")  # not "another append runs"
    assert _names(p) == ["later", "x", "y"]  # mode "w" failed: the old file stays


# --------------------------------------------------------------------------- item 7


def test_the_filesystem_type_comes_from_the_mount_table(tmp_path):
    found = subprocess.run(
        ["findmnt", "-no", "FSTYPE", "-T", str(tmp_path)], capture_output=True, text=True
    )
    if found.returncode != 0:
        pytest.skip("findmnt is not available")
    assert files.filesystem_type(str(tmp_path / "not-yet.zt")) == found.stdout.strip()


def test_network_filesystems_reserve_append_offsets_under_the_lock(tmp_path, monkeypatch):
    """On NFS and its kin, parallel appends take the file's flock and write at the end
    they read under it (O_APPEND is not atomic there); the whole write still works."""
    monkeypatch.setattr(files, "filesystem_type", lambda path: "nfs4")
    p = _base(tmp_path)
    plan = parallel.plan(p, "a")
    assert plan.locked_appends
    parallel.begin(plan, [])
    holder = os.open(p, os.O_RDONLY)
    files.lock(holder)
    done = threading.Event()
    offsets = []

    def append():
        with plan.fence.hold():
            offsets.append(parallel.append_blob(plan.target, b"x" * 100, locked=True))
        done.set()

    t = threading.Thread(target=append)
    t.start()
    assert not done.wait(0.3)  # waits for the lock: no write without it
    os.close(holder)
    t.join(30)
    assert offsets and offsets[0] % 64 == 0
    _commit_blob(plan, offsets[0], 100)
    assert zt.load_file(p)["new"].tobytes() == b"x" * 100
    zt.to_ztensor({"c": np.arange(20_000.0)}, p, mode="a", compress=True, chunks=(1000,))
    np.testing.assert_array_equal(zt.load_file(p)["c"], np.arange(20_000.0))


# --------------------------------------------------------------------------- item 15


def test_repair_scan_of_a_tail_of_footer_magics_is_bounded(tmp_path):
    """A torn tail of 16 MiB of footer magics (no marker: an old writer's crash) repairs
    in well under a second per MiB (it took 0.6-1.4 s per MiB before)."""
    p = _base(tmp_path)
    before = p.read_bytes()
    with open(p, "ab") as f:
        f.write(b"\0" * (-len(before) % 8) + b"ZTEN1000" * (2 << 20))
    t0 = time.perf_counter()
    report = zt.repair(p)
    assert time.perf_counter() - t0 < 5.0
    assert report.kept_size == len(before) and p.read_bytes() == before


def test_repair_gives_up_on_a_tail_of_valid_looking_footers(tmp_path):
    """Candidates that pass the bulk checks are decoded at most MAX_CANDIDATES times."""
    p = _base(tmp_path)
    fake = b"\xa1" + b"\0" * 15 + (16).to_bytes(8, "little") + b"ZTEN1000"  # map, length 16
    with open(p, "ab") as f:
        f.write(fake * (repair_mod.MAX_CANDIDATES + 10))
    with pytest.raises(zt.FormatError, match="gave up"):
        zt.repair(p)
