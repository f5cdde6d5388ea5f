"""Writer: atomic replace, modes, names, input kinds, padding and attributes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import cbor2
import numpy as np
import pytest
from conftest import ALL_DTYPES, assert_same, sample
from hypothesis import given, settings
from hypothesis import strategies as st

import ztensor_array as za
from ztensor_array import files
from ztensor_array.errors import FileExistsZTError, ZTensorError


def _manifest(data: bytes) -> dict:
    n = int.from_bytes(data[-16:-8], "little")
    return cbor2.loads(data[-16 - n : -16])


def _write(path, arrays, **kw):
    with za.Writer(path, **kw) as w:
        for n, a in arrays.items():
            w.add_tensor(n, a)


@pytest.fixture
def previous(tmp_path):
    path = tmp_path / "model.zt"
    _write(path, {"old": np.arange(10, dtype=np.int32)})
    return path, path.read_bytes(), sorted(os.listdir(tmp_path))


# --------------------------------------------------------------------------- atomicity


def test_exception_inside_with_keeps_previous_file(previous):
    path, before, listing = previous

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with za.Writer(path) as w:
            w.add_tensor("new", np.ones(1000, np.float64))
            w.add_tensor("z", np.ones(1000, np.float64), compress=True)
            raise Boom
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == listing


def test_abort_and_unfinalized_writer_leave_nothing(tmp_path, previous):
    path, before, listing = previous
    w = za.Writer(path)
    w.add_tensor("x", np.ones(10))
    w.abort()
    assert path.read_bytes() == before
    fresh = tmp_path / "never.zt"
    w = za.Writer(fresh)
    w.add_tensor("x", np.ones(10))
    del w  # dropped without finalize
    import gc

    gc.collect()
    assert not fresh.exists()
    assert sorted(os.listdir(tmp_path)) == listing


def test_sigkill_before_finalize_keeps_previous_file(previous):
    path, before, listing = previous
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np, ztensor_array as za
        w = za.Writer({str(path)!r})
        w.add_tensor("a", np.ones(1 << 20, np.float32))
        w.add_tensor("b", np.ones(1 << 20, np.float32), compress=True)
        w._flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == listing
    with za.Reader(path) as r:
        assert r.tensor_names == ["old"]


def test_successful_replace(previous):
    path, _, listing = previous
    _write(path, {"new": np.ones(3, np.float32)})
    with za.Reader(path) as r:
        assert r.tensor_names == ["new"]
    assert sorted(os.listdir(path.parent)) == listing


def test_reader_of_old_file_unaffected_by_replace(previous):
    path, _, _ = previous
    with za.Reader(path) as r:
        old = r.read_tensor("old")
        _write(path, {"new": np.zeros(3)})
        assert_same(old, np.arange(10, dtype=np.int32))  # the old inode is still mapped
        assert_same(r.read_tensor("old"), np.arange(10, dtype=np.int32))


def test_mode_x_refuses_existing_path(previous):
    path, before, listing = previous
    with pytest.raises(FileExistsZTError) as info:
        za.Writer(path, mode="x")
    assert isinstance(info.value, FileExistsError) and str(path) in str(info.value)
    assert path.read_bytes() == before


def test_mode_x_loses_race_cleanly(tmp_path):
    path = tmp_path / "race.zt"
    w = za.Writer(path, mode="x")
    w.add_tensor("mine", np.ones(4))
    path.write_bytes(b"someone else")
    with pytest.raises(FileExistsZTError):
        w.finalize()
    assert path.read_bytes() == b"someone else"
    assert os.listdir(tmp_path) == ["race.zt"]


def test_mode_x_creates_new(tmp_path):
    path = tmp_path / "x.zt"
    _write(path, {"a": np.ones(2)}, mode="x")
    with za.Reader(path) as r:
        assert r.tensor_names == ["a"]


def test_bad_mode():
    with pytest.raises(ValueError):
        za.Writer("whatever.zt", mode="r")


def test_missing_folder_is_ztensor_error(tmp_path):
    with pytest.raises(ZTensorError):
        za.Writer(tmp_path / "no" / "such" / "dir.zt")


def test_the_append_lock_belongs_to_the_file_not_its_name(tmp_path, monkeypatch):
    """One appender per file: the lock follows the open file through a rename, and a new
    file at the old name is a different file. The appender whose path now names another
    file fails loudly instead of finalizing into a file nobody finds (issue 15, item 2)."""
    monkeypatch.setattr(files, "LOCK_WAIT", 0.05)
    p, moved = tmp_path / "a.zt", tmp_path / "moved.zt"
    _write(p, {"x": np.arange(3)})
    w = za.Writer(p, "a")
    os.rename(p, moved)
    with pytest.raises(za.FileBusyError, match="another writer"):
        za.Writer(moved, "a")
    with pytest.raises(za.FileBusyError, match="another writer"):
        files.truncate_file(str(moved), 64)  # what repair would do
    _write(p, {"y": np.arange(4)})
    with za.Writer(p, "a") as other:
        other.add_tensor("z", np.arange(5))
    w.add_tensor("late", np.arange(6))
    with pytest.raises(za.FileReplacedError):
        w.finalize()
    with za.Reader(moved) as r:
        assert r.tensor_names == ["x"]
    with za.Reader(p) as r:
        assert r.tensor_names == ["y", "z"]


def test_new_files_appear_whole_or_not_at_all(tmp_path):
    """The file primitives' atomic creation: a failure leaves the old file and no temp."""
    p, q = tmp_path / "f.bin", tmp_path / "g.bin"
    p.write_bytes(b"old")
    with pytest.raises(TypeError):
        files.write_new(str(p), object())  # fails after the temp file was made
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    files.write_new(str(p), b"new bytes", durable=True)
    assert p.read_bytes() == b"new bytes"
    with pytest.raises(ZTensorError, match="ended early"):
        files.copy_prefix(str(p), str(q), 100)
    assert os.listdir(tmp_path) == ["f.bin"]
    files.copy_prefix(str(p), str(q), 3)
    assert q.read_bytes() == b"new"
    with pytest.raises(FileExistsZTError):
        files.create_temp(str(q), exclusive=True)


