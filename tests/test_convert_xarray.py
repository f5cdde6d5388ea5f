"""``ztensor convert`` of datasets xarray opens (netCDF4, h5netcdf/HDF5, zarr): the .zt opens
with engine="ztensor" identical to the original (xarray's own assert_identical)."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner
from test_cli import assert_one_line_error, ztensor

import ztensor_array as zt
from ztensor_array.cli import cli


def run(*args, check: bool = True) -> subprocess.CompletedProcess:
    """The command in-process (a child process costs ~1.5 s of imports per call; the tests
    above run the real executable)."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    proc = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
    if check and result.exit_code != 0:
        raise AssertionError(f"ztensor {args} failed ({result.exit_code}):\n{result.output}")
    return proc


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


# --------------------------------------------------------------------------- groups


def _grouped_netcdf(path, *, aligned: bool = True) -> None:
    """A netCDF4 file with nested groups, written by the netCDF4 library itself (not by
    xarray): group attributes, an empty group, zlib compression, a child dimension."""
    import netCDF4

    rng = np.random.default_rng(3)
    with netCDF4.Dataset(path, "w") as nc:
        nc.title = "groups"
        nc.createDimension("x", 4)
        x = nc.createVariable("x", "f8", ("x",))
        x[:] = [0.5, 1.5, 2.5, 3.5]
        top = nc.createVariable("top", "i4", ("x",), zlib=True, complevel=5)
        top[:] = np.arange(4)
        obs = nc.createGroup("obs")
        obs.source = "station"
        obs.createDimension("t", 6)
        v = obs.createVariable("temp", "f4", ("t", "x"), zlib=True, fill_value=-999.0)
        v.units = "K"
        v[:] = rng.standard_normal((6, 4)).astype("f4")
        deep = obs.createGroup("deep")
        if not aligned:  # another size of "x" than the root's: no DataTree can hold it
            deep.createDimension("x", 2)
        w = deep.createVariable("w", "i2", ("x",))
        w[:] = np.arange(2 if not aligned else 4)
        nc.createGroup("empty").note = "no variables"


def test_grouped_netcdf_converts_to_an_identical_datatree(tmp_path):
    src = tmp_path / "g.nc"
    _grouped_netcdf(src)
    out = tmp_path / "g.zt"
    ztensor("convert", src, "-o", out)  # the real command
    with xr.open_datatree(src) as want, xr.open_datatree(out, engine="ztensor") as got:
        assert set(got.groups) == {"/", "/obs", "/obs/deep", "/empty"}
        xr.testing.assert_identical(got, want)
    with zt.Reader(out) as r:
        assert {"top", "obs/temp", "obs/deep/w"} <= set(r.tensor_names)
        assert r.metadata("obs/temp").layout == "chunked"  # zlib source: compressed


def test_unalignable_groups_convert_group_by_group(tmp_path):
    src = tmp_path / "u.nc"
    _grouped_netcdf(src, aligned=False)
    with pytest.raises(ValueError):
        xr.open_datatree(src)  # xarray itself cannot make one tree of it
    out = tmp_path / "u.zt"
    run("convert", src, "-o", out)
    want = xr.open_groups(src)
    got = xr.open_groups(out, engine="ztensor")
    assert set(got) == set(want)
    for g in want:
        xr.testing.assert_identical(got[g].load(), want[g].load())


# --------------------------------------------------------------------------- compression


def _frames(path, name) -> dict[tuple[int, ...], tuple[str, int]]:
    """grid index -> (encoding, stored length) of a chunked object's chunks."""
    with zt.Reader(path) as r:
        return {i: (c.encoding, c.length) for i, c in r.chunks(name).items()}


@pytest.mark.parametrize("complevel", [1, 6])
def test_zlib_source_keeps_its_level_and_chunks(tmp_path, complevel):
    """Each chunk is the zstd frame of that level (numcodecs' Zstd, which the parallel
    writer uses, as the oracle); -l overrides the source's level, -c too."""
    import numcodecs

    rng = np.random.default_rng(0)
    data = np.round(rng.standard_normal((40, 30)), 2).astype("f4")
    src = tmp_path / "z.nc"
    xr.Dataset({"v": (("a", "b"), data)}).to_netcdf(
        src,
        engine="netcdf4",
        encoding={"v": {"zlib": True, "complevel": complevel, "chunksizes": (40, 30)}},
    )
    out = tmp_path / "z.zt"
    run("convert", src, "-o", out)
    assert _frames(out, "v") == {
        (0, 0): ("zstd", len(numcodecs.Zstd(level=complevel).encode(data)))
    }
    run("convert", src, "-o", out, "-l", "19", "--force")
    assert _frames(out, "v") == {(0, 0): ("zstd", len(numcodecs.Zstd(level=19).encode(data)))}
    with xr.open_dataset(out, engine="ztensor") as got, xr.open_dataset(src) as want:
        xr.testing.assert_identical(got.load(), want.load())


