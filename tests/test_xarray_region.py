"""Region writes (``to_ztensor(ds, path, region=...)``) into existing chunked and dense
variables: the result must equal zarr's ``to_zarr(region=...)`` on a store written from the
same dataset, untouched chunks keep their blobs, and memory stays bounded by a block."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import anon_growth_in_subprocess, write_ztensor_and_zarr

xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from xarray.testing import assert_identical  # noqa: E402

from ztensor_array import Reader, Writer  # noqa: E402
from ztensor_array import errors as zt_errors  # noqa: E402
from ztensor_array.backends.xarray import to_ztensor_dataset  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # zarr 3 consolidated-metadata notes


def base() -> xr.Dataset:
    rng = np.random.default_rng(1)
    return xr.Dataset(
        {
            "t": (("x", "y"), rng.normal(size=(20, 10)), {"units": "K"}),
            "n": (("x", "y"), rng.integers(-100, 100, (20, 10)).astype("i4")),
        },
        coords={"x": np.arange(20), "y": np.arange(10) * 0.5},
        attrs={"title": "region test"},
    )


LAYOUTS = {
    "chunked": {"t": {"chunks": (4, 3)}, "n": {"chunks": (5, 4)}},
    "chunked-zstd-crc": {
        "t": {"chunks": (4, 3), "compress": True, "checksum": "crc32c"},
        "n": {"chunks": (6, 10), "compress": 5, "checksum": "sha256"},
    },
    "dense": {},
}

REGIONS = {
    "partial": {"x": slice(3, 9), "y": slice(2, 7)},
    "aligned": {"x": slice(4, 12), "y": slice(0, 10)},  # whole chunks of t's (4, 3) grid
    "edge": {"x": slice(17, 20), "y": slice(8, 10)},  # the short edge chunks
}


def _patch(ds: xr.Dataset, region: dict, dask: bool) -> xr.Dataset:
    part = ds.isel(region)
    patch = xr.Dataset({k: -v * 3 + 1 for k, v in part.data_vars.items()})
    if "n" in patch:
        patch["n"] = patch["n"].astype("i4")
    patch = patch.drop_vars(list(patch.coords))
    return patch.chunk({"x": 2, "y": 3}) if dask else patch


def _zarr_region(patch: xr.Dataset, zpath: str, region: dict, mode: str = "r+") -> None:
    """The oracle: zarr's region write of the same values. Computed first, because dask
    blocks smaller than zarr's chunks would race on the shared chunks (zarr refuses that
    unless safe_chunks=False, and then loses writes)."""
    patch.compute().to_zarr(zpath, region=region, mode=mode)


def _check(path: str, zpath: str) -> None:
    with xr.open_dataset(path, engine="ztensor") as ours, xr.open_zarr(zpath) as theirs:
        assert_identical(ours.load(), theirs.load())


@pytest.mark.parametrize("region", list(REGIONS))
@pytest.mark.parametrize("dask", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("layout", [*LAYOUTS, "dense-zstd"])
def test_region_matches_zarr(tmp_path, layout, dask, region):
    ds = base()
    path, zpath = write_ztensor_and_zarr(tmp_path, ds, layout, LAYOUTS)
    reg = REGIONS[region]
    patch = _patch(ds, reg, dask)
    to_ztensor_dataset(patch, path, region=reg, mode="r+")
    _zarr_region(patch, zpath, reg)
    _check(path, zpath)
    # a second region on top of the first (the new version's blobs are read back)
    reg2 = {"x": slice(0, 5), "y": slice(1, 2)}
    patch2 = _patch(ds, reg2, not dask).assign_attrs(ds.attrs)
    to_ztensor_dataset(patch2, path, region=reg2, mode="a")
    _zarr_region(patch2, zpath, reg2, mode="a")
    _check(path, zpath)


def test_region_mixed_layouts_and_encoding(tmp_path):
    """Chunked and dense variables in one region write, with the stored encoding honoured
    (packed ints with scale/offset and a fill value) and the digests still valid."""
    ds = base()
    ds["t"].encoding = {"dtype": "i2", "scale_factor": 0.01, "_FillValue": -32768}
    ds["t"][0, 0] = np.nan
    path, zpath = str(tmp_path / "m.zt"), str(tmp_path / "m.zarr")
    to_ztensor_dataset(ds, path, mode="w", encoding={"n": {"chunks": (3, 3), "checksum": "crc32c"}})
    ds.to_zarr(zpath, mode="w")
    reg = {"x": slice(1, 8)}
    patch = _patch(ds, reg, dask=True)
    patch["t"][2, 3] = np.nan
    to_ztensor_dataset(patch, path, region=reg)
    _zarr_region(patch, zpath, reg)
    _check(path, zpath)
    with Reader(path, verify=True) as r:
        assert r.manifest.objects["n"].format == "chunked"
        assert r.manifest.objects["t"].format == "dense"
        r.to_dict()  # every digest checks out


def test_untouched_chunks_keep_their_blobs(tmp_path):
    ds = base()
    path = str(tmp_path / "k.zt")
    to_ztensor_dataset(ds, path, mode="w", encoding={"t": {"chunks": (4, 3), "compress": True}})
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        before_bytes = f.read()
    with Reader(path) as r:
        before = r.chunks("t")
    reg = {"x": slice(3, 9), "y": slice(2, 7)}  # rows 3..8, cols 2..6
    to_ztensor_dataset(_patch(ds[["t"]], reg, dask=True), path, region=reg, mode="r+")
    with Reader(path) as r:
        after = r.chunks("t")
    touched = {(i, j) for i in range(0, 3) for j in range(0, 3)}
    assert set(after) == set(before)
    for index, comp in after.items():
        if index in touched:
            assert comp.offset >= size  # a new blob after the old end of the file
        else:
            assert comp == before[index]  # same blob, same offset, length and encoding
    with open(path, "rb") as f:
        assert f.read(size) == before_bytes  # finalized bytes are never overwritten


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 7)),
    chunks=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    cut=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
    layout=st.sampled_from(["chunked", "dense"]),
    dask=st.booleans(),
)
def test_region_property(tmp_path_factory, shape, chunks, cut, layout, dask):
    """Any box of any grid: the file reads back as numpy's own slice assignment."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, shape).astype("i8")
    box = []
    for n, (u, v) in zip(shape, [cut[:2], cut[2:]]):
        a, b = sorted((int(u * n), int(v * n)))
        box.append(slice(a, max(b, a + 1) if a < n else n))
    box = [slice(min(s.start, n - 1), s.stop) for s, n in zip(box, shape)]
    path = str(tmp_path_factory.mktemp("p") / "p.zt")
    enc = {"v": {"chunks": chunks}} if layout == "chunked" else {}
    to_ztensor_dataset(xr.Dataset({"v": (("a", "b"), data)}), path, mode="w", encoding=enc)
    new = -rng.integers(1, 1000, (box[0].stop - box[0].start, box[1].stop - box[1].start))
    src = da.from_array(new, chunks=2) if dask else new
    patch = xr.Dataset({"v": (("a", "b"), src)})
    to_ztensor_dataset(patch, path, region={"a": box[0], "b": box[1]}, mode="r+")
    expect = data.copy()
    expect[tuple(box)] = new
    with Reader(path) as r:
        np.testing.assert_array_equal(r.read_tensor("v"), expect)


