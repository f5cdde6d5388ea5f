"""The xarray backend beyond xarray's own battery: mapping details, laziness, pickling,
appends, regions, groups, interop with the reference reader, and distributed writes."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest

xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")

from xarray.core import indexing  # noqa: E402
from xarray.testing import assert_identical  # noqa: E402

import ztensor_array as zt  # noqa: E402
from ztensor_array.backends.xarray import (  # noqa: E402
    ZTensorBackendArray,
    ZTensorBackendEntrypoint,
    ZTensorStore,
    to_ztensor_dataset,
)
from ztensor_array.backends.xarray.array import ReaderFiles  # noqa: E402


def climate(n_time: int = 6) -> xr.Dataset:
    rng = np.random.default_rng(0)
    temp = rng.normal(280, 5, (n_time, 3, 4)).astype("f4")
    temp[0, 0, 0] = np.nan
    ds = xr.Dataset(
        {
            "temp": (("time", "lat", "lon"), temp, {"units": "K", "long_name": "temperature"}),
            "flag": (("lat", "lon"), rng.integers(0, 2, (3, 4)).astype(bool)),
        },
        coords={
            "time": pd.date_range("2000-01-01", periods=n_time, freq="6h"),
            "lat": [10.0, 20.0, 30.0],
            "lon": np.arange(4, dtype="i4"),
        },
        attrs={
            "title": "test",
            "version": 3,
            "ratio": 0.25,
            "ok": True,
            "history": ["a", "b"],
            "nested": {"x": [1, {"y": b"\x00\xff"}], "z": None},
            "raw": b"\x01\x02",
        },
    )
    return ds


def test_roundtrip_time_packed_fill_nested_attrs(tmp_path):
    ds = climate()
    ds["temp"].encoding = {
        "dtype": "i2",
        "scale_factor": 0.01,
        "add_offset": 280.0,
        "_FillValue": -32768,
    }
    ds["temp"].attrs["nested"] = {"a": [1, 2.5, "x"], "b": {"c": True}}
    path = tmp_path / "c.zt"
    to_ztensor_dataset(ds, path)
    with zt.Reader(path) as r:  # stored packed, as the encoding asked
        assert r.metadata("temp").dtype == np.dtype("i2")
        assert r.metadata("temp").attributes["scale_factor"] == 0.01
    with xr.open_dataset(path) as back:  # engine found by sniffing
        loaded = back.load()
    # packed values come back within half a quantum; everything else exactly
    np.testing.assert_allclose(loaded["temp"], ds["temp"], atol=0.0051)
    assert np.isnan(loaded["temp"][0, 0, 0])
    assert_identical(ds.drop_vars("temp"), loaded.drop_vars("temp"))
    assert loaded["temp"].attrs == ds["temp"].attrs
    assert loaded.attrs["raw"] == b"\x01\x02"
    assert loaded.attrs["nested"] == {"x": [1, {"y": b"\x00\xff"}], "z": None}
    assert loaded.attrs["ok"] is True and isinstance(loaded.attrs["version"], int)


def test_roundtrip_identical_float_fill_and_times(tmp_path):
    ds = climate()
    ds["temp"].encoding = {"_FillValue": np.float32(-999.0)}
    ds["dt"] = ("time", pd.to_timedelta(np.arange(6), unit="s") + pd.Timedelta(1, "ns"))
    ds["when"] = ("lat", np.array(["2001-02-03T04:05:06.000000007", "NaT", "1970"], "M8[ns]"))
    path = tmp_path / "t.zt"
    to_ztensor_dataset(ds, path)
    with xr.open_dataset(path, engine="ztensor") as back:
        assert_identical(ds, back.load())
        assert back["when"].values[0] == ds["when"].values[0]  # nanoseconds kept


def test_numpy_typed_attrs_keep_their_dtype(tmp_path):
    ds = xr.Dataset({"v": ("x", [1, 2], {"f": np.float32(0.1), "arr": np.arange(3, dtype="u2")})})
    ds.attrs["t"] = np.datetime64("2020-01-01T00:00:00.123456789")
    to_ztensor_dataset(ds, tmp_path / "a.zt")
    with xr.open_dataset(tmp_path / "a.zt") as back:
        assert back["v"].attrs["f"].dtype == np.float32
        assert back["v"].attrs["arr"].dtype == np.uint16
        assert back.attrs["t"] == ds.attrs["t"]
        assert_identical(ds, back)


def test_strings_stored_as_char_arrays(tmp_path):
    ds = xr.Dataset({"name": ("x", np.array(["a", "héllo", ""], dtype=object))})
    to_ztensor_dataset(ds, tmp_path / "s.zt")
    with zt.Reader(tmp_path / "s.zt") as r:
        meta = r.metadata("name")
        assert meta.dtype == np.uint8 and meta.shape == (3, 6)  # utf-8 bytes, padded
        assert meta.attributes["_Encoding"] == "utf-8"
    with xr.open_dataset(tmp_path / "s.zt") as back:
        assert list(back["name"].values) == ["a", "héllo", ""]


def test_unstorable_dtype_names_the_variable(tmp_path):
    ds = xr.Dataset({"bad": ("x", np.array([1 + 2j, 3j], dtype="c8").astype("c16"))})
    ds["worse"] = ("x", np.array([object(), object()], dtype=object))
    with pytest.raises((ValueError, zt.ZTensorError), match="worse"):
        to_ztensor_dataset(ds, tmp_path / "x.zt")
    assert not os.path.exists(tmp_path / "x.zt")


def test_reference_reader_reads_our_file(tmp_path, zref):
    ds = climate()
    ds["name"] = ("lat", ["a", "bb", "ccc"])
    ds["packed"] = ds["temp"].copy()
    to_ztensor_dataset(ds, tmp_path / "r.zt", encoding={"packed": {"compress": 3}})
    r = zref.Reader(str(tmp_path / "r.zt"))  # chunked objects and non-text attrs inside
    np.testing.assert_array_equal(r.read_tensor("temp"), ds["temp"].values)
    np.testing.assert_array_equal(r.read_tensor("lat"), ds["lat"].values)
    assert r.read_tensor("name").dtype == np.uint8  # CF character array
    tree = xr.DataTree.from_dict({"/": ds[["temp"]], "/g": ds[["flag"]]})
    to_ztensor_dataset(tree, tmp_path / "tree.zt")
    r = zref.Reader(str(tmp_path / "tree.zt"))
    np.testing.assert_array_equal(r.read_tensor("g/flag"), ds["flag"].values)


def test_foreign_file_gets_default_dims_and_sparse_opens_dense(tmp_path, zref):
    import scipy.sparse as sp

    path = str(tmp_path / "f.zt")
    with zref.Writer(path) as w:
        w.add_tensor("a", np.arange(6, dtype="f4").reshape(2, 3))
        w.add_tensor("b", np.arange(5, dtype="i8"))
    with xr.open_dataset(path) as ds:
        assert ds["a"].dims == ("a_dim_0", "dim_1")  # dim_0 sizes clash (2 vs 5)
        assert ds["b"].dims == ("b_dim_0",)
        np.testing.assert_array_equal(ds["a"].values, np.arange(6).reshape(2, 3))
    m = sp.random(5, 7, density=0.3, format="csr", random_state=0, dtype="f8")
    with zt.Writer(tmp_path / "sp.zt") as w:
        w.add_sparse("m", m)
    with xr.open_dataset(tmp_path / "sp.zt") as ds:
        assert ds["m"].dims == ("dim_0", "dim_1")
        assert not ds["m"].variable._in_memory
        d = m.toarray()
        np.testing.assert_array_equal(ds["m"][1:3, ::2].values, d[1:3, ::2])
        np.testing.assert_array_equal(ds["m"][[0, 4], 2].values, d[[0, 4], 2])
        assert ds["m"][3, 5].values == d[3, 5]


@pytest.mark.parametrize("drop", ["b", ["b"], ("b", "not_there")])
def test_drop_variables_are_never_built_and_rename_nothing(tmp_path, zref, drop):
    """Dropped variables are left out before they are built, yet the others get the dims a
    full open gives them (default dims that clash with a dropped one stay renamed)."""
    path = str(tmp_path / "f.zt")
    with zref.Writer(path) as w:
        w.add_tensor("a", np.arange(6, dtype="f4").reshape(2, 3))
        w.add_tensor("b", np.arange(5, dtype="i8"))
    with xr.open_dataset(path) as full, xr.open_dataset(path, drop_variables=drop) as part:
        assert_identical(part, full.drop_vars("b"))
        assert part["a"].dims == ("a_dim_0", "dim_1")


def test_guess_can_open_never_raises(tmp_path):
    ep = ZTensorBackendEntrypoint()
    other = tmp_path / "x.bin"
    other.write_bytes(b"ZTEN1000rest")
    assert ep.guess_can_open(str(other))
    assert ep.guess_can_open(tmp_path / "missing.zt")
    assert not ep.guess_can_open(tmp_path / "missing.nc")
    assert not ep.guess_can_open(tmp_path)  # a directory
    assert not ep.guess_can_open(12345)
    assert "ztensor" in xr.backends.list_engines()
    for arg in (
        "mask_and_scale",
        "decode_times",
        "decode_timedelta",
        "concat_characters",
        "decode_coords",
        "use_cftime",
        "drop_variables",
    ):
        assert arg in ep.open_dataset_parameters
    assert ep.description and ep.url


def test_lazy_outer_indexing_and_pickle(tmp_path):
    ds = climate()
    to_ztensor_dataset(ds, tmp_path / "l.zt")
    with xr.open_dataset(tmp_path / "l.zt", cache=False) as back:
        var = back["temp"].variable
        assert not var._in_memory
        sel = back["temp"].isel(time=[0, 2, 5], lat=slice(None, None, 2), lon=1)
        np.testing.assert_array_equal(sel.values, ds["temp"].values[[0, 2, 5], ::2, 1])
        with pickle.loads(pickle.dumps(back)) as clone:
            assert_identical(clone, ds)
    files = ReaderFiles(str(tmp_path / "l.zt"))
    state = pickle.dumps(ZTensorBackendArray(files, files.ref("lat"), (3,), "f8", False))
    assert b"mmap" not in state and len(state) < 400
    clone = pickle.loads(state)
    np.testing.assert_array_equal(clone[indexing.BasicIndexer((slice(None),))], ds["lat"])
    clone.files.close()


def _descriptors_of(path) -> list[str]:
    """What this process's open file descriptors on ``path`` point at (a file replaced
    since it was opened shows as "<path> (deleted)")."""
    target = os.path.realpath(path)
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link == target or link == f"{target} (deleted)":
            found.append(link)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_cached_reader_dropped_when_dataset_closes_or_the_path_names_another_file(tmp_path):
    """Closing a dataset closes its file; a lazy variable whose path now names another
    file drops the stale reader and refuses to read (the file it was opened from is gone)."""
    path = tmp_path / "c.zt"
    # no index coordinates: their values (zero-copy maps of the file) live with the dataset
    first = xr.Dataset({"v": (("x", "y"), np.arange(12.0).reshape(3, 4))})
    to_ztensor_dataset(first, path)
    opened = xr.open_dataset(path, cache=False)
    np.testing.assert_array_equal(opened["v"].values, first["v"].values)
    assert _descriptors_of(path)  # the cached reader keeps the file open
    opened.close()
    assert _descriptors_of(path) == []

    with xr.open_dataset(path, cache=False) as again:
        np.testing.assert_array_equal(again["v"].values, first["v"].values)
        second = first * 2
        to_ztensor_dataset(second, path, mode="w")  # a new file at the same path
        assert _descriptors_of(path) == [f"{os.path.realpath(path)} (deleted)"]
        # the lazy variable refuses the other file (as from_ztensor does), and the stale
        # reader of the deleted file is let go all the same
        with pytest.raises(zt.ZTensorError, match="replaced since"):
            again["v"].load()
        assert _descriptors_of(path) == [os.path.realpath(path)]
    assert _descriptors_of(path) == []


def _mean_in_process(dataset) -> float:
    return float(dataset["temp"].mean())


def test_lazy_dataset_reads_in_another_process(tmp_path):
    import concurrent.futures
    import multiprocessing

    ds = climate()
    path = tmp_path / "p.zt"
    to_ztensor_dataset(ds, path, encoding={"temp": {"compress": 3, "chunks": (2, 3, 4)}})
    spawn = multiprocessing.get_context("spawn")  # a fresh process: no reader cached there
    with (
        xr.open_dataset(path, chunks={}) as lazy,
        concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool,
    ):
        mean = pool.submit(_mean_in_process, lazy).result(timeout=120)
    assert mean == pytest.approx(float(ds["temp"].mean()), rel=1e-6)


def test_unnamed_dataarray_reads_back_unnamed(tmp_path):
    arr = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("a", "b"), attrs={"units": "m"})
    to_ztensor_dataset(arr, tmp_path / "da.zt")
    with xr.open_dataarray(tmp_path / "da.zt", engine="ztensor") as back:
        assert back.name is None
        xr.testing.assert_identical(back.load(), arr)


def test_chunked_variables_prefer_their_grid_and_tokens_follow_the_file(tmp_path):
    ds = climate(10)
    path = tmp_path / "k.zt"
    to_ztensor_dataset(ds, path, encoding={"temp": {"compress": 3, "chunks": (4, 3, 2)}})
    with zt.Reader(path) as r:
        assert r.metadata("temp").format == "chunked"
    with xr.open_dataset(path, chunks={}) as back:
        assert back["temp"].encoding["preferred_chunks"] == {"time": 4, "lat": 3, "lon": 2}
        assert back["temp"].chunks == ((4, 4, 2), (3,), (2, 2))
        name1 = back["temp"].data.name
        assert_identical(back.load(), ds)
    os.utime(path, ns=(1, 1))
    with xr.open_dataset(path, chunks={}) as back:
        assert back["temp"].data.name != name1


def test_append_dim_on_chunked_and_dense(tmp_path):
    ds = climate(8)
    path = tmp_path / "ap.zt"
    to_ztensor_dataset(ds.isel(time=slice(0, 5)), path, encoding={"temp": {"compress": True}})
    to_ztensor_dataset(ds.isel(time=slice(5, 8)), path, append_dim="time")
    with xr.open_dataset(path) as back:
        assert_identical(back.load(), ds)
        assert back["temp"].encoding.get("compress") is True  # stored encoding reused


def test_append_refuses_mismatch_before_writing(tmp_path):
    ds = climate(4)
    path = tmp_path / "m.zt"
    to_ztensor_dataset(ds, path)
    before = open(path, "rb").read()
    bad = ds.isel(time=slice(0, 2)).assign(temp=ds["temp"].isel(time=slice(0, 2)).astype("f8"))
    with pytest.raises(ValueError, match="Mismatched dtypes"):
        to_ztensor_dataset(bad, path, append_dim="time")
    with pytest.raises(ValueError, match="does not match any existing"):
        to_ztensor_dataset(ds, path, append_dim="nope")
    with pytest.raises(ValueError, match="Unable to update size"):
        to_ztensor_dataset(ds.isel(lat=slice(0, 2)), path, append_dim="time")
    assert open(path, "rb").read() == before


def test_region_writes(tmp_path):
    ds = climate(6)
    path = tmp_path / "rg.zt"
    to_ztensor_dataset(ds, path, encoding={"temp": {"chunks": (2, 3, 4)}})
    patch = ds.isel(time=slice(2, 4)).copy(deep=True)
    patch["temp"][:] = 1.0
    patch = patch.drop_vars(["flag", "lat", "lon"])  # as with to_zarr: no region dim
    to_ztensor_dataset(patch, path, region={"time": slice(2, 4)})
    expected = ds.copy(deep=True)
    expected["temp"][2:4] = 1.0
    with xr.open_dataset(path) as back:
        assert_identical(back.load(), expected)
    with pytest.raises(ValueError, match="non-pre-existing"):
        to_ztensor_dataset(patch.assign(new=patch["temp"]), path, region={"time": slice(2, 4)})
    to_ztensor_dataset(patch, path, region="auto", mode="r+")


def test_modes(tmp_path):
    ds = climate(2)
    path = tmp_path / "mo.zt"
    to_ztensor_dataset(ds, path)
    with pytest.raises(zt.ZTensorError):
        to_ztensor_dataset(ds, path)  # "w-" refuses an existing file
    to_ztensor_dataset(ds[["flag"]], path, mode="w")
    with xr.open_dataset(path) as back:
        assert set(back.variables) == {"flag", "lat", "lon"}
    to_ztensor_dataset(ds[["temp"]], path, mode="a")
    with xr.open_dataset(path) as back:
        assert_identical(back.load(), ds)
    with pytest.raises(zt.ZTensorError):
        ZTensorStore.open(tmp_path / "none.zt", "r+")


def test_dask_source_written_block_by_block_and_compute_false(tmp_path):
    ds = climate(12).chunk({"time": 5})
    path = tmp_path / "d.zt"
    delayed = to_ztensor_dataset(ds, path, compute=False)
    assert not os.path.exists(path)
    delayed.compute()
    with xr.open_dataset(path) as back:
        assert_identical(back.load(), ds.compute())
    via_api = tmp_path / "api.zt"
    zt.to_ztensor(ds, via_api, encoding={"temp": {"compress": 5}})
    with xr.open_dataset(via_api, chunks={}) as back:
        assert_identical(back.compute(), ds.compute())


def test_datatree_roundtrip(tmp_path):
    tree = xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs={"root": 1}),
            "/a": climate(3),
            "/a/b": xr.Dataset({"q": ("z", [1, 2, 3])}, attrs={"deep": [1, 2]}),
            "/empty": xr.Dataset(attrs={"note": "nothing here"}),
        }
    )
    path = tmp_path / "tree.zt"
    to_ztensor_dataset(tree, path)
    with xr.open_datatree(path, engine="ztensor") as back:
        xr.testing.assert_identical(back.load(), tree)
    groups = xr.open_groups(path, engine="ztensor")
    assert set(groups) == {"/", "/a", "/a/b", "/empty"}
    for group in groups.values():
        group.close()
    with xr.open_dataset(path, group="a/b") as sub:
        assert_identical(sub.load(), tree["/a/b"].to_dataset(inherit=False))


@pytest.mark.slow
def test_distributed_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    ds = climate(20)
    src = tmp_path / "src.zt"
    to_ztensor_dataset(ds, src, encoding={"temp": {"compress": 3, "chunks": (5, 3, 4)}})
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        with xr.open_dataset(src, chunks={}) as opened:
            mean = opened["temp"].mean("time").compute()
            np.testing.assert_allclose(mean, ds["temp"].mean("time"), rtol=1e-6)
            out = tmp_path / "out.zt"
            delayed = to_ztensor_dataset(opened, out, compute=False)
            delayed.compute()
        with xr.open_dataset(out) as back:
            assert_identical(back.load(), ds)


def _attr_values():
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.binary(max_size=8),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    )


def test_attribute_fidelity_property(tmp_path_factory):
    """Any CBOR-representable attribute (bool/int/float/str/bytes/list/dict, nested) comes
    back exactly, on variables and on the dataset, and 1.1.1 still opens the file."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None)
    @given(st.dictionaries(st.text(min_size=1, max_size=6), _attr_values(), max_size=4))
    def check(attrs):
        attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}
        ds = xr.Dataset({"v": ("x", np.arange(3), dict(attrs))}, attrs=dict(attrs))
        path = tmp_path_factory.mktemp("p") / "a.zt"
        to_ztensor_dataset(ds, path, mode="w")
        with xr.open_dataset(path) as back:
            assert back.attrs == attrs
            assert back["v"].attrs == attrs
            for k, v in attrs.items():  # exact types too (True is not 1)
                assert type(back.attrs[k]) is type(v)
        import ztensor

        assert ztensor.Reader(str(path)).read_tensor("v").tolist() == [0, 1, 2]

    check()