# --------------------------------------------------------------------------- names and misuse


def test_duplicate_names_error(tmp_path):
    path = tmp_path / "d.zt"
    with za.Writer(path) as w:
        w.add_tensor("a", np.ones(2))
        with pytest.raises(ZTensorError) as info:
            w.add_tensor("a", np.zeros(2))
        assert "'a'" in str(info.value)
        with pytest.raises(ZTensorError):
            w.add_sparse_coo("a", np.ones(1), np.array([[0], [0]]), (2, 2))
    with za.Reader(path) as r:
        assert_same(r.read_tensor("a"), np.ones(2))


def test_use_after_finalize(tmp_path):
    w = za.Writer(tmp_path / "f.zt")
    w.add_tensor("a", np.ones(2))
    w.finalize()
    with pytest.raises(ZTensorError):
        w.add_tensor("b", np.ones(2))
    with pytest.raises(ZTensorError):
        w.finalize()


@pytest.mark.parametrize(
    "bad",
    [np.array(["a", "b"]), np.array([object(), 1], dtype=object), np.zeros(2, np.float128)],
)
def test_unsupported_arrays(tmp_path, bad):
    path = tmp_path / "u.zt"
    with za.Writer(path) as w:
        with pytest.raises(ZTensorError) as info:
            w.add_tensor("bad", bad)
        assert "'bad'" in str(info.value)
        w.add_tensor("good", np.ones(1))
    with za.Reader(path) as r:
        assert r.tensor_names == ["good"]


