"""Many processes write one file at once, half of them through a symlink (issue 15
acceptance; SPEC §9.3): appends, parallel Dask appends, compacts, repairs and reads for a
fixed time. Afterwards every object whose writer reported success reads back identically,
no other object is there, and no reader ever saw wrong data or an error other than "busy"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

import ztensor_array as zt

pytestmark = pytest.mark.slow

SECONDS = 20
PROCESSES = 4

_WORKER = textwrap.dedent(
    """
    import random, sys, time, zlib
    import numpy as np
    import ztensor_array as zt
    from ztensor_array import files

    files.LOCK_WAIT = 5.0
    path, who, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])

    def value(name):
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        return rng.standard_normal(int(rng.integers(1, 40_000)))

    def say(*words):
        print(*words, flush=True)

    rng = random.Random(who)
    deadline = time.monotonic() + seconds
    i = 0
    busy = (zt.FileBusyError, zt.FileReplacedError)
    while time.monotonic() < deadline:
        i += 1
        op = rng.choice(["append", "append", "dask", "dask", "read", "read", "compact", "repair"])
        try:
            if op == "append":
                names = [f"w{who}_{i}_{j}" for j in range(rng.randint(1, 3))]
                with zt.Writer(path, "a") as w:
                    for name in names:
                        w.add_tensor(name, value(name), compress=rng.random() < 0.5)
                say("OK", *names)
            elif op == "dask":
                import dask.array as da
                name = f"d{who}_{i}"
                data = da.from_array(value(name), chunks=5000)
                zt.to_ztensor({name: data}, path, mode="a", compress=rng.random() < 0.5)
                say("OK", name)
            elif op == "read":
                with zt.Reader(path) as r:
                    for name in r.tensor_names:
                        if name != "base" and not np.array_equal(r.read_tensor(name), value(name)):
                            say("BAD", name)
            elif op == "compact":
                zt.compact(path)
            else:
                zt.repair(path)
            say("DONE", op)
        except busy as exc:
            say("BUSY", op, type(exc).__name__)
        except Exception as exc:
            say("ERR", op, repr(exc).replace("\\n", " "))
    """
)


def _value(name: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return rng.standard_normal(int(rng.integers(1, 40_000)))


def test_many_processes_write_one_file(tmp_path):
    path = tmp_path / "shared.zt"
    zt.save_file({"base": np.arange(100.0)}, path)
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "link.zt"  # half the processes write through a symlink
    link.symlink_to(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(link if k % 2 else path), str(k), str(SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(PROCESSES)
    ]
    lines = []
    for proc in procs:
        out, err = proc.communicate(timeout=SECONDS + 300)
        assert proc.returncode == 0, err
        lines += out.splitlines()
    reported = {name for line in lines if line.startswith("OK ") for name in line.split()[1:]}
    problems = [line for line in lines if line.startswith(("BAD", "ERR"))]
    assert not problems, problems[:10]
    ops = ("append", "dask", "read", "compact", "repair")
    done = {op: sum(line == f"DONE {op}" for line in lines) for op in ops}
    busy = {op: sum(line.startswith(f"BUSY {op} ") for line in lines) for op in ops}
    print(f"done {done}; busy {busy}; {len(reported)} objects")  # shown with -s
    assert len(reported) > 10 and all(done.values()), (len(reported), done)
    with zt.Reader(path) as r:
        assert set(r.tensor_names) == reported | {"base"}
        for name in reported:
            np.testing.assert_array_equal(r.read_tensor(name), _value(name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.zt", "sub"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["link.zt"]
