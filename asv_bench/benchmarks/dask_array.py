"""Dask: lazy arrays over a .zt file (from_ztensor) and parallel writes (to_ztensor)."""

from __future__ import annotations

import os

import numpy as np

from .common import require


class FromZtensor:
    """Reductions over a 64 MiB float32 array, raw (mmap blocks) and chunked zstd."""

    params = ["raw", "chunked-zstd"]
    param_names = ["storage"]
    timeout = 300

    def setup_cache(self):
        to_ztensor = require("ztensor_array", "to_ztensor")
        a = np.random.default_rng(0).standard_normal((16 * 1024, 1024), dtype=np.float32)
        files = {}
        for storage in self.params:
            path = os.path.abspath(f"dask-{storage}.zt")
            if storage == "raw":
                to_ztensor(a, path, "x", mode="w")
            else:
                to_ztensor(a, path, "x", mode="w", compress=3, chunks=(2048, 1024))
            files[storage] = path
        return files

    def setup(self, files, storage):
        self.from_ztensor = require("ztensor_array", "from_ztensor")
        require("dask.array")
        self.path = files[storage]

    def time_sum(self, files, storage):
        self.from_ztensor(self.path, "x", chunks=(2048, 1024)).sum().compute()

    def time_mean_axis0(self, files, storage):
        self.from_ztensor(self.path, "x", chunks=(2048, 1024)).mean(axis=0).compute()

    def time_graph_only(self, files, storage):
        self.from_ztensor(self.path, "x", chunks=(2048, 1024))


class ToZtensor:
    """Writing a 64 MiB dask array (8 blocks) raw and as compressed chunks."""

    params = ["raw", "chunked-zstd"]
    param_names = ["storage"]
    timeout = 300

    def setup(self, storage):
        self.to_ztensor = require("ztensor_array", "to_ztensor")
        da = require("dask.array")
        self.arr = (
            da.random.default_rng(0)
            .standard_normal((16 * 1024, 1024), chunks=(2048, 1024), dtype=np.float32)
            .persist()
        )
        self.out = os.path.abspath(f"dask-out-{storage}.zt")

    def teardown(self, storage):
        if os.path.exists(self.out):
            os.unlink(self.out)

    def time_to_ztensor(self, storage):
        if storage == "raw":
            self.to_ztensor(self.arr, self.out, "x", mode="w")
        else:
            self.to_ztensor(self.arr, self.out, "x", mode="w", compress=3)
