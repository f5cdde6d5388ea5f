"""The file-level primitives of parallel writes (writer.py): preallocated regions filled by
pwrite from many threads and processes in any order, O_APPEND appends at aligned offsets,
and the fence that stops late writers after an aborted append. Oracle: numpy's own bytes."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import ztensor_array as zt
from ztensor_array import parallel


def _blocks(shape, chunks):
    grid = [range(0, s, c) for s, c in zip(shape, chunks)]
    return [
        tuple(slice(a, min(a + c, s)) for a, c, s in zip(starts, chunks, shape))
        for starts in itertools.product(*grid)
    ]


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((13, 7, 5), (4, 3, 5)), ((13, 7, 5), (13, 2, 2)), ((9,), (4,)), ((6, 1), (1, 1))],
)
def test_pwrite_blocks_in_any_order_from_threads(tmp_path, shape, chunks):
    x = np.random.default_rng(0).standard_normal(shape).astype("<f4")
    plan = parallel.plan(tmp_path / "r.zt", "w")
    (offset,) = parallel.begin(plan, [x.nbytes])
    blocks = _blocks(shape, chunks)
    random.Random(1).shuffle(blocks)
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda b: parallel.pwrite_block(
                    plan.target, offset, shape, tuple(s.start for s in b), x[b]
                ),
                blocks,
            )
        )
    data = open(plan.target, "rb").read()
    assert offset % 64 == 0 and len(data) % 64 == 0
    assert data[offset : offset + x.nbytes] == x.tobytes()
    parallel.abort(plan)
    assert not os.path.exists(plan.target)


def _append_many(target: str, seed: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    out = []
    for _ in range(40):
        blob = bytes([seed]) * rng.randint(1, 300)
        out.append((parallel.append_blob(target, blob), blob))
    return out


def test_appends_from_two_processes_get_aligned_disjoint_offsets(tmp_path):
    plan = parallel.plan(tmp_path / "a.zt", "w")
    parallel.begin(plan, [])
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        results = list(pool.map(_append_many, [plan.target] * 4, [1, 2, 3, 4]))
    data = open(plan.target, "rb").read()
    spans = sorted((off, off + len(blob)) for r in results for off, blob in r)
    assert all(a % 64 == 0 for a, _ in spans)
    assert all(e0 <= s1 for (_, e0), (s1, _) in zip(spans, spans[1:]))
    assert len(data) % 64 == 0
    for r in results:
        for off, blob in r:
            assert data[off : off + len(blob)] == blob
    parallel.abort(plan)


def test_late_writer_after_aborted_append_is_refused(tmp_path):
    p = tmp_path / "f.zt"
    zt.save_file({"x": np.arange(10.0)}, p)
    before = p.read_bytes()
    plan = parallel.plan(p, "a")
    parallel.begin(plan, [])
    with plan.fence.hold():
        parallel.append_blob(plan.target, b"chunk")
    assert p.read_bytes() != before
    with pytest.raises(zt.ZTensorError):  # mid-append the file has no footer at its end
        parallel.plan(p, "a")
    parallel.abort(plan)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.zt"]
    with pytest.raises(zt.ZTensorError, match="aborted"), plan.fence.hold():
        parallel.append_blob(plan.target, b"late")
    assert p.read_bytes() == before