def test_zarr_zstd_source_keeps_level_and_chunk_grid(tmp_path):
    import zarr.codecs

    data = np.arange(600, dtype="i4").reshape(20, 30) % 17
    src = tmp_path / "z.zarr"
    xr.Dataset({"v": (("a", "b"), data)}).to_zarr(
        src,
        mode="w",
        consolidated=False,
        encoding={"v": {"chunks": (10, 30), "compressors": (zarr.codecs.ZstdCodec(level=7),)}},
    )
    out = tmp_path / "z.zt"
    run("convert", src, "-o", out)
    with zt.Reader(out) as r:
        assert r.manifest.objects["v"].attributes["chunk_grid"]["chunk_shape"] == [10, 30]
    frames = _frames(out, "v")
    assert set(frames) == {(0, 0), (1, 0)}
    assert {e for e, _ in frames.values()} == {"zstd"}
    with (
        xr.open_dataset(out, engine="ztensor") as got,
        xr.open_dataset(src, engine="zarr", consolidated=False) as want,
    ):
        xr.testing.assert_identical(got.load(), want.load())


def test_uncompressed_netcdf_stays_raw_and_dense(tmp_path, dataset):
    src = tmp_path / "raw.nc"
    dataset.to_netcdf(src, engine="netcdf4")
    out = tmp_path / "raw.zt"
    run("convert", src, "-o", out)
    with zt.Reader(out) as r:
        assert {r.metadata(n).layout for n in r.tensor_names} == {"dense"}


# --------------------------------------------------------------------------- combine


def _parts(tmp_path):
    """Three files of one dataset along time, each with its own history and uuid."""
    rng = np.random.default_rng(9)
    paths = []
    for i in range(3):
        ds = xr.Dataset(
            {"sst": (("time", "y"), rng.standard_normal((2, 3)).astype("f4"), {"units": "K"})},
            coords={"time": pd.date_range("2020-01-01", periods=2) + pd.Timedelta(days=2 * i)},
            attrs={"title": "sst", "uuid": f"id-{i}", "history": f"made {i}"},
        )
        p = tmp_path / f"part{i}.nc"
        ds.to_netcdf(p, encoding={"sst": {"zlib": True}})
        paths.append(p)
    return paths


def test_combine_by_coords_names_the_attributes_that_differ(tmp_path):
    paths = _parts(tmp_path)
    out = tmp_path / "all.zt"
    collide = run("convert", *paths, "-o", out, check=False)
    assert_one_line_error(collide, "collides")
    proc = run("convert", *paths[::-1], "-o", out, "--combine", "by_coords")
    assert "history" in proc.stderr and "uuid" in proc.stderr and "title" not in proc.stderr
    with (
        xr.open_mfdataset(paths, combine="by_coords", combine_attrs="drop_conflicts") as want,
        xr.open_dataset(out, engine="ztensor") as got,
    ):
        assert got.sizes["time"] == 6
        xr.testing.assert_identical(got.load(), want.load())
        assert got.attrs == {"title": "sst"}


def test_combine_nested_along_a_dimension(tmp_path):
    paths = _parts(tmp_path)
    out = tmp_path / "n.zt"
    run("convert", *paths, "-o", out, "--combine", "nested", "--concat-dim", "time")
    with (
        xr.open_mfdataset(
            paths, combine="nested", concat_dim="time", combine_attrs="drop_conflicts"
        ) as want,
        xr.open_dataset(out, engine="ztensor") as got,
    ):
        xr.testing.assert_identical(got.load(), want.load())
    missing = run("convert", *paths, "-o", out, "--combine", "nested", "--force", check=False)
    assert_one_line_error(missing, "concatenate")


def test_combine_takes_datasets_only(tmp_path):
    from safetensors.numpy import save_file

    paths = _parts(tmp_path)
    st = tmp_path / "w.safetensors"
    save_file({"w": np.ones(2, np.float32)}, st)
    proc = ztensor(
        "convert", paths[0], st, "-o", tmp_path / "x.zt", "--combine", "by_coords", check=False
    )
    assert_one_line_error(proc, "datasets only", "w.safetensors")
