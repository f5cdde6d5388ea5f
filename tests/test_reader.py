"""Reader: zero-copy safety, checksum verification, sparse structure, the 1.1.1 surface."""

from __future__ import annotations

import gc
import hashlib
import os
from functools import partial

import cbor2
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ALL_DTYPES, CORE_DTYPES, LONG_NAME, assert_same, build_file, component, sample

import ztensor_array as za
from ztensor_array.convert import detect_format, open_source
from ztensor_array.errors import (
    ChecksumError,
    DecodeError,
    FormatError,
    MissingFileError,
    TensorNotFoundError,
    ZTensorError,
)


def _manifest(data: bytes) -> dict:
    n = int.from_bytes(data[-16:-8], "little")
    return cbor2.loads(data[-16 - n : -16])


@pytest.fixture
def mixed(tmp_path):
    """A file with raw, zstd and digest-carrying tensors of several dtypes."""
    path = tmp_path / "m.zt"
    arrays = {
        "raw_f32": sample("f32", (16, 8)),
        "raw_i64": sample("i64", (5,)),
        "z_f64": sample("f64", (40, 3)),
        "ck_raw": sample("u16", (64,)),
        "ck_z": sample("bf16", (33, 2)),
    }
    with za.Writer(path) as w:
        w.add_tensor("raw_f32", arrays["raw_f32"])
        w.add_tensor("raw_i64", arrays["raw_i64"])
        w.add_tensor("z_f64", arrays["z_f64"], compress=True)
        w.add_tensor("ck_raw", arrays["ck_raw"], checksum="crc32c")
        w.add_tensor("ck_z", arrays["ck_z"], compress=9, checksum="sha256")
    return path, arrays


# --------------------------------------------------------------------------- zero-copy safety


def test_raw_reads_are_zero_copy_and_read_only(mixed):
    path, arrays = mixed
    with za.Reader(path) as r:
        a = r.read_tensor("raw_f32")
        b = r.read_tensor("raw_f32")
        assert not a.flags.writeable
        assert np.shares_memory(a, b)  # both views of the one mapping
        with pytest.raises(ValueError):
            a[0, 0] = 1.0
        assert_same(a, arrays["raw_f32"])
        z = r.read_tensor("z_f64")  # decoded into a fresh, owned array
        assert z.flags.writeable and z.flags.c_contiguous
        z[0, 0] = 99  # must not touch anything shared
        assert_same(r.read_tensor("z_f64"), arrays["z_f64"])
        c = r.read_tensor("raw_f32", copy=True)
        assert c.flags.writeable and not np.shares_memory(c, a)


def test_views_survive_close(mixed):
    path, arrays = mixed
    r = za.Reader(path)
    views = {n: r.read_tensor(n) for n in r.tensor_names}
    r.close()
    assert r.closed
    for n, v in views.items():
        assert_same(v, arrays[n])
        assert float(np.asarray(v, dtype=np.float64).sum()) == pytest.approx(
            float(arrays[n].astype(np.float64).sum())
        )
    with pytest.raises(ZTensorError, match="closed"):
        r.read_tensor("raw_f32")
    r.close()  # idempotent


def test_views_survive_reader_garbage_collection(mixed):
    path, arrays = mixed
    with za.Reader(path) as r:
        view = r.read_tensor("raw_f32")
        sl = view[3:7, ::2]
    del r
    gc.collect()
    assert_same(view, arrays["raw_f32"])
    assert_same(sl, arrays["raw_f32"][3:7, ::2])
    r2 = za.Reader(path)
    v2 = r2.read_tensor("raw_i64")
    del r2  # no explicit close at all
    gc.collect()
    assert_same(v2, arrays["raw_i64"])


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(), (0, 3), (4, 5)])
def test_plain_fast_path_equals_the_general_path(tmp_path, dtype, shape):
    """A plain raw dense tensor is served from the validation summary; it must be exactly
    what the component path (read_component + layout) returns: same bytes, dtype, shape,
    read-only and on the one shared mapping."""
    path = tmp_path / "p.zt"
    value = sample(dtype, shape)
    za.save_file({"t": value, "z": value}, path)
    with za.Reader(path) as r:
        fast = r.read_tensor("t")
        general = r.read_component("t", "data").view(fast.dtype).reshape(fast.shape)
        assert_same(fast, value)
        assert_same(fast, general)
        assert not fast.flags.writeable
        if value.size:
            assert np.shares_memory(fast, general)


