"""``ztensor convert`` of datasets xarray opens (netCDF4, h5netcdf/HDF5, zarr): the .zt opens
with engine="ztensor" identical to the original (xarray's own assert_identical)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_cli import assert_one_line_error, ztensor

import ztensor_array as zt


@pytest.fixture
def dataset():
    rng = np.random.default_rng(5)
    return xr.Dataset(
        {
            "temp": (
                ("time", "y", "x"),
                rng.standard_normal((4, 3, 5)).astype("f4"),
                {"units": "K", "long_name": "temperature"},
            ),
            "count": (("y", "x"), rng.integers(0, 9, (3, 5)).astype("i2")),
        },
        coords={
            "time": pd.date_range("2021-01-01", periods=4),
            "y": [10.0, 20.0, 30.0],
            "x": np.arange(5),
        },
        attrs={"title": "tiny", "version": 2},
    )


def _write(ds, kind, path):
    if kind == "netcdf4":
        ds.to_netcdf(path, engine="netcdf4")
    elif kind == "h5netcdf":
        ds.to_netcdf(path, engine="h5netcdf")
    else:
        ds.to_zarr(path, mode="w", consolidated=False)


def _open_kwargs(kind):
    return {"engine": "zarr", "consolidated": False} if kind == "zarr" else {}


@pytest.mark.parametrize("kind,ext", [("netcdf4", ".nc"), ("h5netcdf", ".h5"), ("zarr", ".zarr")])
def test_dataset_round_trips_identically(dataset, tmp_path, kind, ext):
    src = tmp_path / f"d{ext}"
    _write(dataset, kind, src)
    out = tmp_path / "d.zt"
    ztensor("convert", src, "-o", out, "-c")
    with (
        xr.open_dataset(src, **_open_kwargs(kind)) as want,
        xr.open_dataset(out, engine="ztensor") as got,
    ):
        xr.testing.assert_identical(got.load(), want.load())
    with zt.Reader(out) as r:
        assert {"temp", "count", "time", "x", "y"} <= set(r.tensor_names)


def test_dataset_with_other_inputs_and_explicit_format(dataset, tmp_path):
    from safetensors.numpy import save_file

    nc = tmp_path / "d.data"  # no telling extension: content says HDF5
    dataset.to_netcdf(nc, engine="h5netcdf")
    st = tmp_path / "w.safetensors"
    save_file({"weights": np.ones(3, np.float32)}, st)
    out = tmp_path / "both.zt"
    ztensor("convert", nc, st, "-o", out)
    with zt.Reader(out) as r:
        assert "weights" in r and "temp" in r
        assert r.attributes["title"] == "tiny"
    ztensor("convert", "-f", "xarray", nc, "-o", tmp_path / "x.zt")


def test_unopenable_dataset_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"CDF\x01" + b"\xff" * 60)
    assert_one_line_error(ztensor("convert", bad, "-o", tmp_path / "bad.zt", check=False), "bad.nc")
