"""Appends (``to_ztensor(ds, path, append_dim=...)``) in bounded memory: the result must
equal zarr's ``to_zarr(append_dim=...)`` on a store written from the same dataset, for
dense and chunked variables along the first and other axes; chunks before the old edge
keep their blobs; old data is read with its digests checked (region writes too)."""

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

from ztensor_array import Reader  # noqa: E402
from ztensor_array.backends.xarray import to_ztensor_dataset  # noqa: E402
from ztensor_array.errors import ChecksumError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # zarr 3 consolidated-metadata notes

ATTRS = {"title": "append test"}


def part(x0: int, nx: int, y0: int, ny: int, seed: int) -> xr.Dataset:
    """Rows x0.. and columns y0.. of a dataset with a float and an int variable."""
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {
            "t": (("x", "y"), rng.normal(size=(nx, ny)), {"units": "K"}),
            "n": (("x", "y"), rng.integers(-100, 100, (nx, ny)).astype("i4")),
        },
        coords={"x": np.arange(x0, x0 + nx), "y": np.arange(y0, y0 + ny) * 0.5},
        attrs=ATTRS,
    )


LAYOUTS = {
    # t: (20, 10) in (4, 3) chunks has whole chunk rows along x, a partial edge along y;
    # n: (6, 4) chunks leave partial edges along both
    "chunked": {"t": {"chunks": (4, 3)}, "n": {"chunks": (6, 4)}},
    "chunked-zstd-crc": {
        "t": {"chunks": (4, 3), "compress": True, "checksum": "crc32c"},
        "n": {"chunks": (6, 4), "compress": 5, "checksum": "sha256"},
    },
    "dense": {},
    "dense-crc": {"t": {"checksum": "crc32c"}, "n": {"checksum": "sha256"}},
}


def _check(path: str, zpath: str) -> None:
    with xr.open_dataset(path, engine="ztensor") as ours, xr.open_zarr(zpath) as theirs:
        assert_identical(ours.load(), theirs.load())
    with Reader(path, verify=True) as r:
        r.to_dict()  # every digest of the new version checks out


def _more(dim: str, step: int, seed: int) -> xr.Dataset:
    """The next block along ``dim`` of the (20, 10) base, ``step`` wide."""
    if dim == "x":
        return part(20 + 7 * (seed - 1), step, 0, 10, seed)
    return part(0, 20, 10 + 5 * (seed - 1), step, seed)