@pytest.mark.parametrize("kw", [{"compress": 23}, {"compress": -1}, {"checksum": "md5"}])
def test_bad_options(tmp_path, kw):
    with za.Writer(tmp_path / "o.zt") as w:
        with pytest.raises(ValueError):
            w.add_tensor("t", np.ones(2), **kw)


def test_non_text_names_rejected(tmp_path):
    with za.Writer(tmp_path / "n.zt") as w:
        with pytest.raises(TypeError):
            w.add_tensor(3, np.ones(2))


# --------------------------------------------------------------------------- inputs


def test_0d_keeps_shape_empty(tmp_path):
    path = tmp_path / "s.zt"
    with za.Writer(path) as w:
        w.add_tensor("s", np.array(7, np.int16))
        w.add_tensor("z", np.float64(2.5), compress=True)
        w.add_tensor("py", 3.0)
    assert _manifest(path.read_bytes())["objects"]["s"]["shape"] == []
    with za.Reader(path) as r:
        assert_same(r.read_tensor("s"), np.array(7, np.int16))
        assert_same(r.read_tensor("z"), np.array(2.5))
        assert r.read_tensor("py").shape == () and float(r.read_tensor("py")) == 3.0


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_noncontiguous_and_big_endian(tmp_path, dtype):
    base = sample(dtype, (6, 8))
    path = tmp_path / "n.zt"
    views = {
        "T": base.T,
        "strided": base[::2, 1::3],
        "neg": base[::-1],
        "fortran": np.asfortranarray(base),
    }
    if base.dtype.byteorder not in "|" and base.dtype.kind != "V":
        be = base.dtype.newbyteorder(">")
        if be != base.dtype:
            views["big"] = base.astype(be)
    with za.Writer(path) as w:
        for n, v in views.items():
            w.add_tensor(n, v)
            w.add_tensor(n + "_z", v, compress=True)
    with za.Reader(path) as r:
        for n, v in views.items():
            want = np.ascontiguousarray(v).astype(base.dtype)
            assert_same(r.read_tensor(n), want)
            assert_same(r.read_tensor(n + "_z"), want)


def test_big_endian_is_stored_little_endian(tmp_path):
    path = tmp_path / "be.zt"
    with za.Writer(path) as w:
        w.add_tensor("x", np.array([1, 2], ">u4"))
    data = path.read_bytes()
    c = _manifest(data)["objects"]["x"]["components"]["data"]
    assert c["dtype"] == "u32"
    assert data[c["offset"] : c["offset"] + 8] == b"\x01\x00\x00\x00\x02\x00\x00\x00"


def test_list_and_array_like_inputs(tmp_path):
    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return np.arange(6, dtype=np.int8).reshape(2, 3)

    path = tmp_path / "l.zt"
    with za.Writer(path) as w:
        w.add_tensor("list", [[1.5, 2.5], [3.5, 4.5]])
        w.add_tensor("ints", [1, 2, 3])
        w.add_tensor("bools", [True, False])
        w.add_tensor("obj", ArrayLike())
        w.add_sparse_csr("csr", [1.0, 2.0], [0, 1], [0, 1, 2], (2, 2))
    with za.Reader(path) as r:
        assert_same(r.read_tensor("list"), np.array([[1.5, 2.5], [3.5, 4.5]]))
        assert_same(r.read_tensor("ints"), np.array([1, 2, 3]))
        assert_same(r.read_tensor("bools"), np.array([True, False]))
        assert_same(r.read_tensor("obj"), np.arange(6, dtype=np.int8).reshape(2, 3))
        np.testing.assert_array_equal(r.read_tensor("csr").toarray(), np.eye(2) * [1.0, 2.0])


