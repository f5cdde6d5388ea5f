"""xarray: the ``ztensor`` backend engine (open_dataset, indexing, reductions) and writes."""

from __future__ import annotations

import os

import numpy as np

from .common import require


def _dataset():
    xr = require("xarray")
    rng = np.random.default_rng(0)
    time, lat, lon = 365, 180, 360  # one year of a 1-degree daily field: ~90 MiB per variable
    return xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), rng.standard_normal((time, lat, lon), np.float32)),
            "precip": (("time", "lat", "lon"), rng.random((time, lat, lon), np.float32)),
        },
        coords={
            "time": np.datetime64("2024-01-01", "ns") + np.arange(time) * np.timedelta64(1, "D"),
            "lat": np.linspace(-89.5, 89.5, lat),
            "lon": np.linspace(0.5, 359.5, lon),
        },
        attrs={"title": "benchmark field", "source": "random"},
    )


class OpenDataset:
    """Lazy open, a point selection, a time slice and a full reduction."""

    params = [None, "chunked"]
    param_names = ["chunks"]
    timeout = 300

    def setup_cache(self):
        to_ztensor = require("ztensor_array", "to_ztensor")
        path = os.path.abspath("xr-field.zt")
        to_ztensor(_dataset(), path, mode="w")
        return path

    def setup(self, path, chunks):
        self.xr = require("xarray")
        require("ztensor_array.backends.xarray", "ZTensorBackendEntrypoint")
        self.kw = {"chunks": {"time": 73}} if chunks else {}

    def _open(self, path):
        return self.xr.open_dataset(path, engine="ztensor", **self.kw)

    def time_open_dataset(self, path, chunks):
        self._open(path).close()

    def time_isel_point(self, path, chunks):
        with self._open(path) as ds:
            ds["t2m"].isel(lat=90, lon=180).load()

    def time_isel_slice(self, path, chunks):
        with self._open(path) as ds:
            ds["t2m"].isel(time=slice(0, 31)).load()

    def time_mean(self, path, chunks):
        with self._open(path) as ds:
            ds["t2m"].mean().compute()


class ToZtensor:
    """Writing a Dataset (two variables, coordinates, attributes)."""

    params = [False, True]
    param_names = ["compress"]
    timeout = 300

    def setup(self, compress):
        self.to_ztensor = require("ztensor_array", "to_ztensor")
        self.ds = _dataset()
        self.out = os.path.abspath(f"xr-out-{compress}.zt")

    def teardown(self, compress):
        if os.path.exists(self.out):
            os.unlink(self.out)

    def time_to_ztensor(self, compress):
        self.to_ztensor(self.ds, self.out, mode="w", compress=compress)