@pytest.mark.parametrize("name", ["missing", 5, None, ["raw_f32"], ("raw_f32",)])
def test_reading_a_name_that_is_not_there(mixed, name):
    """Any missing or non-text name is a TensorNotFoundError naming it, on every read path."""
    path, _arrays = mixed
    with za.Reader(path) as r:
        for read in (r.read_tensor, lambda n: r.read_tensor(n, to="torch"), r.metadata):
            with pytest.raises(TensorNotFoundError) as info:
                read(name)
            assert repr(name) in str(info.value) and str(path) in str(info.value)


def _mapped(path) -> bool:
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(os.fspath(path)) for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_close_unmaps_unless_views_are_alive(mixed):
    path, arrays = mixed
    r = za.Reader(path)
    view = r.read_tensor("raw_f32")
    r.close()
    assert _mapped(path)  # the view keeps its mapping
    assert_same(view, arrays["raw_f32"])
    del view
    gc.collect()
    assert not _mapped(path)
    r = za.Reader(path)
    r.read_tensor("raw_i64").sum()  # maps the file, keeps no view
    assert _mapped(path)
    r.close()
    assert not _mapped(path)


def test_torch_views_are_private_copies_on_write(mixed):
    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    path, arrays = mixed
    before = path.read_bytes()
    with za.Reader(path) as r:
        t = r.read_tensor("raw_f32", to="torch")
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
        t += 1  # torch has no read-only tensors: writing must not reach the file or views
        np.testing.assert_array_equal(r.read_tensor("raw_f32"), arrays["raw_f32"])
        tb = r.read_tensor("ck_z", to="torch", verify_checksum=True)
        assert tb.dtype == torch.bfloat16
        assert_same(tb.view(torch.int16).numpy().view(arrays["ck_z"].dtype), arrays["ck_z"])
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- checksums


def _flip(path, name, role="data", where=0.5):
    data = bytearray(path.read_bytes())
    c = _manifest(bytes(data))["objects"][name]["components"][role]
    pos = c["offset"] + int(c["length"] * where)
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_detects_flip_in_raw_zero_copy_tensor(mixed):
    path, arrays = mixed
    _flip(path, "ck_raw")
    with za.Reader(path) as r:
        unchecked = r.read_tensor("ck_raw")  # without verification: a different value
        assert unchecked.shape == arrays["ck_raw"].shape
        assert not np.array_equal(unchecked, arrays["ck_raw"])
        with pytest.raises(ChecksumError) as info:
            r.read_tensor("ck_raw", verify_checksum=True)
        assert "'ck_raw'" in str(info.value) and "'data'" in str(info.value)
        assert str(path) in str(info.value)
    with za.Reader(path, verify=True) as r:  # verify= sets the default
        with pytest.raises(ChecksumError):
            r.read_tensor("ck_raw")
        with pytest.raises(ChecksumError):
            r.read_tensor("ck_raw", copy=True)
        assert_same(r.read_tensor("raw_f32"), arrays["raw_f32"])  # no digest: nothing to check
        r.read_tensor("ck_raw", verify_checksum=False)


def test_verify_detects_flip_in_zstd_tensor(mixed):
    path, _ = mixed
    _flip(path, "ck_z", where=0.9)
    with za.Reader(path) as r:
        with pytest.raises(ChecksumError):
            r.read_tensor("ck_z", verify_checksum=True)
        with pytest.raises(ChecksumError):
            r.read_tensors(["ck_raw", "ck_z"], verify_checksum=True)
        try:  # unverified: a decode error or some value of the right shape
            v = r.read_tensor("ck_z")
            assert v.shape == (33, 2)
        except DecodeError:
            pass