def test_torch_inputs(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    tensors = {
        "bf16": torch.randn(5, 3).to(torch.bfloat16),
        "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16),
        "u32": torch.tensor([0, 1, 2**32 - 1], dtype=torch.uint32),
        "u64": torch.tensor([0, 1, 2**63 + 5], dtype=torch.uint64),
        "bool": torch.tensor([True, False, True]),
        "f8": torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn),
        "c64": torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64),
        "T": torch.arange(12.0).reshape(3, 4).t(),  # non-contiguous
        "neg": torch.arange(4.0).neg()._neg_view()
        if hasattr(torch.Tensor, "_neg_view")
        else torch.arange(4.0),
        "conj": torch.tensor([1 + 1j], dtype=torch.complex64).conj(),
        "scalar": torch.tensor(3.25),
        "grad": torch.ones(2, requires_grad=True),
    }
    path = tmp_path / "t.zt"
    with za.Writer(path) as w:
        for n, t in tensors.items():
            w.add_tensor(n, t)
    with za.Reader(path) as r:
        for n, t in tensors.items():
            got = r.read_tensor(n, to="torch")
            want = t.detach().resolve_conj().resolve_neg()
            assert got.dtype == want.dtype and got.shape == want.shape, n
            got_bytes = got.reshape(-1).view(torch.uint8)
            assert torch.equal(got_bytes, want.contiguous().reshape(-1).view(torch.uint8)), n
        assert r.read_tensor("u64")[2] == 2**63 + 5


# --------------------------------------------------------------------------- layout of bytes


def test_blobs_aligned_and_padding_zero(tmp_path):
    path = tmp_path / "p.zt"
    with za.Writer(path) as w:
        w.add_tensor("a", np.full(3, 0xFF, np.uint8))
        w.add_tensor("b", np.full(5, -1, np.int64), compress=True)
        w.add_tensor("c", np.full(1, 0xFF, np.uint8))
    data = path.read_bytes()
    comps = sorted(
        (c["offset"], c["length"])
        for o in _manifest(data)["objects"].values()
        for c in o["components"].values()
    )
    assert comps[0][0] == 64 and data[:8] == b"ZTEN1000" and data[-8:] == b"ZTEN1000"
    assert data[8:64] == bytes(56)
    for (off, length), (nxt, _) in zip(comps, comps[1:]):
        assert off % 64 == 0 and nxt % 64 == 0
        assert data[off + length : nxt] == bytes(nxt - off - length)
    mlen = int.from_bytes(data[-16:-8], "little")
    assert comps[-1][0] + comps[-1][1] == len(data) - 16 - mlen  # manifest follows directly


def test_buffer_reuse_after_add_does_not_change_the_file(tmp_path):
    path = tmp_path / "r.zt"
    buf = np.arange(100_000, dtype=np.float32)
    with za.Writer(path) as w:
        w.add_tensor("z", buf, compress=True, checksum="crc32c")
        buf[:] = -1  # reuse the buffer before the compressed blob is written
        w.add_tensor("raw", buf)
    with za.Reader(path) as r:
        assert_same(r.read_tensor("z", verify_checksum=True), np.arange(100_000, dtype=np.float32))
        assert_same(r.read_tensor("raw"), np.full(100_000, -1, np.float32))


def test_copy_inputs_false_compresses_the_callers_buffer_in_place(tmp_path):
    """save_file's mode: no defensive copy, so the compressed blob reflects the buffer as it
    is when the pool reads it (here: untouched), and the file round-trips."""
    arrays = {f"t{i}": np.arange(50_000, dtype=np.float32) * i for i in range(8)}
    with za.Writer(tmp_path / "n.zt", copy_inputs=False) as w:
        for name, a in arrays.items():
            w.add_tensor(name, a, compress=3)
    with za.Reader(tmp_path / "n.zt") as r:
        for name, a in arrays.items():
            assert_same(r.read_tensor(name), a)
            assert r.metadata(name).encoding == "zstd"


