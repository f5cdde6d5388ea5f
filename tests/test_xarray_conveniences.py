"""``to_zarr``'s conveniences for .zt files: ``group=``, DataTrees added to an existing file
with mode "a", unnamed DataArrays, the ``.ztensor`` accessor and what the writers return;
and one rule, shared with ``from_ztensor``, for a lazy array whose file changes."""

from __future__ import annotations

import os
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from xarray.testing import assert_identical

import ztensor_array as zt


def _ds(seed: int = 0, n: int = 4) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {"t": (("x", "y"), rng.standard_normal((n, 3)), {"units": "K"})},
        coords={"x": np.arange(n), "y": [1.0, 2.0, 3.0]},
        attrs={"title": f"run {seed}"},
    )


def test_group_of_a_new_file_and_groups_added_with_mode_a(tmp_path):
    path = tmp_path / "g.zt"
    assert zt.to_ztensor(_ds(0), path, group="run0") is None  # returns None, as documented
    zt.to_ztensor(_ds(1), path, group="/runs/run1", mode="a")
    zt.to_ztensor(_ds(2), path, mode="a")  # the root group, next to the others
    with xr.open_dataset(path, engine="ztensor", group="run0") as got:
        assert_identical(got.load(), _ds(0))
    with xr.open_datatree(path, engine="ztensor") as tree:
        assert set(tree.groups) == {"/", "/run0", "/runs", "/runs/run1"}
        assert_identical(tree["/runs/run1"].to_dataset().load(), _ds(1))
        assert_identical(tree.to_dataset().load(), _ds(2))
    with pytest.raises(zt.ZTensorError, match="exists"):
        zt.to_ztensor(_ds(3), path, group="run3")  # mode "w-" by default


def test_datatree_written_new_and_into_a_group_with_mode_a(tmp_path):
    tree = xr.DataTree.from_dict({"/": _ds(0), "/a": _ds(1), "/a/b": _ds(2)})
    path = tmp_path / "t.zt"
    zt.to_ztensor(tree, path)
    zt.to_ztensor(tree, path, mode="a", group="/copy")  # the whole tree under /copy
    with xr.open_datatree(path, engine="ztensor") as got:
        assert_identical(got["/copy"].to_dataset().load(), _ds(0))
        assert_identical(got["/copy/a/b"].to_dataset().load(), _ds(2))
        assert_identical(got["/a"].to_dataset().load(), _ds(1))
    replaced = xr.DataTree.from_dict({"/": _ds(7), "/a": _ds(8)})
    zt.to_ztensor(replaced, path, mode="a")  # variables of existing groups are overwritten
    with xr.open_datatree(path, engine="ztensor") as got:
        assert_identical(got["/a"].to_dataset().load(), _ds(8))
        assert_identical(got["/a/b"].to_dataset().load(), _ds(2))
    with pytest.raises(zt.ZTensorError, match="append_dim"):
        zt.to_ztensor(tree, path, mode="a", append_dim="x")


def test_datatree_under_a_group_of_a_new_file_and_compute_false(tmp_path):
    tree = xr.DataTree.from_dict({"/": _ds(0).chunk(2), "/a": _ds(1)})
    path = tmp_path / "d.zt"
    delayed = zt.to_ztensor(tree, path, group="inner", compress=3, compute=False)
    assert not path.exists()
    delayed.compute()
    with xr.open_datatree(path, engine="ztensor") as got:
        assert set(got.groups) == {"/", "/inner", "/inner/a"}
        assert_identical(got["/inner/a"].to_dataset().load(), _ds(1))
    more = xr.DataTree.from_dict({"/b": _ds(4)})
    later = zt.to_ztensor(more, path, mode="a", group="inner", compute=False)
    with xr.open_datatree(path, engine="ztensor") as got:
        assert "/inner/b" not in got.groups  # nothing written before compute
    later.compute()
    with xr.open_datatree(path, engine="ztensor") as got:
        assert_identical(got["/inner/b"].to_dataset().load(), _ds(4))


def test_unnamed_dataarray_through_to_ztensor_and_the_accessor(tmp_path):
    arr = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("a", "b"), attrs={"units": "m"})
    zt.to_ztensor(arr, tmp_path / "u.zt")
    arr.ztensor.to(tmp_path / "v.zt")
    for p in ("u.zt", "v.zt"):
        with xr.open_dataarray(tmp_path / p, engine="ztensor") as back:
            assert back.name is None
            assert_identical(back.load(), arr)
    arr.ztensor.to(tmp_path / "n.zt", name="depth")
    with xr.open_dataset(tmp_path / "n.zt", engine="ztensor") as back:
        assert list(back.data_vars) == ["depth"]