def test_unknown_digest_algorithm_is_ignored(tmp_path):
    p = tmp_path / "a.zt"
    obj = {
        "shape": [2],
        "format": "dense",
        "components": {"data": component("u8", 64, 2, digest="blake3:00ff")},
    }
    build_file(p, {"t": obj}, {64: b"\x01\x02"})
    with za.Reader(p) as r:
        assert r.read_tensor("t", verify_checksum=True).tolist() == [1, 2]


def test_lowercase_crc32c_digest_accepted(tmp_path):
    import google_crc32c

    p = tmp_path / "a.zt"
    blob = b"\x01\x02\x03\x04"
    digest = f"crc32c:0x{google_crc32c.value(blob):08x}"
    obj = {
        "shape": [4],
        "format": "dense",
        "components": {"data": component("u8", 64, 4, digest=digest)},
    }
    build_file(p, {"t": obj}, {64: blob})
    with za.Reader(p) as r:
        assert r.read_tensor("t", verify_checksum=True).tolist() == [1, 2, 3, 4]
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    obj["components"]["data"]["digest"] = wrong
    build_file(p, {"t": obj}, {64: blob})
    with za.Reader(p) as r, pytest.raises(ChecksumError):
        r.read_tensor("t", verify_checksum=True)


# --------------------------------------------------------------------------- the 1.1.1 surface