def test_attributes(tmp_path):
    path = tmp_path / "a.zt"
    obj_attrs = {"unit": "m", "scale": 0.5, "dims": ["x", "y"], "nested": {"k": [1, None]}}
    with za.Writer(path) as w:
        w.attributes["title"] = "hello"
        w.attributes["count"] = 3
        w.add_tensor("t", np.ones((2, 2)), attributes=obj_attrs)
    m = _manifest(path.read_bytes())
    assert m["objects"]["t"]["attributes"] == obj_attrs
    assert m["attributes"]["title"] == "hello"
    with za.Reader(path) as r:
        assert r.attributes == {"title": "hello", "count": 3}
        assert r.metadata("t").attributes == obj_attrs


def test_reserved_and_bad_global_attributes(tmp_path):
    with pytest.raises(ZTensorError):
        with za.Writer(tmp_path / "a.zt") as w:
            w.attributes["__ztensor_array_cbor__"] = "x"
    with pytest.raises(ZTensorError):
        with za.Writer(tmp_path / "b.zt") as w:
            w.attributes["bad"] = object()
    assert not (tmp_path / "a.zt").exists() and not (tmp_path / "b.zt").exists()
    assert os.listdir(tmp_path) == []


def test_many_tensors_written_in_add_order(tmp_path):
    path = tmp_path / "o.zt"
    names = [f"t{i}" for i in range(50)][::-1]
    with za.Writer(path) as w:
        for i, n in enumerate(names):
            w.add_tensor(n, np.full(i + 1, i, np.int32), compress=i % 2 == 0)
    m = _manifest(path.read_bytes())["objects"]
    offsets = [m[n]["components"]["data"]["offset"] for n in names]
    assert offsets == sorted(offsets)
    with za.Reader(path) as r:
        for i, n in enumerate(names):
            assert_same(r.read_tensor(n), np.full(i + 1, i, np.int32))


# --------------------------------------------------------------------------- invalid input


def test_directory_as_target_is_ztensor_error(tmp_path):
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(ZTensorError) as info:
        with za.Writer(target) as w:
            w.add_tensor("a", np.ones(2))
    assert str(target) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["adir"] and os.listdir(target) == []


@pytest.mark.parametrize(
    "values,indices,indptr,shape",
    [
        ([1.0], [5], [0, 1], (1, 3)),  # column out of range
        ([1.0, 2.0], [0, 1], [0, 2, 1], (2, 3)),  # indptr decreasing
        ([1.0, 2.0], [0, 1], [1, 1, 2], (2, 3)),  # indptr not starting at 0
        ([1.0, 2.0], [0, 1], [0, 1, 3], (2, 3)),  # indptr ends past nnz
        ([1.0, 2.0], [0], [0, 1, 1], (2, 3)),  # values / indices length
        ([1.0], [0], [0, 1], (2, 3)),  # indptr length
        ([1.0], [-1], [0, 1], (1, 3)),  # negative index
    ],
)
def test_invalid_csr_refused_at_write(tmp_path, values, indices, indptr, shape):
    path = tmp_path / "c.zt"
    with za.Writer(path) as w:
        with pytest.raises(ZTensorError) as info:
            w.add_sparse_csr("bad", values, indices, indptr, shape)
        assert isinstance(info.value, ValueError) and "'bad'" in str(info.value)
        w.add_tensor("ok", np.ones(1))
    with za.Reader(path) as r:
        assert r.tensor_names == ["ok"]


@pytest.mark.parametrize(
    "values,coords,shape",
    [
        ([1.0], [[5], [0]], (1, 3)),  # row out of range
        ([1.0], [[0], [3]], (1, 3)),  # col out of range
        ([1.0, 2.0], [[0, 0, 0], [1, 1, 1]], (4, 4)),  # ndim x nnz mismatch
        ([1.0], [[0], [0], [2]], (2, 2, 2)),  # axis 2 out of range
        ([1.0], [[-1], [0]], (2, 2)),
    ],
)
def test_invalid_coo_refused_at_write(tmp_path, values, coords, shape):
    with za.Writer(tmp_path / "c.zt") as w:
        with pytest.raises(ZTensorError) as info:
            w.add_sparse_coo("bad", values, coords, shape)
        assert isinstance(info.value, ValueError) and "'bad'" in str(info.value)


