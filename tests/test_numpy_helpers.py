"""ztensor_array.numpy and the top-level save_file/load_file, against the reference's helpers;
and the seed README's Python quick start, run as written (importing from ztensor_array)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ALL_DTYPES, CORE_DTYPES, assert_same, sample

import ztensor_array as za
import ztensor_array.numpy as zn


def _arrays(dtypes=ALL_DTYPES) -> dict[str, np.ndarray]:
    out = {d: sample(d, (4, 3), seed=i) for i, d in enumerate(dtypes)}
    out["scalar"] = np.array(9, np.int32)
    out["empty"] = np.zeros((0, 10), np.float64)
    return out


def test_save_file_load_file(tmp_path):
    arrays = _arrays()
    path = tmp_path / "n.zt"
    zn.save_file(arrays, path, metadata={"a": "b"})
    got = zn.load_file(path)
    assert set(got) == set(arrays)
    for n, a in arrays.items():
        assert_same(got[n], a)
        assert got[n].flags.writeable
    with za.Reader(path) as r:
        assert r.attributes == {"a": "b"}


def test_load_file_arrays_are_independent_of_the_file(tmp_path):
    path = tmp_path / "i.zt"
    zn.save_file({"x": np.arange(5.0)}, path)
    got = zn.load_file(path)
    got["x"][0] = 100
    zn.save_file({"x": np.zeros(5)}, path)  # replacing the file does not touch our copy
    assert got["x"].tolist() == [100, 1, 2, 3, 4]


@pytest.mark.parametrize("kw", [{"compress": True}, {"compression": True}, {"compression": 4}])
def test_compressed(tmp_path, kw):
    arrays = _arrays()
    path = tmp_path / "c.zt"
    zn.save_file(arrays, path, **kw)
    with za.Reader(path) as r:
        assert {md.encoding for md in r} == {"zstd"}
    for n, a in zn.load_file(path).items():
        assert_same(a, arrays[n])
    blob = zn.save(arrays, **kw)
    for n, a in zn.load(blob).items():
        assert_same(a, arrays[n])


def test_checksums_and_verified_load(tmp_path):
    path = tmp_path / "v.zt"
    zn.save_file({"x": np.arange(100.0)}, path, checksum="sha256")
    assert_same(zn.load_file(path, verify_checksum=True)["x"], np.arange(100.0))
    data = bytearray(path.read_bytes())
    data[64 + 17] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(za.ChecksumError):
        zn.load_file(path, verify_checksum=True)


def test_save_load_bytes():
    arrays = _arrays()
    blob = zn.save(arrays, {"k": "v"})
    assert isinstance(blob, bytes) and blob[:8] == b"ZTEN1000"
    got = zn.load(blob)
    for n, a in arrays.items():
        assert_same(got[n], a)


def test_top_level_helpers_and_sparse(tmp_path):
    m = sp.random(7, 5, density=0.3, format="csr", random_state=0, dtype=np.float32)
    c = sp.random(4, 6, density=0.4, format="coo", random_state=1, dtype=np.float64)
    path = tmp_path / "t.zt"
    za.save_file({"d": np.ones(3), "csr": m, "coo": c}, path)
    got = za.load_file(path)
    assert_same(got["d"], np.ones(3))
    assert got["csr"].format == "csr" and (got["csr"] != m).nnz == 0
    assert got["coo"].format == "coo"
    np.testing.assert_array_equal(got["coo"].toarray(), c.toarray())


def test_reference_helpers_interoperate(zref, tmp_path):
    import ztensor.numpy as ref_np

    arrays = {n: a for n, a in _arrays(CORE_DTYPES).items() if n != "scalar"}
    ours = tmp_path / "ours.zt"
    zn.save_file(arrays, ours, metadata={"m": "1"}, compression=True)
    for n, a in ref_np.load_file(str(ours)).items():
        assert_same(np.array(a, copy=True), arrays[n])
    theirs = tmp_path / "theirs.zt"
    ref_np.save_file(arrays, str(theirs), compression=True)
    for n, a in zn.load_file(theirs).items():
        assert_same(a, arrays[n])
    # bytes API both ways
    for n, a in zn.load(ref_np.save(arrays)).items():
        assert_same(a, arrays[n])
    for n, a in ref_np.load(zn.save(arrays)).items():
        assert_same(np.array(a, copy=True), arrays[n])
    # same tensors, same bytes (metadata aside)
    assert zn.save(arrays) == ref_np.save(arrays)


def test_seed_readme_quick_start(tmp_path, monkeypatch, capsys):
    """The seed README's Python snippets, with `ztensor` replaced by `ztensor_array`."""
    monkeypatch.chdir(tmp_path)
    import scipy.sparse

    from ztensor_array import Reader, Writer

    with Writer("model.zt") as w:
        w.add_tensor("weights", np.random.randn(1024, 768).astype(np.float32))
        w.add_tensor("bias", np.zeros(768, dtype=np.float32))
    with Reader("model.zt") as r:
        weights = r.read_tensor("weights")
        print(f"Weights shape: {weights.shape}, dtype: {weights.dtype}")
    assert "Weights shape: (1024, 768), dtype: float32" in capsys.readouterr().out

    csr = scipy.sparse.csr_matrix([[1, 0], [0, 2]], dtype=np.float32)
    with Writer("sparse.zt") as w:
        w.add_sparse_csr("my_csr", csr.data, csr.indices, csr.indptr, csr.shape)
    with Reader("sparse.zt") as r:
        matrix = r.read_tensor("my_csr", to="numpy")
    assert isinstance(matrix, scipy.sparse.csr_matrix) and (matrix != csr).nnz == 0

    data = np.tile(np.arange(1000, dtype=np.float32), 100)
    with Writer("compressed.zt") as w:
        w.add_tensor("big_data", data, compress=True)
    assert (tmp_path / "compressed.zt").stat().st_size < data.nbytes // 4
    with Reader("compressed.zt") as r:
        assert_same(r.read_tensor("big_data"), data)

    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    t = torch.randn(10, 10)
    with Writer("torch_model.zt") as w:
        w.add_tensor("embedding", t)
    with Reader("torch_model.zt") as r:
        embedding = r.read_tensor("embedding", to="torch")
        print(embedding.size())
    assert torch.equal(embedding, t)