@pytest.mark.parametrize("dim", ["x", "y"])
@pytest.mark.parametrize("dask", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("layout", [*LAYOUTS, "dense-zstd"])
def test_append_matches_zarr(tmp_path, layout, dask, dim):
    ds = part(0, 20, 10, 10, 0).assign_coords(y=np.arange(10) * 0.5)
    path, zpath = write_ztensor_and_zarr(tmp_path, ds, layout, LAYOUTS)
    # two appends: the second one merges into edge chunks the first one wrote
    for seed, step in ((1, 7), (2, 5)):
        more = _more(dim, step, seed)
        if dim == "y":
            more = more.drop_vars("x")  # x is unchanged: zarr would rewrite it, so do we
        src = more.chunk({"x": 3, "y": 2}) if dask else more
        to_ztensor_dataset(src, path, append_dim=dim)
        more.to_zarr(zpath, append_dim=dim)
        _check(path, zpath)


def test_append_compute_false_and_mixed_layouts(tmp_path):
    """A delayed append into a dense and a chunked variable along the second axis."""
    ds = part(0, 20, 0, 10, 0)
    path, zpath = str(tmp_path / "m.zt"), str(tmp_path / "m.zarr")
    to_ztensor_dataset(ds, path, mode="w", encoding={"n": {"chunks": (7, 3), "checksum": "crc32c"}})
    ds.to_zarr(zpath, mode="w")
    more = part(0, 20, 10, 4, 3).drop_vars("x")
    delayed = to_ztensor_dataset(more.chunk({"y": 1}), path, append_dim="y", compute=False)
    with Reader(path) as r:
        assert tuple(r.manifest.objects["t"].shape) == (20, 10)  # nothing visible yet
    delayed.compute()
    more.to_zarr(zpath, append_dim="y")
    _check(path, zpath)
    with Reader(path) as r:
        assert r.manifest.objects["t"].format == "dense"
        assert r.manifest.objects["n"].format == "chunked"


@pytest.mark.parametrize("dim", ["x", "y"])
def test_untouched_chunks_keep_their_blobs(tmp_path, dim):
    ds = part(0, 20, 0, 10, 0)
    path = str(tmp_path / "k.zt")
    to_ztensor_dataset(ds[["t"]], path, mode="w", encoding={"t": {"chunks": (6, 4)}})
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        before_bytes = f.read()
    with Reader(path) as r:
        before = r.chunks("t")
    more = _more(dim, 9, 1)[["t"]]
    if dim == "y":
        more = more.drop_vars("x")
    to_ztensor_dataset(more.chunk({"x": 5, "y": 5}), path, append_dim=dim)
    ax = 0 if dim == "x" else 1
    edge = (20 // 6) if ax == 0 else (10 // 4)  # the old partial edge chunk index
    with Reader(path) as r:
        after = r.chunks("t")
    assert set(before) <= set(after)
    new_chunks = 0
    for index, comp in after.items():
        if index[ax] < edge:
            assert comp == before[index]  # same blob, offset, length and encoding
        else:
            assert comp.offset >= size  # a new blob after the old end of the file
            new_chunks += index not in before
    grid = (-(-29 // 6), 3) if ax == 0 else (4, -(-19 // 4))
    assert len(after) == grid[0] * grid[1]
    assert new_chunks == len(after) - len(before)
    with open(path, "rb") as f:
        assert f.read(size) == before_bytes  # finalized bytes are never overwritten


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 7)),
    chunks=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    grow=st.integers(1, 6),
    axis=st.sampled_from([0, 1]),
    layout=st.sampled_from(["chunked", "dense", "chunked-zstd"]),
    dask=st.booleans(),
)
def test_append_property(tmp_path_factory, shape, chunks, grow, axis, layout, dask):
    """Any grid, any growth along either axis: the file reads back as numpy's concatenate."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, shape).astype("i8")
    path = str(tmp_path_factory.mktemp("p") / "p.zt")
    enc = {
        "chunked": {"v": {"chunks": chunks, "checksum": "crc32c"}},
        "chunked-zstd": {"v": {"chunks": chunks, "compress": True}},
        "dense": {"v": {"checksum": "sha256"}},
    }[layout]
    to_ztensor_dataset(xr.Dataset({"v": (("a", "b"), data)}), path, mode="w", encoding=enc)
    new_shape = list(shape)
    new_shape[axis] = grow
    new = -rng.integers(1, 1000, new_shape)
    src = da.from_array(new, chunks=2) if dask else new
    to_ztensor_dataset(xr.Dataset({"v": (("a", "b"), src)}), path, append_dim="ab"[axis])
    with Reader(path, verify=True) as r:
        np.testing.assert_array_equal(r.read_tensor("v"), np.concatenate([data, new], axis))
        assert r.manifest.objects["v"].format == ("dense" if layout == "dense" else "chunked")


# --------------------------------------------------------------------------- corruption


def _corrupt(path: str, name: str, role: str) -> bytes:
    """Flip one byte in the middle of a stored component; returns the corrupted file."""
    with Reader(path) as r:
        if role.startswith("c."):  # a chunk, where the object's index puts it
            comp = r.chunks(name)[tuple(int(i) for i in role.split(".")[1:])]
        else:
            comp = r.manifest.objects[name].components[role]
    with open(path, "r+b") as f:
        f.seek(comp.offset + comp.length // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x5A]))
    with open(path, "rb") as f:
        return f.read()


CORRUPT_CASES = {
    # (encoding of t, component to corrupt)
    "chunked-raw": ({"chunks": (6, 4), "checksum": "crc32c"}, "c.3.2"),
    "chunked-zstd": ({"chunks": (6, 4), "compress": True, "checksum": "sha256"}, "c.3.2"),
    "dense": ({"checksum": "crc32c"}, "data"),
}


@pytest.mark.parametrize("case", list(CORRUPT_CASES))
@pytest.mark.parametrize(
    "op", ["append-x", "append-y", "region"], ids=["append-first", "append-other", "region"]
)
def test_corrupt_old_data_is_refused(tmp_path, case, op):
    """One flipped byte in a stored blob the write must read (the (6, 4) grid's corner
    edge chunk, or the dense blob): ChecksumError naming file, object and component, and
    the file is left exactly as it was."""
    enc, role = CORRUPT_CASES[case]
    ds = part(0, 20, 0, 10, 0)[["t"]]
    path = str(tmp_path / "c.zt")
    to_ztensor_dataset(ds, path, mode="w", encoding={"t": enc})
    before = _corrupt(path, "t", role)
    if op == "region":  # partly covers the corrupt corner chunk (rows 18-19, cols 8-9)
        patch = xr.Dataset({"t": (("x", "y"), np.ones((4, 2)))})
        kwargs = {"region": {"x": slice(15, 19), "y": slice(7, 9)}, "mode": "r+"}
    else:
        dim = op[-1]
        patch = _more(dim, 3, 1)[["t"]]
        if dim == "y":
            patch = patch.drop_vars("x")
        patch = patch.chunk({"x": 4})
        kwargs = {"append_dim": dim}
    with pytest.raises(ChecksumError) as info:
        to_ztensor_dataset(patch, path, **kwargs)
    err = info.value
    assert (err.path, err.obj, err.component) == (path, "t", role)
    assert path in str(err) and role in str(err)
    with open(path, "rb") as f:
        assert f.read() == before  # nothing was written, nothing committed


def test_region_into_intact_chunks_of_a_corrupt_file_still_works(tmp_path):
    """Only the blobs a write reads are checked: a region that covers whole chunks (or
    touches only intact ones) succeeds, and the corrupt chunk stays what it was."""
    ds = part(0, 20, 0, 10, 0)[["t"]]
    path = str(tmp_path / "i.zt")
    to_ztensor_dataset(ds, path, mode="w", encoding={"t": {"chunks": (6, 4), "checksum": "crc32c"}})
    _corrupt(path, "t", "c.3.2")
    patch = xr.Dataset({"t": (("x", "y"), np.ones((5, 3)))})
    to_ztensor_dataset(patch, path, region={"x": slice(1, 6), "y": slice(1, 4)}, mode="r+")
    with Reader(path) as r:
        np.testing.assert_array_equal(r.read_slice("t", (slice(1, 6), slice(1, 4))), 1.0)
        with pytest.raises(ChecksumError, match="c.3.2"):
            r.read_slice("t", (slice(18, 20), slice(8, 10)), verify_checksum=True)


# --------------------------------------------------------------------------- memory


_APPEND_ARGS = """
path, layout, axis = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows, cols = 5000, 5000  # float64: 200 MB
"""
_APPEND_SETUP = (
    _APPEND_ARGS
    + """
big = da.zeros((rows, cols), chunks=(250, cols))
enc = {"v": {"chunks": (480, 960), "checksum": "crc32c"}} if layout == "chunked" else {
    "v": {"checksum": "crc32c"}}
to_ztensor_dataset(xr.Dataset({"v": (("r", "c"), big)}), path, mode="w", encoding=enc)
"""
)
_APPEND = (
    _APPEND_ARGS
    + """
shape = (500, cols) if axis == 0 else (rows, 500)  # 20 MB more, not grid-aligned
src = da.ones(shape, chunks=(300, 700))
more = xr.Dataset({"v": (("r", "c"), src)})
to_ztensor_dataset(more, path, append_dim="rc"[axis])
"""
)


@pytest.mark.parametrize(
    "layout,axis", [("dense", 0), ("dense", 1), ("chunked", 1)]
)  # ~3-5 s each: not slow
def test_append_memory_is_bounded(tmp_path, layout, axis):
    """A dask append to a 200 MB variable: anonymous memory grows by a small fraction of
    the variable (block-sized buffers), never by the variable or the appended part."""
    path = str(tmp_path / "big.zt")
    growth = anon_growth_in_subprocess(_APPEND_SETUP, _APPEND, path, layout, str(axis))
    assert growth < 50 << 20, f"RssAnon grew by {growth / 2**20:.0f} MiB"
    with Reader(path, verify=True) as r:
        shape = (5500, 5000) if axis == 0 else (5000, 5500)
        assert tuple(r.manifest.objects["v"].shape) == shape
        old = (slice(4990, 5000), slice(4990, 5000))
        new = (slice(5000, 5010), slice(0, 10)) if axis == 0 else (slice(0, 10), slice(5000, 5010))
        np.testing.assert_array_equal(r.read_slice("v", old), 0.0)
        np.testing.assert_array_equal(r.read_slice("v", new), 1.0)
        np.testing.assert_array_equal(r.read_slice("v", (slice(-3, None), slice(-3, None))), 1.0)