def test_raw_writes_stream_without_copies(tmp_path):
    """A contiguous tensor goes to disk without a copy and the file is never buffered."""
    import tracemalloc

    big = np.ones((4096, 4096), np.float32)  # 64 MiB
    path = tmp_path / "big.zt"
    tracemalloc.start()
    try:
        with za.Writer(path) as w:
            w.add_tensor("a", big)
            w.add_tensor("b", big, checksum="crc32c")
            w.add_tensor("c", big[:, :2048])  # non-contiguous: one copy of this tensor only
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < big.nbytes // 2 + (4 << 20), peak
    assert path.stat().st_size > 2 * big.nbytes + big.nbytes // 2


def test_object_attribute_names_must_be_text(zref, tmp_path):
    # 1.1.1 refuses the whole file when an object's attribute name is not text
    path = tmp_path / "a.zt"
    with za.Writer(path) as w:
        with pytest.raises(ZTensorError) as info:
            w.add_tensor("t", np.ones(2), attributes={1: "a"})
        assert "'t'" in str(info.value)
        w.add_tensor("u", np.ones(2), attributes={"nested": {1: 2}, "big": 2**70, "b": b"\x00"})
    with zref.Reader(str(path)) as r:
        assert r.tensor_names == ["u"]
    with za.Reader(path) as r:
        assert r.metadata("u").attributes == {"nested": {1: 2}, "big": 2**70, "b": b"\x00"}


def test_unencodable_attributes_fail_at_add_time(tmp_path):
    path = tmp_path / "a.zt"
    with za.Writer(path) as w:
        w.add_tensor("first", np.ones(2))
        with pytest.raises(ZTensorError) as info:
            w.add_tensor("t", np.ones(2), attributes={"scale": object()})
        assert "'t'" in str(info.value) and str(path) in str(info.value)
    with za.Reader(path) as r:  # the rest of the file is still written
        assert r.tensor_names == ["first"]


def test_unencodable_global_attributes_name_the_file(tmp_path):
    path = tmp_path / "g.zt"
    with pytest.raises(ZTensorError) as info:
        with za.Writer(path) as w:
            w.attributes["x"] = object()
            w.add_tensor("t", np.ones(2))
    assert str(path) in str(info.value)
    assert not path.exists()


def test_names_with_nul_are_refused(zref, tmp_path):
    # 1.1.1 (a C interface) would cut "a\x00b" to "a" and serve another tensor's values
    path = tmp_path / "n.zt"
    with za.Writer(path) as w:
        w.add_tensor("a", np.zeros(2))
        with pytest.raises(ZTensorError):
            w.add_tensor("a\x00b", np.ones(2))
        w.add_tensor("", np.ones(1))  # the empty name is fine for both
    with zref.Reader(str(path)) as r:
        assert sorted(r.tensor_names) == ["", "a"]
        assert np.array(r.read_tensor("")).tolist() == [1.0]


def test_names_with_lone_surrogates_are_refused(tmp_path):
    """Found by hypothesis: such a str cannot be written as CBOR text (UTF-8)."""
    path = tmp_path / "s.zt"
    with za.Writer(path) as w:
        with pytest.raises(ZTensorError, match="surrogates"):
            w.add_tensor("\ud800", np.zeros(1))
        w.add_tensor("ok \u00e9\U0001f600", np.zeros(1))
    with za.Reader(path) as r:
        assert r.tensor_names == ["ok \u00e9\U0001f600"]


# --------------------------------------------------------------------------- gathered writes

_GATHER_DTYPES = ("f32", "f64", "i8", "u16", "bf16", "bool")


