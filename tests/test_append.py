"""Append mode, streaming writes, repair/compact and crash safety (issue 4)."""

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ztensor_array as zt


def _write(path, tensors, **kw):
    with zt.Writer(path) as w:
        for name, value in tensors.items():
            w.add_tensor(name, value, **kw)


def _contents(path) -> dict[str, np.ndarray]:
    with zt.Reader(path, verify=True) as r:
        return {n: np.array(r.read_tensor(n)) for n in r.tensor_names}


def _assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        assert got[name].tobytes() == value.tobytes(), name


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.zt"
    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.int16)}
    _write(path, tensors, checksum="crc32c")
    return path, tensors


def test_append_keeps_existing_bytes_and_reference_reads_it(base):
    path, tensors = base
    before = path.read_bytes()
    new = {"z": np.linspace(0, 1, 1000), "q": np.arange(7, dtype=np.uint8)}
    with zt.Writer(path, mode="a") as w:
        w.add_tensor("z", new["z"], compress=True, checksum="sha256")
        w.add_tensor("q", new["q"])
    after = path.read_bytes()
    assert after[: len(before)] == before  # existing blobs, manifest and footer untouched
    _assert_same(_contents(path), {**tensors, **new})
    ref = reference.Reader(str(path))
    for name, value in {**tensors, **new}.items():
        np.testing.assert_array_equal(ref.read_tensor(name), value)


def test_append_duplicate_name_is_an_error_and_changes_nothing(base):
    path, _ = base
    before = path.read_bytes()
    with pytest.raises(zt.ZTensorError, match="already exists"):
        with zt.Writer(path, mode="a") as w:
            w.add_tensor("w", np.zeros(3))
    assert path.read_bytes() == before


def test_replace_remove_compact(base):
    path, tensors = base
    with zt.Writer(path, mode="a") as w:
        w.replace("w", np.full((2, 2), 7.0))
        w.remove("b")
        w.add_tensor("c", np.arange(3))
    want = {"w": np.full((2, 2), 7.0), "c": np.arange(3)}
    _assert_same(_contents(path), want)
    size = path.stat().st_size
    saved = zt.compact(path)
    assert saved > 0 and path.stat().st_size == size - saved
    _assert_same(_contents(path), want)
    ref = reference.Reader(str(path))
    assert sorted(ref.tensor_names) == ["c", "w"]


def test_replace_or_remove_missing_name(base):
    path, _ = base
    with zt.Writer(path, mode="a") as w:
        with pytest.raises(zt.ZTensorError, match="no such object"):
            w.remove("nope")
        with pytest.raises(zt.ZTensorError, match="no such object"):
            w.replace("nope", np.zeros(1))


def test_failed_replace_keeps_old_object(base):
    path, tensors = base
    with zt.Writer(path, mode="a") as w:
        with pytest.raises(zt.ZTensorError):
            w.replace("w", np.array(["text"]))  # no zTensor dtype
    _assert_same(_contents(path), tensors)


def test_exception_during_append_leaves_previous_state(base):
    path, tensors = base
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with zt.Writer(path, mode="a") as w:
            w.add_tensor("x", np.zeros(10_000))
            raise RuntimeError("boom")
    assert path.read_bytes() == before


def test_two_appenders_are_refused(base):
    path, _ = base
    with zt.Writer(path, mode="a"):
        with pytest.raises(zt.ZTensorError, match="another writer"):
            zt.Writer(path, mode="a")


def test_every_torn_tail_repairs_to_the_previous_state(base, tmp_path):
    """A crash leaves a prefix of the final file: every prefix must restore."""
    path, tensors = base
    before = path.read_bytes()
    with zt.Writer(path, mode="a") as w:
        w.add_tensor("big", np.arange(3000, dtype=np.float64), compress=True)
        w.add_tensor("raw", np.arange(500, dtype=np.int32))
    after = path.read_bytes()
    cut_path = tmp_path / "cut.zt"
    cuts = sorted(set(range(len(before), len(after) + 1, 13)) | {len(before), len(after)})
    for cut in cuts:
        cut_path.write_bytes(after[:cut])
        if cut == len(after):
            assert len(_contents(cut_path)) == 4
            continue
        if cut > len(before):
            with pytest.raises(zt.TornFileError, match="repair"):
                zt.Reader(cut_path)
            report = zt.repair(cut_path)
            assert report.dropped_bytes == cut - len(before)
            assert report.objects == ("b", "w")
        assert cut_path.read_bytes() == before
        _assert_same(_contents(cut_path), tensors)