_REGION_ARGS = """
path, layout = sys.argv[1], sys.argv[2]
rows, cols = 5000, 5000  # float64: 200 MB
"""
_REGION_SETUP = (
    _REGION_ARGS
    + """
big = da.zeros((rows, cols), chunks=(250, cols))
enc = {"v": {"chunks": (500, 1000)}} if layout == "chunked" else {}
to_ztensor_dataset(xr.Dataset({"v": (("r", "c"), big)}), path, mode="w", encoding=enc)
"""
)
_REGION_WRITE = (
    _REGION_ARGS
    + """
src = da.ones((rows - 100, cols - 10), chunks=(300, 1000))  # not aligned to the grid
patch = xr.Dataset({"v": (("r", "c"), src)})
to_ztensor_dataset(patch, path, region={"r": slice(50, rows - 50), "c": slice(5, cols - 5)})
"""
)


@pytest.mark.parametrize("layout", ["dense", "chunked"])  # ~4 s each: not slow
def test_region_write_memory_is_bounded(tmp_path, layout):
    """A dask region write into a 200 MB variable: anonymous memory grows by band-sized
    buffers (dask's rechunk to the chunk grid holds the pieces of one band of rows across
    the width, the dense rewrite one band of old rows; measured 55-80 MB with two threads),
    never by the variable or the region (~200 MB each)."""
    path = str(tmp_path / "big.zt")
    growth = anon_growth_in_subprocess(_REGION_SETUP, _REGION_WRITE, path, layout)
    assert growth < 100 << 20, f"RssAnon grew by {growth / 2**20:.0f} MiB"
    with Reader(path) as r:
        v = r.read_tensor("v")
        assert v.shape == (5000, 5000)
        assert v[49].sum() == 0 and v[50, 4] == 0 and v[50, 5] == 1
        assert v[4949, 4994] == 1 and v[4949, 4995] == 0 and v[4950].sum() == 0
        assert v[50:4950, 5:4995].min() == 1


