"""Files cross both ways between ztensor_array and the reference ztensor==1.1.1, and the same
tensors give the same bytes.

Reference arrays are zero-copy views that die with its Reader (and it segfaults if they are
touched after close), so every value taken from it is copied inside its ``with`` block.
"""

from __future__ import annotations

import cbor2
import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import CORE_DTYPES, LONG_NAME, NUMPY_OF, assert_same, sample

import ztensor_array as za


def _ref_read(zref, path, names=None, verify=False) -> dict:
    out = {}
    with zref.Reader(str(path)) as r:
        for n in r.tensor_names if names is None else names:
            v = r.read_tensor(n, verify_checksum=verify)
            out[n] = v.copy() if sp.issparse(v) else np.array(v, copy=True)
    return out


def _manifest(path) -> dict:
    data = open(path, "rb").read()
    n = int.from_bytes(data[-16:-8], "little")
    return cbor2.loads(data[-16 - n : -16])


def _csr(seed=0, shape=(9, 13), dtype=np.float32):
    return sp.random(*shape, density=0.25, format="csr", random_state=seed, dtype=dtype)


# --------------------------------------------------------------------------- from the reference


@pytest.fixture(scope="module")
def ref_file(zref, tmp_path_factory):
    """One file written by the reference holding every case it can express."""
    path = tmp_path_factory.mktemp("ref") / "ref.zt"
    arrays = {f"dt_{d}": sample(d, (4, 7), seed=i) for i, d in enumerate(CORE_DTYPES)}
    arrays["empty_0x10"] = np.zeros((0, 10), np.float32)
    arrays["seven_d"] = sample("f32", (2, 1, 3, 2, 1, 2, 2), seed=7)
    arrays["scalar"] = np.array(-7.25, np.float64)
    arrays["ünïcødé/名前/🙂"] = sample("i16", (5,), seed=8)
    arrays["n" * 1000] = sample("u8", (3, 3), seed=9)
    levels = {f"zstd_{lv}": (sample("f32", (50, 40), seed=lv), lv) for lv in (1, 3, 19)}
    levels["zstd_true"] = (sample("bf16", (30, 3), seed=30), True)
    levels["zstd_bool"] = (sample("bool", (100,), seed=31), 3)
    csr = _csr(1)
    coo = _csr(2, (6, 11), np.float64).tocoo()
    with zref.Writer(str(path)) as w:
        for name, arr in arrays.items():
            w.add_tensor(name, arr)
        for name, (arr, level) in levels.items():
            w.add_tensor(name, arr, compress=level)
        w.add_sparse_csr("csr", csr.data, csr.indices, csr.indptr, csr.shape)
        w.add_sparse_coo("coo", coo.data, np.stack([coo.row, coo.col]), coo.shape)
        w.add_sparse_coo("coo_flat", coo.data, np.concatenate([coo.row, coo.col]), coo.shape)
    expected = dict(arrays)
    expected.update({k: v[0] for k, v in levels.items()})
    return path, expected, csr, coo


def test_reference_dense_reads_identically(ref_file):
    path, expected, _, _ = ref_file
    with za.Reader(path) as r:
        assert set(expected) | {"csr", "coo", "coo_flat"} == set(r.tensor_names)
        for name, want in expected.items():
            got = r.read_tensor(name)
            if name == "scalar":  # the reference stores a 0-d value as shape [1]
                assert got.shape == (1,)
                got = got.reshape(())
            assert_same(got, want)


def test_reference_dtypes_and_metadata(zref, ref_file):
    path, expected, _, _ = ref_file
    with zref.Reader(str(path)) as ref:
        theirs = {n: ref.metadata(n) for n in ref.tensor_names}
        meta = {
            n: (m.shape, m.dtype_str, m.layout, m.encoding, m.offset, m.size, m.checksum)
            for n, m in theirs.items()
            if m.layout == "dense"
        }
        ref_dtypes = {n: np.dtype(m.dtype) for n, m in theirs.items() if m.layout == "dense"}
    with za.Reader(path) as r:
        for d in CORE_DTYPES:
            assert r.read_tensor(f"dt_{d}").dtype == NUMPY_OF[d]
            assert r.metadata(f"dt_{d}").dtype_str == LONG_NAME[d]
        for n, (shape, dtype_str, layout, enc, off, size, ck) in meta.items():
            m = r.metadata(n)
            assert (tuple(m.shape), m.dtype_str, m.layout, m.encoding) == (
                tuple(shape),
                dtype_str,
                layout,
                enc,
            )
            assert (m.offset, m.size, m.checksum) == (off, size, ck)
            assert m.dtype == ref_dtypes[n]


