"""What other backends' encodings become (zlib/complevel, compression=, numcodecs and zarr
compressors, chunksizes, fletcher32), the refusal of what has no meaning here, and the
types netCDF/HDF5 bring: compound {r, i}, ``_Unsigned``, fill values xarray cannot encode."""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr.codecs

import ztensor_array as zt
from ztensor_array.backends.xarray.foreign import translate
from ztensor_array.errors import InvalidArgumentError


def _translate(enc, shape=(100, 100), itemsize=4, explicit=False):
    return translate(enc, name="v", shape=shape, itemsize=itemsize, explicit=explicit)


@pytest.mark.parametrize(
    "enc,level",
    [
        ({"zlib": True, "complevel": 4}, 4),
        ({"zlib": True}, 4),  # netCDF4's default complevel
        ({"zlib": False, "complevel": 4}, 0),
        ({"compression": "zlib", "complevel": 9}, 9),
        ({"compression": "gzip", "compression_opts": 6}, 6),  # h5netcdf / h5py
        ({"compression": "zstd", "complevel": 2}, 2),
        ({"compression": None}, 0),
        ({"zstd": True, "complevel": 5}, 5),
        ({"compressors": (zarr.codecs.ZstdCodec(level=7),)}, 7),
        ({"compressors": (zarr.codecs.ZstdCodec(level=0),)}, 3),  # zstd's 0: its default
        ({"compressors": (zarr.codecs.ZstdCodec(level=-5),)}, 1),  # fast modes: the lowest
        ({"compressors": (zarr.codecs.BloscCodec(clevel=8),)}, 8),
        ({"compressors": (zarr.codecs.GzipCodec(level=0),)}, 0),
        ({"compressors": ()}, 0),
        ({"compressor": numcodecs.Zstd(level=11)}, 11),
        ({"compressor": None}, 0),
        ({"compressors": (zarr.codecs.Crc32cCodec(),)}, 0),  # a checksum, no compression
        ({"compressors": (numcodecs.LZ4(),)}, 3),  # no level: the default
        ({"shuffle": True, "fletcher32": False}, None),  # says nothing about compression
    ],
)
def test_compression_maps_to_a_zstd_level(enc, level):
    assert _translate(enc)["compress"] == level


def test_chunks_follow_the_source_grown_only_when_tiny():
    big = (1000, 100)  # chunks of 200 x 100 x 4 bytes: above the 64 KiB floor
    assert _translate({"chunksizes": (200, 100)}, shape=big)["chunks"] == (200, 100)
    assert _translate({"chunksizes": (5000, 500)}, shape=big)["chunks"] == big  # clipped
    assert _translate({"chunksizes": (200, 100), "contiguous": True})["chunks"] is None
    assert _translate({"chunksizes": None})["chunks"] is None
    # 1x1 chunks of a 1000x1000 array: one component per value; grown in whole multiples
    grown = _translate({"chunksizes": (1, 1)}, shape=(1000, 1000))["chunks"]
    assert 64 << 10 <= grown[0] * grown[1] * 4 <= 2 << 20
    assert _translate({"chunksizes": (1, 1)}, shape=(2, 2))["chunks"] == (2, 2)  # all of it


def test_fletcher32_maps_to_a_digest():
    assert _translate({"fletcher32": True})["checksum"] == "crc32c"
    assert _translate({"fletcher32": False})["checksum"] is None


@pytest.mark.parametrize(
    "enc,key",
    [
        ({"zlib": True, "shuffle": True}, "shuffle"),
        ({"filters": [numcodecs.Delta(dtype="f4")]}, "filters"),
        ({"endian": "big"}, "endian"),
        ({"least_significant_digit": 2}, "least_significant_digit"),
        ({"significant_digits": 3, "quantize_mode": "BitGroom"}, "significant_digits"),
        ({"shards": (10, 10)}, "shards"),
        ({"compression_opts": 4}, "compression_opts"),  # no compression to tune
        ({"chunksizes": (1, 2, 3)}, "chunksizes"),
        ({"complevel": "high", "zlib": True}, "complevel"),
        ({"compressors": ("zstd",)}, "compressors"),
    ],
)
def test_explicit_keys_without_a_meaning_are_refused_by_name(enc, key):
    with pytest.raises(zt.ZTensorError, match=f"variable 'v'.*{key}"):
        _translate(enc, explicit=True)
    _translate(enc if key not in ("complevel",) else {}, explicit=False)  # from a source: left out


