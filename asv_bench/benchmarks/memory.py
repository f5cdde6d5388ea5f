"""Peak memory (asv ``peakmem_``: the process's maximum RSS) of the streaming and
out-of-core paths, which must stay near one tensor or one block, not the file size.

Each peakmem benchmark runs in its own process; the 256 MiB inputs are made in setup_cache
and never held in memory by the measured process.
"""

from __future__ import annotations

import os

import numpy as np

import ztensor_array as zt

from .common import MiB, require

TOTAL = 256 * MiB
PIECE = 16 * MiB  # one tensor / one dask block


def _pieces():
    """The 256 MiB input, one 16 MiB tensor at a time."""
    rng = np.random.default_rng(0)
    for i in range(TOTAL // PIECE):
        yield f"w{i:03d}", rng.standard_normal(PIECE // 4, dtype=np.float32)


class Streaming:
    """Writer and Reader over a 256 MiB file, one 16 MiB tensor in memory at a time."""

    timeout = 300

    def setup_cache(self):
        raw, packed = os.path.abspath("mem-raw.zt"), os.path.abspath("mem-zstd.zt")
        with zt.Writer(raw) as w1, zt.Writer(packed) as w2:
            for name, a in _pieces():
                w1.add_tensor(name, a)
                w2.add_tensor(name, a, compress=3)
        big = os.path.abspath("mem-big.zt")
        with zt.Writer(big) as w:
            w.add_tensor("x", np.ones((TOTAL // 4 // 1024, 1024), np.float32))
        return {"raw": raw, "zstd": packed, "big": big}

    def peakmem_write_streaming_raw(self, files):
        with zt.Writer("mem-out.zt") as w:
            for name, a in _pieces():
                w.add_tensor(name, a)

    def peakmem_write_streaming_zstd(self, files):
        with zt.Writer("mem-out.zt") as w:
            for name, a in _pieces():
                w.add_tensor(name, a, compress=3)

    def peakmem_read_one_at_a_time_zstd(self, files):
        with zt.Reader(files["zstd"]) as r:
            for name in r.tensor_names:
                r.read_tensor(name)

    def peakmem_load_file_raw(self, files):
        """Everything as owned arrays: should be the data size, not twice it."""
        zt.load_file(files["raw"])


class OutOfCore:
    """A reduction over a 256 MiB tensor through dask, 16 MiB blocks at a time."""

    timeout = 300

    def setup_cache(self):
        path = os.path.abspath("ooc.zt")
        to_ztensor = require("ztensor_array", "to_ztensor")
        da = require("dask.array")
        arr = da.random.default_rng(0).standard_normal(
            (TOTAL // 4 // 1024, 1024), chunks=(PIECE // 4 // 1024, 1024), dtype=np.float32
        )
        to_ztensor(arr, path, "x", mode="w", compress=3)
        return path

    def setup(self, path):
        self.from_ztensor = require("ztensor_array", "from_ztensor")

    def peakmem_dask_sum_chunked_zstd(self, path):
        import dask

        with dask.config.set(scheduler="threads", num_workers=2):
            self.from_ztensor(path, "x").sum().compute()