def test_reference_sparse_reads_as_scipy(ref_file):
    path, _, csr, coo = ref_file
    with za.Reader(path) as r:
        got_csr = r.read_tensor("csr")
        assert sp.issparse(got_csr) and got_csr.format == "csr"
        assert got_csr.shape == csr.shape and got_csr.dtype == csr.dtype
        assert (got_csr != csr).nnz == 0
        np.testing.assert_array_equal(got_csr.indptr, csr.indptr)
        np.testing.assert_array_equal(got_csr.indices, csr.indices)
        for name in ("coo", "coo_flat"):
            got = r.read_tensor(name)
            assert sp.issparse(got) and got.format == "coo"
            assert got.shape == coo.shape and got.dtype == coo.dtype
            np.testing.assert_array_equal(got.toarray(), coo.toarray())
            np.testing.assert_array_equal(got.row, coo.row)
            np.testing.assert_array_equal(got.col, coo.col)


def test_reference_file_passes_our_verification(ref_file):
    path, _, _, _ = ref_file
    with za.Reader(path, verify=True) as r:
        for n in r.tensor_names:  # no digests: verification has nothing to refuse
            r.read_tensor(n)


def test_reference_torch_input(zref, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    t = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4) / 3
    with zref.Writer(str(tmp_path / "t.zt")) as w:
        w.add_tensor("t", t)
    with za.Reader(tmp_path / "t.zt") as r:
        got = r.read_tensor("t", to="torch")
        assert got.dtype == torch.bfloat16 and torch.equal(got, t)


# --------------------------------------------------------------------------- to the reference


@pytest.mark.parametrize("compress", [False, True, 1, 19])
@pytest.mark.parametrize("checksum", [None, "crc32c", "sha256"])
def test_our_files_read_identically_in_reference(zref, tmp_path, compress, checksum):
    path = tmp_path / "ours.zt"
    arrays = {f"dt_{d}": sample(d, (6, 5), seed=i) for i, d in enumerate(CORE_DTYPES)}
    arrays["empty"] = np.zeros((0, 10), np.float32)
    arrays["seven_d"] = sample("f64", (1, 2, 1, 2, 3, 1, 2))
    arrays["ünïcødé"] = sample("u16", (4,))
    csr = _csr(3)
    coo = _csr(4, (5, 8), np.float64).tocoo()
    with za.Writer(path) as w:
        w.attributes.update({"author": "someone", "note": "ünïcødé text", "empty": ""})
        for name, arr in arrays.items():
            w.add_tensor(name, arr, compress=compress, checksum=checksum)
        w.add_sparse_csr(
            "csr",
            csr.data,
            csr.indices,
            csr.indptr,
            csr.shape,
            compress=compress,
            checksum=checksum,
        )
        w.add_sparse_coo(
            "coo",
            coo.data,
            np.stack([coo.row, coo.col]),
            coo.shape,
            compress=compress,
            checksum=checksum,
        )
    got = _ref_read(zref, path, verify=True)
    assert set(got) == set(arrays) | {"csr", "coo"}
    for name, want in arrays.items():
        assert_same(got[name], want)
    assert got["csr"].format == "csr" and (got["csr"] != csr).nnz == 0
    assert got["csr"].dtype == csr.dtype
    np.testing.assert_array_equal(got["coo"].toarray(), coo.toarray())
    # the attributes are there, all text (what 1.1.1 requires at the root)
    attrs = _manifest(path)["attributes"]
    assert attrs == {"author": "someone", "note": "ünïcødé text", "empty": ""}
    if checksum:
        digests = [
            c["digest"]
            for o in _manifest(path)["objects"].values()
            for c in o["components"].values()
        ]
        assert all(d.startswith(checksum + ":") for d in digests)


def test_non_text_global_attributes_keep_file_readable_by_reference(zref, tmp_path):
    path = tmp_path / "a.zt"
    with za.Writer(path) as w:
        w.attributes.update({"text": "t", "n": 3, "nested": {"a": [1, 2.5, None]}, "b": b"\x00"})
        w.add_tensor("x", np.arange(3, dtype=np.int32))
    assert_same(_ref_read(zref, path)["x"], np.arange(3, dtype=np.int32))
    assert all(isinstance(v, str) for v in _manifest(path)["attributes"].values())
    with za.Reader(path) as r:
        assert r.attributes == {"text": "t", "n": 3, "nested": {"a": [1, 2.5, None]}, "b": b"\x00"}