def test_repair_to_other_path_leaves_source(base, tmp_path):
    path, tensors = base
    before = path.read_bytes()
    torn = before + b"\x01" * 100
    path.write_bytes(torn)
    out = tmp_path / "fixed.zt"
    report = zt.repair(path, out=out)
    assert report.changed and report.dropped_bytes == 100
    assert path.read_bytes() == torn
    assert out.read_bytes() == before


def test_repair_of_intact_file_changes_nothing(base):
    path, _ = base
    before = path.read_bytes()
    report = zt.repair(path)
    assert not report.changed
    assert path.read_bytes() == before


_CHILD = textwrap.dedent(
    """
    import sys, numpy as np, ztensor_array as zt
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    for i in range(1000):
        with zt.Writer(path, mode="a") as w:
            for j in range(3):
                n = int(rng.integers(1, 200_000))
                w.add_tensor(f"t{i}_{j}", rng.standard_normal(n),
                             compress=bool(rng.integers(0, 2)), checksum="crc32c")
        print(i, flush=True)
    """
)


def _kill_during_appends(tmp_path, seed: int) -> None:
    path = tmp_path / f"victim{seed}.zt"
    tensors = {"keep": np.arange(1000, dtype=np.float32), "k2": np.eye(3)}
    _write(path, tensors)
    rng = np.random.default_rng(seed)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    proc.stdout.readline()  # at least one append happened: the kill lands mid-stream
    time.sleep(float(rng.uniform(0, 0.3)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the killed append's marker stays: readers see the last complete state, unasked
    got = _contents(path)
    for name, value in tensors.items():
        assert got[name].tobytes() == value.tobytes()
    zt.repair(path)  # cuts the torn tail (if any) and removes the marker
    assert sorted(os.listdir(tmp_path)) == [path.name]
    assert _contents(path).keys() == got.keys()
    ref = reference.Reader(str(path))  # the restored file is valid for the reference too
    np.testing.assert_array_equal(ref.read_tensor("keep"), tensors["keep"])


@pytest.mark.parametrize("seed", range(20))
def test_sigkill_during_append(tmp_path, seed):
    _kill_during_appends(tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20, 120))
def test_sigkill_during_append_many(tmp_path, seed):
    _kill_during_appends(tmp_path, seed)


def test_sigkill_before_finalize_of_w_mode_keeps_old_file(base):
    path, tensors = base
    before = path.read_bytes()
    code = textwrap.dedent(
        f"""
        import os, signal, numpy as np, ztensor_array as zt
        w = zt.Writer({str(path)!r})
        w.add_tensor("w", np.zeros(100_000))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["base.zt"]


# ---------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("compress", [False, 3])
@pytest.mark.parametrize("checksum", [None, "crc32c", "sha256"])
def test_stream_tensor_round_trip(tmp_path, compress, checksum):
    path = tmp_path / "s.zt"
    full = np.arange(60_000, dtype=np.float32).reshape(300, 200)
    with zt.Writer(path) as w:
        w.add_tensor("before", np.ones(3))
        with w.stream_tensor(
            "s", full.shape, np.float32, compress=compress, checksum=checksum
        ) as s:
            for block in np.array_split(full, 7):
                s.write(block)
        w.add_tensor("after", np.zeros(2))
    got = _contents(path)
    np.testing.assert_array_equal(got["s"], full)
    np.testing.assert_array_equal(reference.Reader(str(path)).read_tensor("s"), full)
    # the same tensor added in one piece gives the same stored bytes (raw: identical file)
    if not compress:
        other = tmp_path / "o.zt"
        with zt.Writer(other) as w:
            w.add_tensor("before", np.ones(3))
            w.add_tensor("s", full, checksum=checksum)
            w.add_tensor("after", np.zeros(2))
        assert other.read_bytes() == path.read_bytes()


def test_stream_size_mismatch_keeps_previous_state(base):
    path, tensors = base
    before = path.read_bytes()
    with zt.Writer(path, mode="a") as w:
        with pytest.raises(zt.ZTensorError, match="ended after"):
            with w.stream_tensor("s", (10,), np.int64) as s:
                s.write(np.arange(4))
        with pytest.raises(zt.ZTensorError, match="more data"):
            with w.stream_tensor("s", (3,), np.int64) as s:
                s.write(np.arange(4))
        with pytest.raises(zt.ZTensorError, match="dtype"):
            with w.stream_tensor("s", (3,), np.int64) as s:
                s.write(np.arange(3, dtype=np.int32))
    assert path.read_bytes() == before


def test_stream_blocks_other_adds(tmp_path):
    with zt.Writer(tmp_path / "x.zt") as w:
        with w.stream_tensor("s", (2,), np.float64) as s:
            with pytest.raises(zt.ZTensorError, match="still open"):
                w.add_tensor("t", np.zeros(1))
            s.write(np.zeros(2))


# ---------------------------------------------------------------------------- readers


def test_reader_opened_before_append_keeps_its_view(base):
    path, tensors = base
    r = zt.Reader(path)
    view = r.read_tensor("w")
    with zt.Writer(path, mode="a") as w:
        w.add_tensor("new", np.arange(100_000))
        w.replace("w", np.zeros((3, 4), np.float32))
    assert r.tensor_names == ["b", "w"]
    np.testing.assert_array_equal(view, tensors["w"])
    np.testing.assert_array_equal(r.read_tensor("w"), tensors["w"])
    r.close()
    with zt.Reader(path) as r2:
        assert r2.tensor_names == ["b", "new", "w"]
        np.testing.assert_array_equal(r2.read_tensor("w"), 0)


def test_threads_share_one_reader(tmp_path):
    path = tmp_path / "t.zt"
    tensors = {f"t{i}": np.full(5000, i, dtype=np.int64) for i in range(40)}
    with zt.Writer(path) as w:
        for i, (name, value) in enumerate(tensors.items()):
            w.add_tensor(name, value, compress=bool(i % 2), checksum="crc32c")
    errors = []
    with zt.Reader(path, verify=True) as r:

        def work(k):
            try:
                for name in list(tensors)[k::4]:
                    assert r.read_tensor(name).tobytes() == tensors[name].tobytes()
            except Exception as exc:  # collected and re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


# ---------------------------------------------------------------------------- model check

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "append", "replace", "remove", "compact"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 50),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_random_operation_sequences_match_a_model(tmp_path, ops):
    path = tmp_path / "model.zt"
    if path.exists():
        path.unlink()
    _write(path, {})
    model: dict[str, np.ndarray] = {}
    for op, name, n, compress in ops:
        value = np.arange(n, dtype=np.float64) * (len(model) + 1)
        if op == "compact":
            zt.compact(path)
            continue
        with zt.Writer(path, mode="a") as w:
            if op in ("add", "append"):
                if name in model:
                    with pytest.raises(zt.ZTensorError):
                        w.add_tensor(name, value)
                else:
                    w.add_tensor(name, value, compress=compress)
                    model[name] = value
            elif op == "replace":
                if name in model:
                    w.replace(name, value, compress=compress)
                    model[name] = value
                else:
                    with pytest.raises(zt.ZTensorError):
                        w.replace(name, value)
            elif op == "remove":
                if name in model:
                    w.remove(name)
                    del model[name]
                else:
                    with pytest.raises(zt.ZTensorError):
                        w.remove(name)
        _assert_same(_contents(path), model)
    ref = reference.Reader(str(path))
    assert sorted(ref.tensor_names) == sorted(model)
