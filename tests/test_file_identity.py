"""Which file a cached reader stands for (issue 15, item 12): the process's shared Readers
(``reader.shared_reader``, through which ``from_ztensor`` blocks and lazy xarray variables
read), the validated-manifest memo and lazy arrays identify a file by device, inode, size and
ctime (``files.FileIdentity``), never by path, size and mtime. A file rewritten in place with
other data of the same size and its mtime set back (``os.utime``) reads as its new data when
opened again, and a lazy array made before refuses to read it."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ztensor_array as zt


def _rewrite_in_place(path, data: bytes) -> None:
    """Write ``data`` over ``path`` (same inode, same size), then restore its times."""
    st = os.stat(path)
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = os.stat(path)
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("chunks", [None, (4, 4)], ids=["dense", "chunked"])
def test_a_same_size_rewrite_with_kept_mtime_reads_as_the_new_data(tmp_path, chunks):
    p, other = tmp_path / "r.zt", tmp_path / "o.zt"
    x = np.arange(64, dtype="f4").reshape(8, 8)
    y = -x[::-1]
    zt.to_ztensor(x, p, "x", chunks=chunks)
    zt.to_ztensor(y, other, "x", chunks=chunks)
    old = zt.from_ztensor(p, "x")
    np.testing.assert_array_equal(old.compute(scheduler="sync"), x)  # shared reader + memo
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), x)

    _rewrite_in_place(p, other.read_bytes())

    np.testing.assert_array_equal(zt.from_ztensor(p, "x").compute(scheduler="sync"), y)
    with zt.Reader(p) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), y)
    with pytest.raises(zt.ZTensorError, match="modified since"):
        old.compute(scheduler="sync")


def test_a_rewrite_keeping_the_manifest_bytes_reads_as_the_new_data(tmp_path):
    """Same names, shapes and offsets (so the very same manifest bytes, which the memo may
    serve again), other values: the data comes from the file as it is now."""
    p, other = tmp_path / "m.zt", tmp_path / "o.zt"
    zt.save_file({"a": np.zeros(100, "f8"), "b": np.ones(3, "i4")}, p)
    zt.save_file({"a": np.full(100, 7.0), "b": np.full(3, 9, "i4")}, other)
    assert p.read_bytes()[-100:] == other.read_bytes()[-100:]  # manifest and footer alike
    np.testing.assert_array_equal(zt.from_ztensor(p, "a").compute(scheduler="sync"), 0.0)
    np.testing.assert_array_equal(zt.load_file(p)["b"], 1)

    _rewrite_in_place(p, other.read_bytes())

    np.testing.assert_array_equal(zt.from_ztensor(p, "a").compute(scheduler="sync"), 7.0)
    np.testing.assert_array_equal(zt.load_file(p)["b"], 9)


def test_a_rewrite_that_moves_the_tensor_is_read_where_it_now_is(tmp_path):
    """The same objects in the other order: ``x`` at another offset in a file of the same
    size. A reader kept for the old state would read the old offset: ``pad``'s bytes."""
    p, other = tmp_path / "p.zt", tmp_path / "o.zt"
    x = np.arange(64, dtype="f4")
    pad = np.full(64, -1.0, "f4")
    for path, order in ((p, ("x", "pad")), (other, ("pad", "x"))):
        with zt.Writer(path, "w") as w:
            for name in order:
                w.add_tensor(name, {"x": x, "pad": pad}[name])
    np.testing.assert_array_equal(zt.from_ztensor(p, "x").compute(scheduler="sync"), x)

    _rewrite_in_place(p, other.read_bytes())

    with zt.Reader(p) as r:
        assert r.metadata("x").offset != 64
    np.testing.assert_array_equal(zt.from_ztensor(p, "x").compute(scheduler="sync"), x)
    np.testing.assert_array_equal(zt.from_ztensor(p, "pad").compute(scheduler="sync"), pad)
