"""One read path, one chunked implementation (the redesign issue): every dtype and layout that
``Reader.read_tensor`` reads, ``from_ztensor`` reads with the same values and the same
errors; the Dask read graph fuses like ``da.from_zarr``'s; growth and region writes through
every driver keep the stored encoding and write chunk frames that record their size."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse
import zstandard
from conftest import ALL_DTYPES, assert_same, sample

import ztensor_array as zt
from ztensor_array.backends.dask import from_ztensor
from ztensor_array.layouts import chunked

FLOATS = ("f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2")


def _file_of_every_layout(path) -> None:
    """Each dtype as dense raw, dense zstd, chunked raw and chunked zstd (with an edge
    chunk and a never-written one); sparse CSR/COO of every float dtype, raw and zstd;
    a GPTQ quantized_group."""
    with zt.Writer(path) as w:
        for dt in ALL_DTYPES:
            x = sample(dt, (9, 7), seed=len(dt))
            w.add_tensor(f"dense_{dt}", x, checksum="crc32c")
            w.add_tensor(f"zdense_{dt}", x, compress=True)
            for level in (0, 3):
                grid = chunked.grid_attributes((4, 3), dt)
                comps = {}
                for i in range(3):
                    for j in range(3):
                        if (i, j) != (1, 1):  # a chunk never written: the fill value
                            comps[chunked.chunk_role((i, j))] = np.ascontiguousarray(
                                x[i * 4 : i * 4 + 4, j * 3 : j * 3 + 3]
                            ).reshape(-1)
                w.add_object(
                    f"chunked{level}_{dt}",
                    "chunked",
                    x.shape,
                    comps,
                    compress=level,
                    attributes={"chunk_grid": grid},
                )
        for dt in FLOATS:
            m = scipy.sparse.random(13, 11, density=0.3, format="csr", random_state=1)
            values = m.data.astype(sample(dt, (1,)).dtype)
            for level in (0, 3):
                w.add_sparse_csr(
                    f"csr{level}_{dt}", values, m.indices, m.indptr, m.shape, compress=level
                )
                coo = m.tocoo()
                w.add_sparse_coo(
                    f"coo{level}_{dt}",
                    values,
                    np.stack([coo.row, coo.col]),
                    m.shape,
                    compress=level,
                )
        rng = np.random.default_rng(0)
        packed = rng.integers(-(2**31), 2**31 - 1, (4, 16), dtype=np.int64).astype(np.int32)
        scales = (rng.random((1, 16)) * 0.1).astype(np.float16)
        zeros = rng.integers(-(2**31), 2**31 - 1, (1, 2), dtype=np.int64).astype(np.int32)
        w.add_quantized_group("gptq", packed, scales, zeros, (16, 32), bits=4, group_size=32)


@pytest.fixture(scope="module")
def every_layout(tmp_path_factory):
    path = tmp_path_factory.mktemp("layouts") / "all.zt"
    _file_of_every_layout(path)
    return path


def _value(v):
    return v.toarray() if scipy.sparse.issparse(v) else np.asarray(v)


def test_every_dtype_and_layout_reads_the_same_through_dask(every_layout):
    with zt.Reader(every_layout) as r:
        names = r.tensor_names
        want = {n: r.read_tensor(n, copy=True) for n in names}
    assert len(names) > 90
    for chunks in ("auto", 5):
        arrays = from_ztensor(every_layout)
        for name in names:
            split = (5, -1) if name.startswith("csr") else chunks  # CSR: row blocks only
            arr = arrays[name] if chunks == "auto" else from_ztensor(every_layout, name, split)
            got = arr.compute(scheduler="sync")
            assert type(got) is type(want[name]) or scipy.sparse.issparse(want[name]), name
            assert_same(_value(got), _value(want[name]))


def test_bf16_csr_reads_as_the_reader_widens_it(every_layout):
    """The symptom of two read paths: bf16 CSR values are widened to float32 by the sparse
    layout (scipy has no bf16); Dask blocks of row ranges must do the same."""
    with zt.Reader(every_layout) as r:
        want = r.read_tensor("csr0_bf16")
    assert want.dtype == np.float32
    arr = from_ztensor(every_layout, "csr0_bf16", chunks=(4, -1))
    assert arr.npartitions == 4 and arr.dtype == np.float32
    np.testing.assert_array_equal(arr.compute().toarray(), want.toarray())


@pytest.mark.parametrize("name", ["zdense_f32", "chunked3_f32", "csr3_f32"])
def test_the_same_errors(tmp_path, every_layout, name):
    """A corrupt frame is a DecodeError naming file, object and component, whether read by
    the Reader or by a Dask task."""
    bad = tmp_path / "bad.zt"
    data = bytearray(every_layout.read_bytes())
    with zt.Reader(every_layout) as r:
        comps = r.metadata(name).components
    role = max(comps, key=lambda k: comps[k].length)
    comp = comps[role]
    data[comp.offset : comp.offset + 4] = b"\0\0\0\0"  # no zstd frame magic: undecodable
    bad.write_bytes(bytes(data))
    with zt.Reader(bad) as r, pytest.raises(zt.DecodeError) as direct:
        r.read_tensor(name)
    with pytest.raises(zt.DecodeError) as lazy:
        from_ztensor(bad, name).compute(scheduler="sync")
    assert str(lazy.value) == str(direct.value)
    assert str(bad) in str(lazy.value) and repr(name) in str(lazy.value)


def test_sum_graph_is_no_larger_than_from_zarrs(tmp_path):
    zarr = pytest.importorskip("zarr")
    x = np.arange(256 * 128, dtype="f4").reshape(256, 128)
    p = tmp_path / "s.zt"
    zt.to_ztensor(x, p, "x", chunks=(32, 32))  # 8 x 4 = 32 chunks
    z = zarr.open_array(
        str(tmp_path / "s.zarr"), mode="w", shape=x.shape, chunks=(32, 32), dtype=x.dtype
    )
    z[...] = x
    ours = from_ztensor(p, "x").sum()
    theirs = da.from_zarr(str(tmp_path / "s.zarr")).sum()
    assert from_ztensor(p, "x").npartitions == da.from_zarr(str(tmp_path / "s.zarr")).npartitions
    (ours_opt,) = dask.optimize(ours)
    (theirs_opt,) = dask.optimize(theirs)
    assert len(ours_opt.__dask_graph__()) <= len(theirs_opt.__dask_graph__())
    assert float(ours.compute()) == float(theirs.compute()) == float(x.sum())


def test_key_names_follow_dask(tmp_path):
    p = tmp_path / "k.zt"
    zt.to_ztensor(np.ones((4, 4), "f4"), p, "x")
    assert from_ztensor(p, "x", name="mine").name == "mine"
    assert from_ztensor(p, tensor="x").name == from_ztensor(p, "x").name
    assert from_ztensor(p, "x").name.startswith("from-ztensor-")
    inlined = from_ztensor(p, "x", inline_array=True)
    assert not any(str(k).startswith("original-") for k in inlined.__dask_graph__())
    with pytest.warns(DeprecationWarning, match="tensor="):
        old = from_ztensor(p, name="x")
    np.testing.assert_array_equal(old.compute(), np.ones((4, 4), "f4"))


def _frames_record_their_size(path, name) -> None:
    with zt.Reader(path) as r:
        grid = chunked.chunk_grid(r.metadata(name).object)
        chunks = r.chunks(name)
    assert len(chunks) == np.prod(grid.grid)
    with open(path, "rb") as f:
        for index, comp in chunks.items():
            assert comp.encoding == "zstd", index
            f.seek(comp.offset)
            blob = f.read(comp.length)
            assert zstandard.frame_content_size(blob) == grid.nbytes(index), index


@pytest.mark.parametrize("driver", ["numpy", "dask"])
def test_compressed_append_keeps_zstd_and_sized_frames(tmp_path, driver):
    """to_ztensor(compress=3, chunks=...) then appends with no compress= given: the new
    chunks are zstd frames that record their decoded size, like the first write's, so a
    file of zeros stays small (it grew to 8.4 MB of raw chunks before)."""
    p = tmp_path / "a.zt"
    zeros = np.zeros((512, 1024), "f4")
    zt.to_ztensor(zeros, p, "x", compress=3, chunks=(256, 256), checksum="crc32c")
    first = p.stat().st_size
    for axis in (0, 1, 0):
        with zt.Reader(p) as r:
            shape = list(r.metadata("x").shape)
        shape[axis] = 100
        more = np.zeros(shape, "f4")
        src = da.from_array(more, chunks=64) if driver == "dask" else more
        zt.to_ztensor(src, p, "x", mode="a", append_dim=axis)
    assert p.stat().st_size < first + (64 << 10)
    _frames_record_their_size(p, "x")
    with zt.Reader(p, verify=True) as r:
        assert r.read_tensor("x").shape == (712, 1124)
        assert not r.read_tensor("x").any()
        assert all(c.digest.startswith("crc32c:") for c in r.chunks("x").values())


def test_xarray_append_frames_record_their_size(tmp_path):
    """The xarray store path (an append that also rewrites a dense variable) writes its
    chunked variable's new chunks with the same frame policy as the first write."""
    xr = pytest.importorskip("xarray")
    p = tmp_path / "x.zt"
    ds = xr.Dataset(
        {"t": (("x", "y"), np.arange(40.0).reshape(8, 5)), "d": ("x", np.arange(8.0))},
        coords={"x": np.arange(8)},
    )
    zt.to_ztensor(ds, p, encoding={"t": {"compress": 3, "chunks": (3, 5)}})
    more = ds.assign_coords(x=np.arange(8, 16))
    zt.to_ztensor(more, p, mode="a", append_dim="x")
    _frames_record_their_size(p, "t")
    with xr.open_dataset(p, engine="ztensor") as back:
        xr.testing.assert_identical(back.load(), xr.concat([ds, more], "x"))