def test_accessor_on_datasets_and_datatrees(tmp_path):
    ds = _ds(0)
    assert ds.ztensor.to(tmp_path / "a.zt", encoding={"t": {"compress": 5}}) is None
    with xr.open_dataset(tmp_path / "a.zt", engine="ztensor") as back:
        assert_identical(back.load(), ds)
        assert back["t"].encoding["compress"] is True
    ds.ztensor.to(tmp_path / "a.zt", mode="a", group="g")
    tree = xr.DataTree.from_dict({"/": ds, "/k": _ds(1)})
    tree.ztensor.to(tmp_path / "t.zt")
    with xr.open_datatree(tmp_path / "t.zt", engine="ztensor") as back:
        assert_identical(back.load(), tree)
    delayed = ds.chunk(2).ztensor.to(tmp_path / "l.zt", compute=False)
    delayed.compute()
    with pytest.raises(TypeError, match="renames a DataArray"):
        ds.ztensor.to(tmp_path / "x.zt", name="nope")


def test_accessor_is_registered_by_importing_ztensor_array_after_xarray():
    """xarray imported first (isort's order): ``import ztensor_array`` registers it; the
    other order without any xarray call leaves it to xarray's backend loading."""
    code = (
        "import xarray as xr\nimport ztensor_array\n"
        "print(hasattr(xr.Dataset(), 'ztensor'), hasattr(xr.DataArray(1), 'ztensor'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_group_is_for_xarray_objects(tmp_path):
    with pytest.raises(TypeError, match="group= is for xarray"):
        zt.to_ztensor(np.zeros(3), tmp_path / "a.zt", "a", group="g")


# --------------------------------------------------------------------------- file changes


def _lazy(side: str, path, name: str = "x"):
    """A lazy array over tensor ``name``: from_ztensor's, or an xarray variable's."""
    if side == "dask":
        return zt.from_ztensor(path, name)
    ds = xr.open_dataset(path, engine="ztensor", cache=False)
    return ds[name]


def _values(side: str, arr) -> np.ndarray:
    return arr.compute(scheduler="sync") if side == "dask" else arr.values


def _write(path, x, **kwargs):
    ds = xr.Dataset({"x": (("a", "b"), x)})
    zt.to_ztensor(ds, path, **kwargs)


@pytest.mark.parametrize("side", ["dask", "xarray"])
@pytest.mark.parametrize("layout", ["dense", "chunked"])
def test_a_lazy_array_keeps_reading_its_data_or_refuses(tmp_path, side, layout):
    """One rule for from_ztensor and xarray (reader.TensorRef): the file grown by appends of
    other tensors keeps being read; a path naming another file, a file modified in place,
    or the tensor itself replaced raise a ZTensorError that says which."""
    path = tmp_path / "f.zt"
    x = np.arange(48.0).reshape(8, 6)
    enc = {"encoding": {"x": {"chunks": (4, 3)}}} if layout == "chunked" else {}
    _write(path, x, **enc)

    arr = _lazy(side, path)
    zt.to_ztensor({"y": np.ones(3)}, path, mode="a")  # the file grows: x untouched
    np.testing.assert_array_equal(_values(side, arr), x)

    with zt.Writer(path, "a") as w:  # x itself replaced
        w.replace("x", x + 1, attributes=dict(zt.Reader(path).metadata("x").attributes or {}))
    with pytest.raises(zt.ZTensorError, match="changed since"):
        _values(side, arr)

    arr = _lazy(side, path)
    np.testing.assert_array_equal(_values(side, arr), x + 1)
    _write(tmp_path / "other.zt", x + 1, **enc)
    os.replace(tmp_path / "other.zt", path)  # the same content, another file
    with pytest.raises(zt.ZTensorError, match="replaced since"):
        _values(side, arr)

    arr = _lazy(side, path)
    st = os.stat(path)
    other = tmp_path / "o.zt"
    _write(other, x[::-1].copy(), **enc)
    with open(path, "r+b") as f:  # the same inode, rewritten in place
        f.write(other.read_bytes())
        f.truncate()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(zt.ZTensorError, match="modified since"):
        _values(side, arr)


def test_dask_backed_xarray_variables_follow_the_rule_too(tmp_path):
    path = tmp_path / "d.zt"
    x = np.arange(20.0).reshape(4, 5)
    _write(path, x, encoding={"x": {"chunks": (2, 5)}})
    with xr.open_dataset(path, engine="ztensor", chunks={}) as ds:
        assert isinstance(ds["x"].data, da.Array)
        zt.to_ztensor({"z": np.zeros(2)}, path, mode="a")
        np.testing.assert_array_equal(ds["x"].values, x)
        _write(path, x * 2, mode="w")
        with pytest.raises(zt.ZTensorError, match="replaced since"):
            ds["x"].load()