def test_surface_matches_reference(zref, tmp_path):
    path = tmp_path / "s.zt"
    with za.Writer(path) as w:
        for i, d in enumerate(CORE_DTYPES):
            w.add_tensor(
                f"t{i:02d}_{d}",
                sample(d, (2, i + 1)),
                compress=bool(i % 2),
                checksum=(None, "crc32c", "sha256")[i % 3],
            )
        w.add_tensor("Zed", np.ones(1, np.float32))
        m = sp.random(4, 5, density=0.5, format="csr", random_state=0, dtype=np.float32)
        w.add_sparse_csr("sparse", m.data, m.indices, m.indptr, m.shape)
    with zref.Reader(str(path)) as ref:
        ref_names = list(ref.tensor_names)
        ref_meta = {}
        for n in ref_names:
            md = ref.metadata(n)
            ref_meta[n] = (
                tuple(md.shape),
                np.dtype(md.dtype),
                md.dtype_str,
                md.layout,
                md.encoding,
                md.offset,
                md.size,
                md.endianness,
                md.checksum,
            )
        ref_iter = [md.name for md in ref]
        ref_len = len(ref)
        ref_first = ref[0].name
    with za.Reader(path) as r:
        assert r.tensor_names == ref_names == sorted(ref_names)
        assert [md.name for md in r] == ref_iter == ref_names
        assert len(r) == ref_len
        assert r[0].name == ref_first and r[-1].name == ref_names[-1]
        assert r.get_tensor_names() == ref_names
        assert [md.name for md in r.list_tensors()] == ref_names
        assert [md.name for md in r.tensors] == ref_names
        for n in ref_names:
            for md in (r.metadata(n), r.get_metadata(n)):
                got = (
                    tuple(md.shape),
                    md.dtype,
                    md.dtype_str,
                    md.layout,
                    md.encoding,
                    md.offset,
                    md.size,
                    md.endianness,
                    md.checksum,
                )
                if md.layout == "dense":
                    assert got == ref_meta[n]
                else:  # sparse: same name/shape/dtype/layout (sizes are per-component)
                    assert got[:4] == ref_meta[n][:4]
        assert "Zed" in r and "zed" not in r and 3 not in r
        assert_same(r["Zed"], np.ones(1, np.float32))
        with pytest.raises(TensorNotFoundError) as info:
            r["missing"]
        assert isinstance(info.value, KeyError) and "'missing'" in str(info.value)
        with pytest.raises(IndexError):
            r[len(ref_names)]
        with pytest.raises(TypeError):
            r[1.5]
        dense_names = [n for n in ref_names if n.startswith("t")][:6]
        got = r.read_tensors(dense_names)
        for n, v in zip(dense_names, got):
            assert_same(v, r.read_tensor(n))
        with pytest.raises(TensorNotFoundError):
            r.read_tensors(["Zed", "nope"])
        with pytest.raises(ValueError):
            r.read_tensor("Zed", to="jax")
        assert isinstance(r.read_tensor("sparse"), sp.csr_matrix)
        assert {LONG_NAME[d] for d in CORE_DTYPES} <= {md.dtype_str for md in r}


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")
def test_to_torch_for_every_core_dtype_and_sparse(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    from test_dtypes import TORCH_OF

    path = tmp_path / "t.zt"
    arrays = {d: sample(d, (3, 4)) for d in CORE_DTYPES}
    with za.Writer(path) as w:
        for d, a in arrays.items():
            w.add_tensor(d, a, compress=d.startswith("u"))
        w.add_sparse_csr("csr", np.array([1.0, 2.0]), np.array([1, 0]), np.array([0, 1, 2]), (2, 2))
        w.add_sparse_coo("coo", np.array([3.0]), np.array([[1], [0]]), (2, 2))
    with za.Reader(path) as r:
        for d, a in arrays.items():
            t = r.read_tensor(d, to="torch")
            assert t.dtype is TORCH_OF[d] and tuple(t.shape) == a.shape
            assert t.contiguous().view(torch.uint8).numpy().tobytes() == a.tobytes()
        csr = r.read_tensor("csr", to="torch")
        assert csr.layout == torch.sparse_csr
        assert torch.equal(csr.to_dense(), torch.tensor([[0, 1.0], [2.0, 0]], dtype=torch.float64))
        coo = r.read_tensor("coo", to="torch")
        assert coo.layout == torch.sparse_coo
        assert torch.equal(coo.to_dense(), torch.tensor([[0, 0], [3.0, 0]], dtype=torch.float64))


def test_missing_file_and_not_a_file(tmp_path):
    with pytest.raises(MissingFileError) as info:
        za.Reader(tmp_path / "nope.zt")
    assert isinstance(info.value, FileNotFoundError) and "nope.zt" in str(info.value)
    with pytest.raises(ZTensorError):
        za.Reader(tmp_path)  # a folder


def test_parallel_read_tensors_equal_serial(mixed):
    path, arrays = mixed
    with za.Reader(path) as r:
        names = r.tensor_names * 5
        par = r.read_tensors(names, workers=4, copy=True)
        ser = r.read_tensors(names, workers=1)
        for n, a, b in zip(names, par, ser):
            assert_same(a, arrays[n])
            assert_same(b, arrays[n])
        d = r.to_dict()
        assert set(d) == set(arrays) and all(v.flags.writeable for v in d.values())


# --------------------------------------------------------------------------- sparse


def _sparse_file(path, fmt, shape, comps: dict[str, np.ndarray], encodings=None):
    """Hand-build one sparse object from raw component arrays."""
    from conftest import NUMPY_OF

    objects_comps, blobs, pos = {}, {}, 64
    for role, arr in comps.items():
        dtype = next(k for k, v in NUMPY_OF.items() if v == arr.dtype)
        data = arr.tobytes()
        extra = {}
        if encodings and role in encodings:
            import zstandard

            c = zstandard.ZstdCompressor(level=3).compressobj()
            data = c.compress(data) + c.flush()
            extra["encoding"] = "zstd"
        objects_comps[role] = component(dtype, pos, len(data), **extra)
        blobs[pos] = data
        pos += 64 * (len(data) // 64 + 1)
    obj = {"shape": list(shape), "format": fmt, "components": objects_comps}
    build_file(path, {"s": obj}, blobs)


def test_nd_coo_roundtrip_soa_layout(tmp_path):
    shape = (3, 4, 5, 2)
    rng = np.random.default_rng(0)
    flat = rng.choice(np.prod(shape), 17, replace=False)
    coords = np.stack(np.unravel_index(flat, shape))  # (ndim, nnz)
    values = rng.standard_normal(17).astype(np.float32)
    p = tmp_path / "coo.zt"
    with za.Writer(p) as w:
        w.add_sparse_coo("s", values, coords, shape)
        w.add_sparse_coo("flat", values, coords.reshape(-1), shape, compress=True)
        w.add_sparse("from_scipy", sp.coo_array((values, tuple(coords)), shape=shape))
    data = p.read_bytes()
    c = _manifest(data)["objects"]["s"]["components"]["coords"]
    assert c["dtype"] == "u64" and c["length"] == 4 * 17 * 8
    stored = np.frombuffer(data[c["offset"] : c["offset"] + c["length"]], "<u8")
    np.testing.assert_array_equal(stored, coords.reshape(-1))  # all dim-0 first, then dim-1...
    dense = np.zeros(shape, np.float32)
    dense[tuple(coords)] = values
    with za.Reader(p) as r:
        for n in ("s", "flat", "from_scipy"):
            got = r.read_tensor(n)
            assert got.shape == shape and got.dtype == np.float32
            np.testing.assert_array_equal(got.toarray(), dense)


@pytest.mark.parametrize("idx", ["<i4", "<u4", "<i8", "<i2", "<u1"])
def test_any_integer_index_dtype_is_read(tmp_path, idx):
    m = sp.random(6, 7, density=0.4, format="csr", random_state=2, dtype=np.float64)
    p = tmp_path / "csr.zt"
    _sparse_file(
        p,
        "sparse_csr",
        m.shape,
        {"values": m.data, "indices": m.indices.astype(idx), "indptr": m.indptr.astype(idx)},
    )
    with za.Reader(p) as r:
        got = r.read_tensor("s")
        assert (got != m).nnz == 0 and got.shape == m.shape
    coo = m.tocoo()
    p2 = tmp_path / "coo.zt"
    coords = np.concatenate([coo.row, coo.col]).astype(idx)
    _sparse_file(p2, "sparse_coo", m.shape, {"values": coo.data, "coords": coords}, {"coords"})
    with za.Reader(p2) as r:
        np.testing.assert_array_equal(r.read_tensor("s").toarray(), m.toarray())


def _csr_parts():
    return {
        "values": np.array([1.0, 2.0, 3.0], "<f4"),
        "indices": np.array([0, 2, 1], "<u8"),
        "indptr": np.array([0, 1, 3, 3], "<u8"),
    }


@pytest.mark.parametrize(
    "change,role",
    [
        ({"indptr": np.array([0, 2, 1, 3], "<u8")}, "indptr"),  # decreasing
        ({"indptr": np.array([1, 1, 3, 3], "<u8")}, "indptr"),  # does not start at 0
        ({"indptr": np.array([0, 1, 3, 4], "<u8")}, None),  # ends past nnz
        ({"indices": np.array([0, 3, 1], "<u8")}, "indices"),  # column 3 of 3
        ({"indices": np.array([0, 1, -1], "<i8")}, "indices"),  # negative
        ({"indices": np.array([0, 1, 1 << 63], "<u8")}, None),  # beyond int64
    ],
)
def test_invalid_csr_structure(tmp_path, change, role):
    parts = _csr_parts()
    parts.update(change)
    p = tmp_path / "bad.zt"
    _sparse_file(p, "sparse_csr", (3, 3), parts)
    with za.Reader(p) as r, pytest.raises(FormatError) as info:
        r.read_tensor("s")
    assert "'s'" in str(info.value) and str(p) in str(info.value)
    if role:
        assert info.value.component == role


def test_invalid_csr_indptr_length_in_zstd(tmp_path):
    # compressed indptr: the manifest cannot see the length, the decode must
    parts = _csr_parts()
    parts["indptr"] = np.array([0, 1, 3], "<u8")
    p = tmp_path / "bad.zt"
    _sparse_file(p, "sparse_csr", (3, 3), parts, {"indptr"})
    with pytest.raises(FormatError):
        with za.Reader(p) as r:
            r.read_tensor("s")


@pytest.mark.parametrize(
    "coords",
    [
        np.array([0, 1, 2, 0, 1], "<u8"),  # 5 entries for ndim 2 x nnz 3
        np.array([0, 1, 3, 0, 1, 2], "<u8"),  # row 3 of 3
        np.array([0, 1, 2, 0, 1, 4], "<u8"),  # col 4 of 4
        np.array([0, -1, 2, 0, 1, 2], "<i8"),
    ],
)
def test_invalid_coo_structure(tmp_path, coords):
    p = tmp_path / "bad.zt"
    parts = {"values": np.array([1, 2, 3], "<i2"), "coords": coords}
    for enc in (None, {"coords"}):  # raw is caught at open (length), zstd at read
        _sparse_file(p, "sparse_coo", (3, 4), parts, enc)
        with pytest.raises(FormatError) as info:
            with za.Reader(p) as r:
                r.read_tensor("s")
        assert "'s'" in str(info.value)


def test_torch_views_survive_close_and_gc(mixed):
    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    path, arrays = mixed
    r = za.Reader(path)
    t = r.read_tensor("raw_f32", to="torch")
    r.close()
    del r
    gc.collect()
    assert torch.equal(t, torch.from_numpy(arrays["raw_f32"]))


def test_read_after_replace_and_durable_writer(tmp_path):
    path = tmp_path / "d.zt"
    with za.Writer(path, durable=True) as w:
        w.add_tensor("a", np.arange(3.0), checksum="crc32c")
    with za.Reader(path, verify=True) as r:
        assert_same(r.read_tensor("a"), np.arange(3.0))


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.zt"
    os.mkfifo(fifo)  # opening a FIFO for reading would wait forever for a writer
    with pytest.raises(ZTensorError, match="regular file"):
        za.Reader(fifo)
    with pytest.raises(ZTensorError):
        za.Reader("/dev/null")


@pytest.mark.parametrize(
    "open_it",
    [
        za.Reader,
        za.repair,
        detect_format,
        *(partial(open_source, fmt=fmt) for fmt in ("safetensors", "pickle", "gguf")),
    ],
    ids=["reader", "repair", "detect", "safetensors", "pickle", "gguf"],
)
def test_every_input_refuses_special_files_without_blocking(tmp_path, open_it):
    """The reader, repair and the converters open their inputs the same way: a FIFO is
    refused at once (a plain open would wait forever for a writer), and so is a folder."""
    import signal

    fifo = tmp_path / "pipe.bin"
    os.mkfifo(fifo)

    def hung(*_):
        raise TimeoutError("opening the FIFO blocked")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(ZTensorError, match="regular file"):
            open_it(str(fifo))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    with pytest.raises(FileNotFoundError):  # MissingFileError, where the reader opens it
        open_it(str(tmp_path / "missing.bin"))


def test_compressed_pages_are_dropped_after_decoding(tmp_path):
    """A decoded component's stored bytes leave the resident set (they are read once), as
    the kernel counts it for the reader's map of the file (/proc/self/smaps)."""
    p = tmp_path / "z.zt"
    noise = np.random.default_rng(0).standard_normal(4 << 20)  # 32 MiB, barely compressible
    with za.Writer(p) as w:
        w.add_tensor("z", noise, compress=1)
        w.add_tensor("r", np.arange(10.0))
    with za.Reader(p) as r:
        r.read_tensor("r")  # maps the file
        assert _mapped_rss_kib(p) < 1024
        np.testing.assert_array_equal(r.read_tensor("z"), noise)
        assert _mapped_rss_kib(p) < 1024  # not the ~32 MiB of the frame


def _mapped_rss_kib(path) -> int:
    """Resident KiB of this process's maps of ``path``."""
    total, ours = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's header
                ours = len(head) >= 6 and head[5] == str(path)
            elif ours and head[0] == "Rss:":
                total += int(head[1])
    return total