def test_our_0d_tensor_reads_in_reference(zref, tmp_path):
    path = tmp_path / "s.zt"
    with za.Writer(path) as w:
        w.add_tensor("s", np.array(4.5, np.float32))
    got = _ref_read(zref, path)["s"]
    assert float(got.reshape(())) == 4.5 and got.size == 1


# --------------------------------------------------------------------------- tensors 1.1.1 lacks


def test_f8_and_complex_beside_f32(zref, tmp_path):
    path = tmp_path / "new.zt"
    f32 = sample("f32", (8, 3))
    extra = {
        "c64": sample("complex64", (3, 4)),
        "c128": sample("complex128", (5,)),
        "e4m3": np.linspace(-4, 4, 24).astype(ml_dtypes.float8_e4m3fn).reshape(4, 6),
        "e5m2": np.linspace(-4, 4, 24).astype(ml_dtypes.float8_e5m2),
    }
    with za.Writer(path) as w:
        for name, arr in extra.items():
            w.add_tensor(name, arr)
        w.add_tensor("c64_z", extra["c64"], compress=True, checksum="crc32c")
        w.add_tensor("weights", f32)
    with zref.Reader(str(path)) as r:
        assert "weights" in r.tensor_names and len(r.tensor_names) == 6
        assert_same(np.array(r.read_tensor("weights", verify_checksum=True)), f32)
    with za.Reader(path) as r:
        for name, arr in extra.items():
            assert_same(r.read_tensor(name), arr)
            assert r.metadata(name).dtype == arr.dtype
        assert_same(r.read_tensor("c64_z", verify_checksum=True), extra["c64"])
        assert_same(r.read_tensor("weights"), f32)


def test_spec_spelling_of_f8_and_complex_is_read(tmp_path):
    """Files that write f8/complex directly as `dtype` (the spec's spelling) read too."""
    from conftest import build_file, component

    c = sample("complex64", (3,))
    e = np.linspace(-1, 1, 5).astype(ml_dtypes.float8_e5m2)
    objects = {
        "c": {
            "shape": [3],
            "format": "dense",
            "components": {"data": component("complex64", 64, 24)},
        },
        "e": {
            "shape": [5],
            "format": "dense",
            "components": {"data": component("f8_e5m2", 128, 5)},
        },
    }
    build_file(tmp_path / "s.zt", objects, {64: c.tobytes(), 128: e.tobytes()})
    with za.Reader(tmp_path / "s.zt") as r:
        assert_same(r.read_tensor("c"), c)
        assert_same(r.read_tensor("e"), e)


# --------------------------------------------------------------------------- byte identity


def _both(zref, tmp_path, ops) -> tuple[bytes, bytes]:
    """Apply the same add_* calls to both writers; return (ours, reference) bytes."""
    ours, theirs = tmp_path / "ours.zt", tmp_path / "ref.zt"
    with za.Writer(ours) as w:
        for method, args, kwargs in ops:
            getattr(w, method)(*args, **kwargs)
    with zref.Writer(str(theirs)) as w:
        for method, args, kwargs in ops:
            getattr(w, method)(*args, **kwargs)
    return ours.read_bytes(), theirs.read_bytes()


@pytest.mark.parametrize("compress", [False, True, 1, 5, 19])
def test_byte_identical_dense(zref, tmp_path, compress):
    ops = [
        ("add_tensor", (f"t_{d}", sample(d, (7, 9), seed=i)), {"compress": compress})
        for i, d in enumerate(CORE_DTYPES)
    ]
    ops.append(("add_tensor", ("empty", np.zeros((0, 10), np.float32)), {"compress": compress}))
    ops.append(("add_tensor", ("big", sample("f32", (300, 257))), {"compress": compress}))
    ours, ref = _both(zref, tmp_path, ops)
    assert ours == ref


def test_byte_identical_empty_file(zref, tmp_path):
    ours, ref = _both(zref, tmp_path, [])
    assert (
        ours == ref and len(ours) == 8 + len(cbor2.dumps({"version": "1.1.0", "objects": {}})) + 16
    )