# --------------------------------------------------------------------------- core helpers


@pytest.mark.parametrize("compress", [False, True])
def test_dense_region_readable_by_reference(tmp_path, zref, compress):
    """The streamed dense blob (raw or zstd, with its digest) is what ztensor 1.1.1 reads."""
    path = str(tmp_path / "r.zt")
    data = np.arange(600, dtype="f4").reshape(30, 20)
    with Writer(path, "w") as w:
        attrs = {"_ARRAY_DIMENSIONS": ["a", "b"]}
        w.add_tensor("v", data, compress=compress, checksum="sha256", attributes=attrs)
    new = np.full((7, 5), -1.5, "f4")
    patch = xr.Dataset({"v": (("a", "b"), da.from_array(new, chunks=3))})
    to_ztensor_dataset(patch, path, region={"a": slice(20, 27), "b": slice(10, 15)})
    data[20:27, 10:15] = new
    with zref.Reader(path) as r:
        np.testing.assert_array_equal(np.array(r.read_tensor("v", verify_checksum=True)), data)


@pytest.mark.parametrize("encoding", ["raw", "zstd"])
@pytest.mark.parametrize("rows", [1, 4, 7, 100])
def test_iter_dense_rows(tmp_path, encoding, rows):
    path = str(tmp_path / "i.zt")
    data = np.arange(7 * 3 * 2, dtype=">i8").reshape(7, 3, 2)  # big-endian input
    with Writer(path, "w") as w:
        w.add_tensor("v", data, compress=encoding == "zstd")
        w.add_tensor("s", np.float32(3))
    with Reader(path) as r:
        blocks = list(r.iter_dense_rows("v", rows))
        assert [b.shape[0] for b in blocks] == [min(rows, 7 - i) for i in range(0, 7, rows)]
        np.testing.assert_array_equal(np.concatenate(blocks), data)
        with pytest.raises(zt_errors.UnsupportedError):
            next(r.iter_dense_rows("s", 1))


def test_write_chunked_rules(tmp_path):
    """Only over an object of the finalized file (an append mode writer); a failing source
    records nothing and the file keeps its previous state; untouched chunks keep their
    blobs."""
    path = str(tmp_path / "u.zt")
    to_ztensor_dataset(
        xr.Dataset({"v": (("a",), np.arange(10.0))}), path, mode="w", encoding={"v": {"chunks": 4}}
    )
    with Reader(path) as r:
        obj = r.manifest.objects["v"]
        before = r.chunks("v")
    with Writer(str(tmp_path / "new.zt"), "w") as w:
        w.add_tensor("x", np.zeros(2))
        with pytest.raises(zt_errors.ZTensorError, match="finalized file"):
            w.write_chunked("x", obj, obj.shape, ((0, 4),), np.zeros(4))

    class Failing:
        shape = (4,)

        def __getitem__(self, key):
            raise RuntimeError("source failed")

    with Writer(path, "a") as w:
        with pytest.raises(RuntimeError):
            w.write_chunked("v", obj, obj.shape, ((0, 4),), Failing())
        w.write_chunked("v", obj, obj.shape, ((4, 8),), np.full(4, 7.0))
        moved = dict(obj.components)
        role = next(iter(moved))
        moved[role] = moved[role].moved(10**9)
        with pytest.raises(zt_errors.ZTensorError, match="finalized file"):
            w.write_chunked(
                "v", type(obj)(obj.shape, obj.format, moved, obj.attributes), obj.shape, (), []
            )
    with Reader(path) as r:
        expect = np.arange(10.0)
        expect[4:8] = 7.0
        np.testing.assert_array_equal(r.read_tensor("v"), expect)
        after = r.chunks("v")
    assert after[(0,)] == before[(0,)] and after[(2,)] == before[(2,)]
    assert after[(1,)] != before[(1,)]