def test_harmless_explicit_values_are_accepted():
    enc = {
        "zlib": True,
        "complevel": 2,
        "shuffle": False,
        "fletcher32": True,
        "contiguous": False,
        "chunksizes": (200, 100),
        "endian": "little",
        "filters": None,
    }
    assert _translate(enc, shape=(1000, 100), explicit=True) == {
        "compress": 2,
        "chunks": (200, 100),
        "checksum": "crc32c",
    }


def _frame_lengths(path, name):
    with zt.Reader(path) as r:
        return {index: c.length for index, c in r.chunks(name).items()}


def test_to_ztensor_applies_and_refuses_explicit_foreign_encodings(tmp_path):
    data = np.round(np.random.default_rng(1).standard_normal((400, 100)), 1).astype("f4")
    ds = xr.Dataset({"v": (("a", "b"), data)})
    path = tmp_path / "e.zt"
    enc = {"zlib": True, "complevel": 6, "chunksizes": (200, 100)}
    zt.to_ztensor(ds, path, encoding={"v": enc})
    expect = {
        (0, 0): len(numcodecs.Zstd(level=6).encode(data[:200])),
        (1, 0): len(numcodecs.Zstd(level=6).encode(data[200:])),
    }
    assert _frame_lengths(path, "v") == expect
    with xr.open_dataset(path, engine="ztensor") as back:
        xr.testing.assert_identical(back.load(), ds)
    with pytest.raises(zt.ZTensorError, match="variable 'v'.*'shuffle'=True"):
        zt.to_ztensor(ds, path, mode="w", encoding={"v": {"zlib": True, "shuffle": True}})
    with pytest.raises(zt.ZTensorError, match="unexpected encoding parameters.*'blosc_clevel'"):
        zt.to_ztensor(ds, path, mode="w", encoding={"v": {"blosc_clevel": 3}})
    # the ztensor keys and to_ztensor's own compress= win over a source's
    source = ds.copy()
    source["v"].encoding = {"zlib": True, "complevel": 9}
    zt.to_ztensor(source, path, mode="w", compress=False)
    with zt.Reader(path) as r:
        assert r.metadata("v").layout == "dense"
    zt.to_ztensor(source, path, mode="w")
    assert _frame_lengths(path, "v") == {(0, 0): len(numcodecs.Zstd(level=9).encode(data))}


def test_netcdf_source_keeps_compression_through_to_ztensor(tmp_path):
    """A Dataset opened from a zlib netCDF written again is compressed, with its chunks."""
    data = np.arange(40000, dtype="f8").reshape(400, 100) % 7
    src = tmp_path / "s.nc"
    xr.Dataset({"v": (("a", "b"), data)}).to_netcdf(
        src, encoding={"v": {"zlib": True, "complevel": 3, "chunksizes": (100, 100)}}
    )
    out = tmp_path / "s.zt"
    with xr.open_dataset(src) as ds:
        zt.to_ztensor(ds, out)
        with xr.open_dataset(out, engine="ztensor") as back:
            xr.testing.assert_identical(back.load(), ds.load())
            assert back["v"].encoding["preferred_chunks"] == {"a": 100, "b": 100}
    assert out.stat().st_size < src.stat().st_size * 1.25


# --------------------------------------------------------------------------- types


def _h5_compound(path, dtype, values) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("z", data=values.astype(dtype))


@pytest.mark.parametrize(
    "fields",
    [
        [("r", "<f8"), ("i", "<f8")],
        [("r", "<f4"), ("i", "<f4")],
        [("real", "<f8"), ("imag", "<f8")],
        [("re", "<f4"), ("im", "<f4")],
    ],
    ids=["r-i-f8", "r-i-f4", "real-imag", "re-im"],
)
def test_compound_of_two_floats_is_stored_as_complex(tmp_path, fields):
    dtype = np.dtype(fields)
    values = np.zeros(5, dtype)
    values[dtype.names[0]] = np.arange(5) + 0.5
    values[dtype.names[1]] = -np.arange(5)
    src = tmp_path / "c.h5"
    _h5_compound(src, dtype, values)
    out = tmp_path / "c.zt"
    with xr.open_dataset(src, engine="h5netcdf", phony_dims="sort") as ds:
        zt.to_ztensor(ds, out)
        with xr.open_dataset(out, engine="ztensor") as back:
            xr.testing.assert_identical(back.load(), ds.load())
            assert back["z"].dtype == ds["z"].dtype
    with zt.Reader(out) as r:  # a native complex tensor for everyone else
        z = r.read_tensor("z")
    assert z.dtype == np.dtype(f"c{2 * dtype[0].itemsize}")
    np.testing.assert_array_equal(z, np.arange(5) + 0.5 - 1j * np.arange(5))


