"""Property tests: any dtype, shape, encoding and checksum round-trips (bounded for CI)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ALL_DTYPES, CORE_DTYPES, NUMPY_OF, assert_same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import ztensor_array as za

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# levels 19..22 cost 0.3..2.4 s per frame even for tiny inputs (so does the reference): they
# are covered once each in test_codecs.py
compress_st = st.sampled_from([False, True, 1, 2, 7])
checksum_st = st.sampled_from([None, "crc32c", "sha256"])


@st.composite
def arrays(draw, dtypes=ALL_DTYPES, max_dims=4):
    """Any bit pattern of any dtype (NaNs, infinities, subnormals, non-0/1 bools excluded)."""
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=6))
    dt = NUMPY_OF[dtype]
    n = int(np.prod(shape))
    if dtype == "bool":  # stored as 0x00/0x01 only
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool).reshape(shape)
    raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


# any text but U+0000, which the writer refuses (C readers such as 1.1.1 cut names there),
# and lone surrogates, which are not Unicode text (the writer refuses them too)
ANY_NAME = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=0, max_size=12
)


@st.composite
def tensor_sets(draw, dtypes=ALL_DTYPES, names=ANY_NAME):
    names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    return {n: (draw(arrays(dtypes)), draw(compress_st), draw(checksum_st)) for n in names}


def _write(path, tensors) -> None:
    with za.Writer(path) as w:
        for name, (arr, compress, checksum) in tensors.items():
            w.add_tensor(name, arr, compress=compress, checksum=checksum)


@SETTINGS
@given(tensors=tensor_sets())
def test_any_dense_roundtrips(tmp_path, tensors):
    path = tmp_path / "p.zt"
    _write(path, tensors)
    with za.Reader(path) as r:
        assert r.tensor_names == sorted(tensors, key=lambda s: s.encode())
        for name, (arr, compress, checksum) in tensors.items():
            got = r.read_tensor(name, verify_checksum=True)
            assert_same(got, arr)
            md = r.metadata(name)
            assert md.shape == arr.shape and md.dtype == arr.dtype
            assert md.encoding == ("zstd" if compress else "raw")
            assert (md.checksum or "").startswith(checksum or "")
        copies = r.to_dict(verify_checksum=True)
    for name, (arr, _, _) in tensors.items():
        assert_same(copies[name], arr)


@settings(SETTINGS, max_examples=25)
@given(tensors=tensor_sets(CORE_DTYPES))
def test_any_core_file_reads_identically_in_reference(zref, tmp_path, tensors):
    path = tmp_path / "p.zt"
    _write(path, tensors)
    with zref.Reader(str(path)) as r:
        for name, (arr, _, _) in tensors.items():
            got = np.array(r.read_tensor(name, verify_checksum=True), copy=True)
            if arr.ndim == 0:  # 1.1.1 reports our shape [] as () too, or [1]
                got = got.reshape(())
            assert_same(got, arr)


@st.composite
def sparse_parts(draw):
    """(shape, values, indices, indptr) of a random CSR matrix with values of any dtype."""
    rows = draw(st.integers(0, 8))
    cols = draw(st.integers(1, 8))
    density = draw(st.floats(0, 1))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from(["f32", "f64", "i32", "u8", "bool", "complex64", "f16", "bf16"]))
    m = sp.random(rows, cols, density=density, random_state=seed, format="csr")
    values = (m.data * 100).astype(NUMPY_OF[dtype])
    return m.shape, values, m.indices, m.indptr


def _dense_of(shape, values, indices, indptr) -> np.ndarray:
    """Independent expectation; scipy holds nothing narrower than float32 (widened exactly)."""
    kind = values.dtype.kind
    narrow = kind not in "biuc" and values.dtype.itemsize < 4 or values.dtype.kind == "V"
    vals = values.astype(np.float32) if narrow or values.dtype.name == "bfloat16" else values
    out = np.zeros(shape, vals.dtype)
    for r in range(shape[0]):
        for k in range(indptr[r], indptr[r + 1]):
            out[r, indices[k]] = vals[k]
    return out


@SETTINGS
@given(parts=sparse_parts(), compress=compress_st, checksum=checksum_st)
def test_any_sparse_roundtrips(tmp_path, parts, compress, checksum):
    shape, values, indices, indptr = parts
    want = _dense_of(*parts)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    path = tmp_path / "s.zt"
    with za.Writer(path) as w:
        w.add_sparse_csr(
            "csr", values, indices, indptr, shape, compress=compress, checksum=checksum
        )
        w.add_sparse_coo(
            "coo",
            values,
            np.stack([rows, indices]),
            shape,
            compress=compress,
            checksum=checksum,
        )
    with za.Reader(path) as r:
        csr = r.read_tensor("csr", verify_checksum=True)
        assert csr.format == "csr" and csr.shape == shape and csr.dtype == want.dtype
        assert_same(csr.toarray(), want)
        got = r.read_tensor("coo", verify_checksum=True)
        assert got.shape == shape and got.dtype == want.dtype
        assert_same(got.toarray(), want)


@st.composite
def nd_coo(draw):
    shape = draw(array_shapes(min_dims=1, max_dims=5, min_side=1, max_side=5))
    size = int(np.prod(shape))
    flat = draw(st.lists(st.integers(0, size - 1), unique=True, max_size=min(size, 20)))
    coords = np.stack(np.unravel_index(np.array(flat, dtype=np.int64), shape)).reshape(
        len(shape), len(flat)
    )
    values = np.arange(1, len(flat) + 1, dtype=np.int32)
    return shape, coords, values


@SETTINGS
@given(case=nd_coo(), compress=compress_st)
def test_any_nd_coo_roundtrips(tmp_path, case, compress):
    shape, coords, values = case
    path = tmp_path / "c.zt"
    with za.Writer(path) as w:
        w.add_sparse_coo("c", values, coords, shape, compress=compress)
    dense = np.zeros(shape, np.int32)
    dense[tuple(coords)] = values
    with za.Reader(path) as r:
        got = r.read_tensor("c")
        assert tuple(got.shape) == tuple(shape)
        np.testing.assert_array_equal(got.toarray(), dense)


def test_hypothesis_is_bounded():
    # guard for CI time: the property tests above run a bounded number of examples
    assert SETTINGS.max_examples <= 100


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
