"""Orthogonal (``read_slice``) and point-wise (``read_points``) selections read the same
values from every layout, and a chunked tensor decodes only the chunks that hold a selected
element (issue 14, deliver 4).

Oracles: numpy on the array in memory (``np.ix_`` for orthogonal picks, numpy advanced
indexing with the point dimensions moved first for point-wise ones, as xarray and zarr's
``vindex`` order them), the set of chunks computed by hand from the indices, and xarray's
own indexing of the in-memory Dataset (``assert_identical``).
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ztensor_array as zt
from ztensor_array.layouts.chunked import read as chunked_read


@pytest.fixture
def decoded(monkeypatch):
    """The grid indices of the chunks each read decodes (a spy on the one function that
    turns a stored chunk into an array; the real function still runs)."""
    seen: list[tuple[int, ...]] = []
    real = chunked_read._chunk

    def spy(obj, grid, get, index, stored, path, name):
        seen.append(tuple(index))
        return real(obj, grid, get, index, stored, path, name)

    monkeypatch.setattr(chunked_read, "_chunk", spy)
    return seen


def _write(path, x, chunks):
    zt.to_ztensor(
        {"raw": x, "zstd": x, "grid": x},
        path,
        mode="w",
        encoding={
            "zstd": {"compress": True, "layout": "dense"},
            "grid": {"chunks": chunks, "compress": True},
        },
    )


def _orthogonal_oracle(x, key):
    """numpy's answer for an orthogonal key of ints, slices and 1-D int arrays."""
    out = x
    for axis, k in enumerate(key):  # axis by axis, every axis kept until the end
        if isinstance(k, slice):
            out = out[(slice(None),) * axis + (k,)]
        else:
            out = np.take(out, np.asarray(k, dtype=np.int64).reshape(-1), axis=axis)
    drop = [a for a, k in enumerate(key) if not isinstance(k, slice) and np.ndim(k) == 0]
    return out.reshape([s for a, s in enumerate(out.shape) if a not in drop])


def _points_oracle(x, key):
    """numpy advanced indexing with the broadcast point dimensions first."""
    picked = [a for a, k in enumerate(key) if not isinstance(k, slice)]
    moved = np.moveaxis(x, picked, range(len(picked)))
    order = [key[a] for a in picked] + [k for k in key if isinstance(k, slice)]
    return moved[tuple(order)]


@st.composite
def _case(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, s)) for s in shape)
    slices = st.builds(
        slice,
        st.none() | st.integers(-10, 10),
        st.none() | st.integers(-10, 10),
        st.none() | st.sampled_from([1, 2, -1, -3]),
    )
    orth = []
    for n in shape:
        orth.append(
            draw(
                st.one_of(
                    slices,
                    st.integers(-n, n - 1),
                    st.lists(st.integers(-n, n - 1), max_size=5),
                )
            )
        )
    npoints = draw(st.integers(0, 5))
    points = []
    for n in shape:
        if draw(st.booleans()):
            points.append(draw(slices))
        else:
            points.append(draw(st.lists(st.integers(0, n - 1), min_size=npoints, max_size=npoints)))
    return shape, chunks, tuple(orth), tuple(points)