@pytest.mark.parametrize(
    "fields",
    [
        [("a", "<f8"), ("b", "<f8")],  # not named as a complex pair
        [("r", "<f8"), ("i", "<f4")],  # two float types
        [("r", "<i4"), ("i", "<i4")],  # integers
        [("r", "<f8"), ("i", "<f8"), ("k", "<f8")],
    ],
)
def test_other_compounds_are_refused_by_name(tmp_path, fields):
    ds = xr.Dataset({"rec": ("x", np.zeros(3, np.dtype(fields)))})
    with pytest.raises(zt.ZTensorError, match="variable 'rec'.*compound"):
        zt.to_ztensor(ds, tmp_path / "r.zt")
    assert not (tmp_path / "r.zt").exists()


def _signed_with_unsigned_flag(path, flag: str, fill=None) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("d", 4)
        kind = "i1" if flag == "true" else "u1"
        v = nc.createVariable("b", kind, ("d",), fill_value=fill)
        v.set_auto_maskandscale(False)
        v._Unsigned = flag
        v[:] = np.array([0, 1, 127, 255], "u1").view(kind)


@pytest.mark.parametrize("flag", ["true", "false"])
@pytest.mark.parametrize("fill", [None, 3], ids=["no-fill", "fill"])
def test_unsigned_flag_keeps_decoded_values_and_dtype(tmp_path, flag, fill):
    """netCDF's _Unsigned: int8 storage read as uint8 (or the reverse). xarray drops the
    flag when there is no fill value; we keep it, so 255 never comes back as -1."""
    src = tmp_path / "u.nc"
    _signed_with_unsigned_flag(src, flag, fill)
    out = tmp_path / "u.zt"
    with xr.open_dataset(src) as ds:
        zt.to_ztensor(ds, out)
        with xr.open_dataset(out, engine="ztensor") as back:
            xr.testing.assert_identical(back.load(), ds.load())
            assert back["b"].dtype == ds["b"].dtype
    with xr.open_dataset(out, engine="ztensor") as back:
        want = [0, 1, 127, 255] if flag == "true" else [0, 1, 127, -1]
        if fill is None:
            np.testing.assert_array_equal(back["b"].values, want)


def test_fill_value_xarray_cannot_encode_names_variable_and_attribute(tmp_path):
    ds = xr.Dataset({"v": ("x", np.arange(3.0))})
    ds["v"].encoding = {"dtype": "i4", "missing_value": "-1.e+34f"}
    with pytest.raises(zt.ZTensorError, match="variable 'v': its missing_value .*'-1.e\\+34f'"):
        zt.to_ztensor(ds, tmp_path / "m.zt")
    ds["v"].encoding = {"_FillValue": 1.0, "missing_value": 2.0}
    with pytest.raises(InvalidArgumentError, match="variable 'v'.*conflicting"):
        zt.to_ztensor(ds, tmp_path / "m.zt")
    assert not (tmp_path / "m.zt").exists()


def test_big_endian_compound_is_stored_and_read_back_little_endian(tmp_path):
    """(xarray turns a big-endian compound it reads into an unusable V16.)"""
    dtype = np.dtype([("r", ">f8"), ("i", ">f8")])
    values = np.array([(1.5, -2.0), (0.25, 4.0)], dtype)
    ds = xr.Dataset({"z": ("x", values)})
    zt.to_ztensor(ds, tmp_path / "b.zt")
    with xr.open_dataset(tmp_path / "b.zt", engine="ztensor") as back:
        assert back["z"].dtype == np.dtype([("r", "<f8"), ("i", "<f8")])
        np.testing.assert_array_equal(back["z"].values, values)
    with zt.Reader(tmp_path / "b.zt") as r:
        np.testing.assert_array_equal(r.read_tensor("z"), [1.5 - 2j, 0.25 + 4j])