@settings(max_examples=40, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from(_GATHER_DTYPES),
            st.lists(st.integers(0, 9), min_size=0, max_size=3),
            st.sampled_from(["plain", "strided", "big-endian", "list", "zstd"]),
        ),
        max_size=12,
    ),
    iovecs=st.sampled_from([1, 2, 3, 512]),
    gather_bytes=st.sampled_from([1, 100, 512 << 20]),
)
def test_gathered_writes_give_the_bytes_of_direct_writes(specs, iovecs, gather_bytes):
    """save_file (copy_inputs=False) gathers the caller's raw arrays into pwritev calls;
    the file must be byte for byte the one written tensor by tensor, whatever the flush
    thresholds, with copies, compressed blobs and padding interleaved."""
    import tempfile

    from ztensor_array import writer as zw

    arrays, compress = {}, {}
    for i, (dtype, shape, kind) in enumerate(specs):
        value = sample(dtype, tuple(shape) + (2,), seed=i)
        if kind == "strided":
            value = value[..., ::2]
        elif kind == "big-endian" and value.dtype.byteorder in "=<" and value.dtype.itemsize > 1:
            value = value.astype(value.dtype.newbyteorder(">"))
        elif kind == "list":
            value = value.tolist() if dtype not in ("bf16",) else value
        arrays[f"t{i}"] = value
        compress[f"t{i}"] = 3 if kind == "zstd" else 0
    with tempfile.TemporaryDirectory() as folder:
        direct, gathered = os.path.join(folder, "d.zt"), os.path.join(folder, "g.zt")
        with za.Writer(direct) as w:
            for name, value in arrays.items():
                w.add_tensor(name, value, compress=compress[name])
        old = zw._GATHER_IOVECS, zw._GATHER_BYTES
        zw._GATHER_IOVECS, zw._GATHER_BYTES = iovecs, gather_bytes
        try:
            with za.Writer(gathered, copy_inputs=False) as w:
                for name, value in arrays.items():
                    w.add_tensor(name, value, compress=compress[name])
        finally:
            zw._GATHER_IOVECS, zw._GATHER_BYTES = old
        with open(direct, "rb") as f1, open(gathered, "rb") as f2:
            assert f1.read() == f2.read()