def _chunks_holding(key, shape, chunks, pointwise):
    """The grid indices of the chunks that hold a selected element, by hand."""
    per_axis = []
    for k, n, c in zip(key, shape, chunks):
        if isinstance(k, slice):
            per_axis.append(sorted({i // c for i in range(*k.indices(n))}))
        elif np.ndim(k) == 0:
            per_axis.append([(int(k) % n) // c])
        else:
            per_axis.append(None if pointwise else sorted({(i % n) // c for i in k}))
    if not pointwise:
        return set(itertools.product(*per_axis))
    picked = [a for a, k in enumerate(key) if not isinstance(k, slice)]
    if not picked:
        return set(itertools.product(*per_axis))
    points = zip(
        *[
            np.broadcast_arrays(*[np.asarray(key[a]) for a in picked])[j].ravel()
            for j in range(len(picked))
        ]
    )
    out = set()
    for point in points:
        axes = list(per_axis)
        for a, i in zip(picked, point):
            axes[a] = [int(i) // chunks[a]]
        out.update(itertools.product(*axes))
    return out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_case())
def test_selections_match_numpy_and_decode_only_touched_chunks(tmp_path, decoded, case):
    shape, chunks, orth, points = case
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    path = tmp_path / "s.zt"
    _write(path, x, chunks)
    orth = tuple(np.asarray(k, dtype=np.int64) if isinstance(k, list) else k for k in orth)
    points = tuple(np.asarray(k, dtype=np.int64) if isinstance(k, list) else k for k in points)
    with zt.Reader(path) as r:
        for read, key, oracle, pointwise in (
            (r.read_slice, orth, _orthogonal_oracle, False),
            (r.read_points, points, _points_oracle, True),
        ):
            want = oracle(x, key)
            for name in ("raw", "zstd", "grid"):
                decoded.clear()
                got = read(name, key)
                np.testing.assert_array_equal(got, want, err_msg=name)
                assert got.shape == want.shape, name
            if want.size:  # the chunked one: each chunk holding a selected element, once
                assert sorted(decoded) == sorted(_chunks_holding(key, shape, chunks, pointwise))


def test_issue_example_counts_decoded_chunks(tmp_path, decoded):
    """``t=[1, 50, 99], y=[0, 399]`` on a (100, 400) grid of (10, 20) chunks: orthogonal
    picks touch 3 x 2 chunks, point-wise pairs touch 2 (zarr's ``oindex``/``vindex``
    counts); the bounding box would be 10 x 20."""
    x = np.random.default_rng(0).normal(size=(100, 400)).astype("f4")
    path = tmp_path / "t.zt"
    zt.to_ztensor(x, path, "v", mode="w", encoding={"chunks": (10, 20), "compress": True})
    with zt.Reader(path) as r:
        got = r.read_slice("v", ([1, 50, 99], [0, 399]))
        np.testing.assert_array_equal(got, x[np.ix_([1, 50, 99], [0, 399])])
        assert sorted(decoded) == [(0, 0), (0, 19), (5, 0), (5, 19), (9, 0), (9, 19)]
        decoded.clear()
        got = r.read_points("v", ([1, 99], [0, 399]))
        np.testing.assert_array_equal(got, x[[1, 99], [0, 399]])
        assert sorted(decoded) == [(0, 0), (9, 19)]


def test_bad_selections_are_index_errors_naming_the_tensor(tmp_path):
    x = np.zeros((4, 5), "f4")
    path = tmp_path / "b.zt"
    _write(path, x, (2, 2))
    with zt.Reader(path) as r:
        for name in ("raw", "grid"):
            with pytest.raises(zt.InvalidIndexError, match=name) as info:
                r.read_points(name, ([0, 1], [0, 1, 2]))
            assert isinstance(info.value, IndexError)
            with pytest.raises(zt.InvalidIndexError, match="out of bounds"):
                r.read_slice(name, ([0, 4],))
            with pytest.raises(zt.InvalidIndexError, match="out of bounds"):
                r.read_points(name, (slice(None), [5]))
            with pytest.raises(IndexError, match="too many"):
                r.read_slice(name, (0, 0, 0))


def test_xarray_vectorised_indexing_decodes_only_chunks_with_points(tmp_path, decoded):
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {"t": (("time", "y", "x"), rng.normal(size=(20, 30, 8)).astype("f4"))},
        coords={"time": np.arange(20), "y": np.arange(30)},
    )
    path = tmp_path / "x.zt"
    zt.to_ztensor(ds, path, encoding={"t": {"chunks": (5, 10, 8), "compress": True}})
    pick = {
        "time": xr.DataArray([1, 19, 2], dims="p"),
        "y": xr.DataArray([0, 29, 3], dims="p"),
    }
    with xr.open_dataset(path, engine="ztensor") as got:
        decoded.clear()
        xr.testing.assert_identical(got.t.isel(pick).load(), ds.t.isel(pick))
        assert sorted(decoded) == [(0, 0, 0), (3, 2, 0)]
        decoded.clear()  # orthogonal: the outer product of the picked chunks
        xr.testing.assert_identical(
            got.t.isel(time=[1, 19], y=[0, 29]).load(), ds.t.isel(time=[1, 19], y=[0, 29])
        )
        assert sorted(decoded) == [(0, 0, 0), (0, 2, 0), (3, 0, 0), (3, 2, 0)]


def _storage_reads() -> int:
    """Bytes this process has made the kernel fetch from storage (page-cache misses)."""
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["read_bytes"])


def _uncache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_a_cold_small_window_reads_only_its_pages(tmp_path):
    """A 50 x 50 window of a 64 MiB raw matrix read cold (page cache dropped) fetches about
    its 50 pages from storage, not megabytes of read-ahead around each (issue 14)."""
    if not os.path.exists("/proc/self/io") or not hasattr(os, "posix_fadvise"):
        pytest.skip("needs Linux /proc/self/io and posix_fadvise to see storage reads")
    x = np.random.default_rng(0).normal(size=(4096, 4096)).astype("f4")
    path = tmp_path / "m.zt"
    zt.save_file({"m": x}, path)
    _uncache(path)
    before = _storage_reads()
    with zt.Reader(path) as r:
        r.read_slice("m", (slice(None, 256),))  # 4 MiB of whole rows: read-ahead is welcome
    if _storage_reads() - before < 4 << 20:
        pytest.skip("storage reads are not visible here (page cache not dropped, or tmpfs)")
    _uncache(path)
    before = _storage_reads()
    with zt.Reader(path) as r:
        got = r.read_slice("m", (slice(1000, 1050), slice(3000, 3050)))
    fetched = _storage_reads() - before
    np.testing.assert_array_equal(got, x[1000:1050, 3000:3050])
    assert fetched <= 64 * 4096 + (64 << 10), fetched  # its pages (+ the header's)