def test_byte_identical_sparse(zref, tmp_path):
    # the reference's add_sparse_* take no compress= argument: raw only
    csr = _csr(5, (40, 17), np.float64)
    coo = _csr(6, (12, 30)).tocoo()
    coo3_values = np.arange(4, dtype=np.int32)
    coo3_coords = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 1, 1]])
    ops = [
        ("add_sparse_csr", ("m", csr.data, csr.indices, csr.indptr, csr.shape), {}),
        ("add_sparse_coo", ("c", coo.data, np.stack([coo.row, coo.col]), coo.shape), {}),
        ("add_sparse_coo", ("c3", coo3_values, coo3_coords, (4, 4, 2)), {}),
        ("add_sparse_coo", ("c3_flat", coo3_values, coo3_coords.reshape(-1), (4, 4, 2)), {}),
        ("add_tensor", ("d", sample("f16", (3, 3))), {"compress": 3}),
    ]
    ours, ref = _both(zref, tmp_path, ops)
    assert ours == ref


def test_byte_identical_many_tensors_and_bytewise_name_order(zref, tmp_path):
    names = ["b", "B", "a.weight", "a_weight", "Z", "z", "é", "e\u0301", "名", "🙂", "~", "a" * 300]
    names += [f"layer.{i}.w" for i in range(150)]
    rng = np.random.default_rng(3)
    ops = []
    for i, n in enumerate(rng.permutation(names)):  # add order differs from sorted order
        shape = tuple(int(s) for s in rng.integers(0, 5, size=1 + i % 4))  # 0-d differs
        ops.append(("add_tensor", (str(n), sample("f32", shape, seed=i)), {"compress": i % 3 == 0}))
    ours, ref = _both(zref, tmp_path, ops)
    assert ours == ref
    order = list(_manifest(tmp_path / "ours.zt")["objects"])
    assert order == sorted(names, key=lambda s: s.encode("utf-8"))


def test_byte_identical_big_endian_and_noncontiguous_inputs(zref, tmp_path):
    base = sample("f64", (10, 12))
    ours = tmp_path / "ours.zt"
    with za.Writer(ours) as w:
        w.add_tensor("be", base.astype(">f8"))
        w.add_tensor("t", base.T)
        w.add_tensor("s", base[::2, 1::3])
    ref = tmp_path / "ref.zt"
    with zref.Writer(str(ref)) as w:
        w.add_tensor("be", base)
        w.add_tensor("t", np.ascontiguousarray(base.T))
        w.add_tensor("s", np.ascontiguousarray(base[::2, 1::3]))
    assert ours.read_bytes() == ref.read_bytes()


def test_0d_shape_is_the_documented_difference(zref, tmp_path):
    """We keep shape [] where the reference writes [1]; everything else is identical."""
    ours, ref = _both(zref, tmp_path, [("add_tensor", ("s", np.array(1.5, np.float32)), {})])
    assert ours != ref
    assert _manifest(tmp_path / "ours.zt")["objects"]["s"]["shape"] == []
    assert _manifest(tmp_path / "ref.zt")["objects"]["s"]["shape"] == [1]
    # patching that one shape (and the manifest size) gives the reference's bytes exactly
    n = int.from_bytes(ours[-16:-8], "little")
    patched = ours[: -16 - n] + ours[-16 - n : -16].replace(b"eshape\x80", b"eshape\x81\x01")
    patched += (n + 1).to_bytes(8, "little") + ours[-8:]
    assert patched == ref


def test_reference_call_spellings_work_here(zref, tmp_path):
    """Positional arguments exactly as the reference accepts them give the same bytes."""
    a = sample("f32", (20, 20))
    m = _csr(9)
    ours, theirs = tmp_path / "o.zt", tmp_path / "t.zt"
    for mod, path in ((za, ours), (zref, theirs)):
        with mod.Writer(str(path)) as w:
            w.add_tensor("raw", a, False)
            w.add_tensor("z", a, 5)
            w.add_sparse_csr("m", m.data, m.indices, m.indptr, m.shape)
            w.add_sparse_coo("c", m.tocoo().data, np.stack([m.tocoo().row, m.tocoo().col]), m.shape)
        with mod.Reader(str(path)) as r:
            assert_same(np.array(r.read_tensor("z", "numpy", True), copy=True), a)
            assert len(r.read_tensors(["raw", "z"], "numpy", False)) == 2
    assert ours.read_bytes() == theirs.read_bytes()