def test_gathered_writes_hold_no_copies(tmp_path):
    """Only the caller's own arrays wait to be gathered: a copy made for a strided input is
    written and freed at once, so saving many of them never holds more than one."""
    import tracemalloc

    base = np.ones((1024, 2048), np.float32)  # 8 MiB, the caller's
    arrays = {f"s{i}": base[:, ::2] for i in range(8)}  # each needs a 4 MiB contiguous copy
    tracemalloc.start()
    try:
        za.save_file(arrays, tmp_path / "s.zt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * (4 << 20) + (1 << 20), peak
    with za.Reader(tmp_path / "s.zt") as r:
        for name in arrays:
            assert_same(r.read_tensor(name), base[:, ::2])


def test_a_write_past_the_file_size_limit_keeps_the_previous_file(previous):
    """RLIMIT_FSIZE makes the kernel cut a gathered pwritev short and then refuse the rest
    (EFBIG): the save fails with an error and the previous file stays as it was."""
    path, before, listing = previous
    script = textwrap.dedent(
        f"""
        import resource, signal, numpy as np, ztensor_array as za
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20))
        arrays = {{f"t{{i}}": np.full(1 << 18, i, np.float32) for i in range(8)}}  # 8 MiB
        try:
            za.save_file(arrays, {str(path)!r})
        except OSError as exc:
            print("refused", exc.errno)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["refused", str(__import__("errno").EFBIG)]
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == listing


@pytest.mark.slow
def test_a_gathered_tensor_over_2_gib_is_written_whole(tmp_path):
    """Linux writes at most 0x7ffff000 bytes per call, so a gathered tensor over 2 GiB is
    cut short and must be continued from the right byte of the right buffer."""
    big = np.empty(((5 << 29) // 8,), np.uint64)  # 2.5 GiB of distinct words
    big[:] = np.arange(big.size, dtype=np.uint64)
    tail = np.arange(1000, dtype=np.float32)
    path = tmp_path / "big.zt"
    za.save_file({"a_big": big, "b_tail": tail}, path)
    with za.Reader(path) as r:
        got = r.read_tensor("a_big")
        edge = 0x7FFFF000 // 8
        assert np.array_equal(got[edge - 1000 : edge + 1000], big[edge - 1000 : edge + 1000])
        assert np.array_equal(got, big)
        assert_same(r.read_tensor("b_tail"), tail)


def test_compressed_save_keeps_a_bounded_queue(tmp_path, monkeypatch):
    """Under copy_inputs=False more compressed blobs may queue than 2 per worker (the inputs
    are the caller's), but never more input bytes than the cap: slow level-19 encodes keep
    every blob queued, so an unbounded queue would hold them all."""
    from ztensor_array import writer as zw

    monkeypatch.setattr(zw, "_QUEUE_BYTES", 3 << 20)
    monkeypatch.setattr(zw, "INLINE_BYTES", 0)  # every tensor goes through the pool
    rng = np.random.default_rng(0)
    arrays = {f"t{i:02d}": rng.integers(0, 16, 1 << 18, dtype=np.uint8) for i in range(24)}
    seen = []
    with za.Writer(tmp_path / "q.zt", copy_inputs=False, workers=2) as w:
        for name, a in arrays.items():
            w.add_tensor(name, a, compress=19)
            seen.append((len(w._queue), sum(item.nbytes for item in w._queue)))
    assert max(n for n, _ in seen) > 4  # it did queue beyond 2 per worker
    assert all(n <= 4 or queued <= 3 << 20 for n, queued in seen), seen
    with za.Reader(tmp_path / "q.zt") as r:
        for name, a in arrays.items():
            assert_same(r.read_tensor(name), a)


# ------------------------------------------------------------------- objects without components


def test_an_object_without_components_is_kept(tmp_path, zref):
    """A chunked object with no chunk written (SPEC §4.3 allows it) is written, lists in the
    manifest and reads as its fill value everywhere; the reference opens the file."""
    p = tmp_path / "empty.zt"
    grid = {"chunk_shape": [2, 3], "dtype": "f32", "fill_value": 1.5}
    with za.Writer(p) as w:
        w.add_object("c", "chunked", (4, 6), {}, attributes={"chunk_grid": grid})
        w.add_tensor("d", np.arange(3, dtype=np.int16))
    with za.Reader(p) as r:
        assert r.tensor_names == ["c", "d"]
        assert r.metadata("c").object.components == {}
        assert_same(r.read_tensor("c"), np.full((4, 6), 1.5, np.float32))
    with open(p, "rb") as f:  # an independent look at the manifest: both objects are there
        data = f.read()
    size = int.from_bytes(data[-16:-8], "little")
    assert set(cbor2.loads(data[-16 - size : -16])["objects"]) == {"c", "d"}
    ref = zref.Reader(str(p))  # kept: its arrays are views of its map
    assert_same(ref.read_tensor("d"), np.arange(3, dtype=np.int16))


@pytest.mark.parametrize(
    "fmt, attributes, message",
    [
        ("chunked", None, "chunk_grid"),
        ("chunked", {"chunk_grid": {"chunk_shape": [0, 3], "dtype": "f32"}}, "chunk_shape"),
        ("dense", None, "data"),
    ],
)
def test_an_object_without_components_is_checked_first(tmp_path, fmt, attributes, message):
    """Kept, an invalid one would make every reader refuse the whole file: it is refused at
    add_object, naming the object, and the file keeps its previous state."""
    p = tmp_path / "bad.zt"
    za.save_file({"x": np.ones(2)}, p)
    with pytest.raises(ZTensorError, match=message) as info, za.Writer(p, "a") as w:
        w.add_object("c", fmt, (4, 6), {}, attributes=attributes)
    assert info.value.obj == "c" and info.value.path == str(p)
    with za.Reader(p) as r:
        assert r.tensor_names == ["x"]