@pytest.mark.parametrize(
    "encoding", [{"checksum": "crc32c"}, {"checksum": "sha256", "compress": 3}]
)
def test_checksums_written_and_verified_on_request(tmp_path, encoding):
    ds = climate(4)
    path = tmp_path / "ck.zt"
    to_ztensor_dataset(ds, path, encoding={"temp": dict(encoding)})
    with xr.open_dataset(path, verify_checksums=True) as back:
        assert back["temp"].encoding["checksum"] == encoding["checksum"]
        assert_identical(back.load(), ds)
    with zt.Reader(path) as r:
        comp = next(iter(r.metadata("temp").components.values()))
    with open(path, "r+b") as f:  # flip one stored byte of the variable
        f.seek(comp.offset + comp.length // 2)
        b = f.read(1)
        f.seek(comp.offset + comp.length // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    with xr.open_dataset(path, verify_checksums=True) as back:
        with pytest.raises(zt.ChecksumError, match="temp"):
            back["temp"].load()


def test_datatree_dask_compressed_compute_false(tmp_path):
    sub = climate(2).rename(time="t2", lat="la2", lon="lo2")
    tree = xr.DataTree.from_dict({"/": climate(8).chunk({"time": 3}), "/sub": sub})
    path = tmp_path / "dt.zt"
    delayed = to_ztensor_dataset(
        tree, path, compute=False, compress=3, encoding={"/sub": {"temp": {"chunks": (1, 3, 4)}}}
    )
    assert not os.path.exists(path)
    delayed.compute()
    with zt.Reader(path) as r:
        assert r.metadata("temp").format == "chunked"
        assert r.metadata("sub/temp").attributes["chunk_grid"]["chunk_shape"] == [1, 3, 4]
    with xr.open_datatree(path, engine="ztensor") as back:
        xr.testing.assert_identical(back.load(), tree.load())


def test_region_into_chunked_rewrites_only_touched_chunks(tmp_path):
    ds = climate(8)
    path = tmp_path / "rc.zt"
    to_ztensor_dataset(ds, path, encoding={"temp": {"compress": 3, "chunks": (2, 3, 4)}})
    with zt.Reader(path) as r:
        before = r.chunks("temp")
    patch = ds[["temp"]].isel(time=slice(4, 6)).drop_vars(["time", "lat", "lon"]) * 0 + 7
    patch["temp"] = patch["temp"].astype("f4").chunk({"time": 1})
    to_ztensor_dataset(patch, path, region={"time": slice(4, 6)})
    expected = ds.copy(deep=True)
    expected["temp"][4:6] = 7
    with xr.open_dataset(path) as back:
        assert_identical(back.load(), expected)
    with zt.Reader(path) as r:
        after = r.chunks("temp")
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {(2, 0, 0)}  # the one chunk row the region covers
