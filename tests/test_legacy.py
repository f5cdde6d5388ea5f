"""Legacy zTensor v0.1 files: read directly, migrated to v1.1, and refused when damaged.

The fixtures in tests/data/legacy were written by ztensor 0.1.4 (wheel_*.zt) or built with
cbor2 by tests/data/legacy/make_fixtures.py, which also recorded the expected arrays (from
its own seeded generator) in expected.npz and checked every dense fixture with the 0.1.4
reader. Migrated files are checked with the reference reader ztensor 1.1.1.
"""

from __future__ import annotations

import json
import os
import shutil

import cbor2
import ml_dtypes
import numpy as np
import pytest
import scipy.sparse
from conftest import HAS_TORCH, needs_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ztensor_array as zt
from ztensor_array.errors import (
    ChecksumError,
    DecodeError,
    FileExistsZTError,
    FormatError,
    UnsupportedError,
    ZTensorError,
)
from ztensor_array.ops.migrate import migrate

DATA = os.path.join(os.path.dirname(__file__), "data", "legacy")
with open(os.path.join(DATA, "expected.json")) as _fh:
    DESCRIPTION = json.load(_fh)["files"]
EXPECTED = dict(np.load(os.path.join(DATA, "expected.npz")))
GOOD_FILES = sorted(f for f in DESCRIPTION if f != "bad_checksum.zt")
BF16 = np.dtype(ml_dtypes.bfloat16)


def fixture(name: str) -> str:
    return os.path.join(DATA, name)


def expected_array(key: str, long_dtype: str) -> np.ndarray:
    a = EXPECTED[key]
    return a.view(BF16) if long_dtype == "bfloat16" else a


def expected_value(fname: str, tensor: str):
    """The expected numpy array, or (values, indices-ish..., dense) for sparse tensors."""
    desc = DESCRIPTION[fname][tensor]
    key = f"{fname}:{tensor}"
    shape = tuple(desc["shape"])
    if desc["layout"] == "dense":
        return expected_array(key, desc["dtype"])
    values = expected_array(key + ":values", desc["dtype"])
    if desc["layout"] == "sparsecsr":
        return values, EXPECTED[key + ":indices"], EXPECTED[key + ":indptr"], shape
    return values, EXPECTED[key + ":coords"], shape


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    got = np.asarray(got)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.tobytes() == np.ascontiguousarray(want).tobytes()


def as_scipy_values(values: np.ndarray, got_dtype) -> np.ndarray:
    """scipy.sparse has no float narrower than float32: readers widen f16/bf16 exactly."""
    if values.dtype in (np.float16, BF16) and got_dtype == np.float32:
        return values.astype(np.float32)
    return values


def assert_tensor_matches(value, fname: str, tensor: str) -> None:
    desc = DESCRIPTION[fname][tensor]
    want = expected_value(fname, tensor)
    if desc["layout"] == "dense":
        assert_same_bits(value, want)
        return
    values = as_scipy_values(want[0], value.data.dtype)
    if desc["layout"] == "sparsecsr":
        _, indices, indptr, shape = want
        assert isinstance(value, scipy.sparse.csr_matrix | scipy.sparse.csr_array)
        assert value.shape == shape
        assert_same_bits(value.data, values)
        np.testing.assert_array_equal(value.indices, indices.astype(np.int64))
        np.testing.assert_array_equal(value.indptr, indptr.astype(np.int64))
    else:
        _, coords, shape = want
        assert value.shape == shape
        assert_same_bits(value.data, values)
        got_coords = np.stack([np.asarray(c) for c in value.coords])
        np.testing.assert_array_equal(got_coords, coords.astype(np.int64))


def all_tensors(files=None):
    files = GOOD_FILES if files is None else files
    return [(f, t) for f in files for t in DESCRIPTION[f]]


# --------------------------------------------------------------------------- direct reads


@pytest.mark.parametrize(("fname", "tensor"), all_tensors())
def test_fixture_reads_identically(fname, tensor):
    with zt.Reader(fixture(fname)) as r:
        assert r.version == "0.1"
        assert r.manifest_offset is None
        value = r.read_tensor(tensor, verify_checksum=True)
        assert_tensor_matches(value, fname, tensor)
        assert r.metadata(tensor).dtype_str == DESCRIPTION[fname][tensor]["dtype"]
        assert r.metadata(tensor).shape == tuple(DESCRIPTION[fname][tensor]["shape"])


@pytest.mark.parametrize("fname", GOOD_FILES)
def test_fixture_lists_every_tensor(fname):
    with zt.Reader(fixture(fname)) as r:
        assert sorted(r.tensor_names) == sorted(DESCRIPTION[fname])
        assert r.attributes == {}
        assert len(r) == len(DESCRIPTION[fname])


def test_big_endian_metadata():
    with zt.Reader(fixture("big_endian.zt")) as r:
        assert r.metadata("f32").endianness == "big"


@needs_torch
def test_big_endian_to_torch():
    with zt.Reader(fixture("big_endian.zt")) as r:
        t = r.read_tensor("i16", to="torch")
        np.testing.assert_array_equal(t.numpy(), EXPECTED["big_endian.zt:i16"])


@pytest.mark.parametrize("tensor", sorted(DESCRIPTION["big_endian.zt"]))
def test_big_endian_row_blocks_match_the_fixture(tensor):
    """iter_dense_rows (region rewrites) converts big-endian data like read_tensor does."""
    with zt.Reader(fixture("big_endian.zt")) as r:
        if not r.metadata(tensor).shape:
            pytest.skip("a 0-d tensor has no rows to iterate")
        blocks = list(r.iter_dense_rows(tensor, 2))
    got = np.concatenate(blocks)
    assert got.dtype.isnative
    assert_tensor_matches(got, "big_endian.zt", tensor)


def test_raw_dense_is_zero_copy_and_read_only():
    with zt.Reader(fixture("wheel_dense.zt")) as r:
        a = r.read_tensor("f32")
        assert not a.flags.writeable
        assert not a.flags.owndata
    assert_same_bits(a, EXPECTED["wheel_dense.zt:f32"])  # still valid after close


def test_raw_csr_is_three_subranges_of_its_blob():
    with zt.Reader(fixture("sparse_csr.zt")) as r:
        obj = r.manifest.objects["csr_raw"]
        assert obj.format == "sparse_csr"
        c = obj.components
        assert c["indptr"].offset + c["indptr"].length == c["indices"].offset
        assert c["indices"].offset + c["indices"].length == c["values"].offset
        assert c["indptr"].length == 8 * (obj.shape[0] + 1)
        # blobs with a checksum or zstd keep one component, so the digest still covers it
        assert r.manifest.objects["csr_zstd"].format == "legacy_sparse_csr"
        assert r.manifest.objects["csr_crc"].components["blob"].digest.startswith("crc32c:0x")


def test_sparse_matches_scipy_built_from_expected_values():
    with zt.Reader(fixture("sparse_coo.zt")) as r:
        values, coords, shape = expected_value("sparse_coo.zt", "coo_2d")
        want = scipy.sparse.coo_matrix((values, (coords[0], coords[1])), shape=shape)
        np.testing.assert_array_equal(r.read_tensor("coo_2d").toarray(), want.toarray())
    with zt.Reader(fixture("sparse_csr.zt")) as r:
        values, indices, indptr, shape = expected_value("sparse_csr.zt", "csr_zstd")
        want = scipy.sparse.csr_matrix((values, indices, indptr), shape=shape)
        np.testing.assert_array_equal(r.read_tensor("csr_zstd").toarray(), want.toarray())


def test_bad_checksum_detected_only_when_verifying():
    with zt.Reader(fixture("bad_checksum.zt")) as r:
        damaged = r.read_tensor("bad")  # not verified: the damaged bytes come back
        assert damaged.shape == (4,)
        with pytest.raises(ChecksumError, match="'bad'"):
            r.read_tensor("bad", verify_checksum=True)
        assert_same_bits(
            r.read_tensor("good", verify_checksum=True), EXPECTED["bad_checksum.zt:good"]
        )


# --------------------------------------------------------------------------- migrate


def read_with_reference(path: str, tensor: str, layout: str, ndim: int):
    import ztensor  # the reference 1.1.1 reader

    with ztensor.Reader(path) as ref:
        if layout == "sparsecoo" and ndim != 2:
            return ref.read_tensor(tensor, to="torch", verify_checksum=True)
        value = ref.read_tensor(tensor, verify_checksum=True)
        return value.copy() if isinstance(value, np.ndarray) else value


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # torch, in 1.1.1
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("fname", GOOD_FILES)
def test_migrate_reads_identically_in_reference(fname, compress, tmp_path):
    out = str(tmp_path / "out.zt")
    report = migrate(fixture(fname), out, compress=compress)
    assert report.tensors == len(DESCRIPTION[fname])
    with open(out, "rb") as fh:
        assert fh.read(8) == b"ZTEN1000"
    not_read = []  # tensors the reference can hand out only as torch, without torch here
    for tensor, desc in DESCRIPTION[fname].items():
        if desc["layout"] == "sparsecoo" and len(desc["shape"]) != 2 and not HAS_TORCH:
            not_read.append(tensor)
            continue
        value = read_with_reference(out, tensor, desc["layout"], len(desc["shape"]))
        if hasattr(value, "to_dense"):  # n-D COO through torch
            values, coords, shape = expected_value(fname, tensor)
            dense = np.zeros(shape, dtype=values.dtype)
            dense[tuple(coords.astype(np.int64))] = values
            np.testing.assert_array_equal(value.to_dense().numpy(), dense)
        elif desc["layout"] == "sparsecoo":
            values, coords, shape = expected_value(fname, tensor)
            assert_same_bits(value.data, as_scipy_values(values, value.data.dtype))
            np.testing.assert_array_equal(value.row, coords[0].astype(value.row.dtype))
            np.testing.assert_array_equal(value.col, coords[1].astype(value.col.dtype))
        else:
            assert_tensor_matches(value, fname, tensor)
    with zt.Reader(out, verify=True) as r:
        assert r.version.startswith("1.")
        for tensor in DESCRIPTION[fname]:
            assert_tensor_matches(r.read_tensor(tensor), fname, tensor)
            obj = r.manifest.objects[tensor]
            assert obj.format in ("dense", "sparse_csr", "sparse_coo")
            value_role = "data" if obj.format == "dense" else "values"
            legacy_dtype = DESCRIPTION[fname][tensor]["dtype"]
            assert r.metadata(tensor).dtype_str == legacy_dtype
            assert obj.components[value_role].dtype == zt.dtypes.from_legacy(legacy_dtype)
            for comp in obj.components.values():
                assert comp.byte_order == "little"
                assert comp.encoding == ("zstd" if compress else "raw")
    if not_read:  # everything else was checked above
        pytest.skip(
            f"the reference 1.1.1 reads n-D COO {not_read} only as torch, the optional "
            "`torch` extra"
        )


def test_migrate_checksum_policy(tmp_path):
    src = fixture("zstd_checksum.zt")
    kept = str(tmp_path / "kept.zt")
    migrate(src, kept)
    with zt.Reader(kept) as r:
        digests = {n: r.metadata(n).checksum for n in r.tensor_names}
    assert digests["zstd_plain"] is None
    assert all(digests[n].startswith("crc32c:0x") for n in ("zstd_crc", "raw_crc", "big_crc"))
    for policy, prefix in (("sha256", "sha256:"), ("none", None)):
        out = str(tmp_path / f"{policy}.zt")
        migrate(src, out, checksum=policy, level=19)
        with zt.Reader(out) as r:
            for n in r.tensor_names:
                checksum = r.metadata(n).checksum
                assert checksum is None if prefix is None else checksum.startswith(prefix)
                assert r.metadata(n).encoding == "zstd"


def test_migrate_refuses_bad_checksum_and_leaves_nothing(tmp_path):
    out = tmp_path / "out.zt"
    with pytest.raises(ChecksumError, match="'bad'") as info:
        migrate(fixture("bad_checksum.zt"), str(out))
    assert info.value.obj == "bad"
    assert os.listdir(tmp_path) == []


def test_migrate_failure_keeps_previous_output(tmp_path):
    out = tmp_path / "out.zt"
    out.write_bytes(b"previous")
    with pytest.raises(ChecksumError):
        migrate(fixture("bad_checksum.zt"), str(out), overwrite=True)
    assert out.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.zt"]


def test_migrate_output_rules(tmp_path):
    out = tmp_path / "out.zt"
    out.write_bytes(b"x")
    with pytest.raises(FileExistsZTError):
        migrate(fixture("wheel_dense.zt"), str(out))
    migrate(fixture("wheel_dense.zt"), str(out), overwrite=True)
    with pytest.raises(UnsupportedError, match="not a v0.1 file"):
        migrate(str(out), str(tmp_path / "again.zt"))
    with pytest.raises(ZTensorError, match="also an input"):
        migrate(str(out), str(out), overwrite=True)


# --------------------------------------------------------------------------- bad files


def split(data: bytes) -> tuple[bytes, list]:
    """(blob area, decoded index entries) of a v0.1 file."""
    n = int.from_bytes(data[-8:], "little")
    return data[: len(data) - 8 - n], cbor2.loads(data[len(data) - 8 - n : -8])


def join(blobs: bytes, index) -> bytes:
    cbor = cbor2.dumps(index)
    return blobs + cbor + len(cbor).to_bytes(8, "little")


def write(tmp_path, data: bytes) -> str:
    p = tmp_path / "bad.zt"
    p.write_bytes(data)
    return str(p)


def edited(tmp_path, fname: str, edit) -> str:
    with open(fixture(fname), "rb") as fh:
        blobs, index = split(fh.read())
    index = edit(index)
    return write(tmp_path, join(blobs, index))


def set_field(name, key, value):
    def edit(index):
        for e in index:
            if e["name"] == name:
                e[key] = value
        return index

    return edit


def read_all(path: str) -> None:
    with zt.Reader(path) as r:
        for n in r.tensor_names:
            r.read_tensor(n, verify_checksum=True)


def test_reencoded_definite_index_still_reads(tmp_path):
    path = edited(tmp_path, "sparse_csr.zt", lambda index: index)
    with zt.Reader(path) as r:
        assert_tensor_matches(r.read_tensor("csr_big"), "sparse_csr.zt", "csr_big")


@pytest.mark.parametrize(
    ("fname", "edit", "error", "match"),
    [
        ("wheel_dense.zt", set_field("f32", "dtype", "float128"), UnsupportedError, "float128"),
        ("wheel_dense.zt", set_field("f32", "dtype", 7), FormatError, "dtype"),
        ("wheel_dense.zt", set_field("f32", "offset", 1 << 40), FormatError, "outside"),
        ("wheel_dense.zt", set_field("f32", "offset", 2), FormatError, "outside"),
        ("wheel_dense.zt", set_field("f32", "offset", -64), FormatError, "offset"),
        ("wheel_dense.zt", set_field("f32", "size", 28), FormatError, "raw length"),
        ("wheel_dense.zt", set_field("f32", "shape", [2, -3]), FormatError, "shape"),
        ("wheel_dense.zt", set_field("f32", "shape", [1 << 40, 1 << 40]), FormatError, "shape"),
        ("wheel_dense.zt", set_field("f32", "layout", "blocked"), UnsupportedError, "layout"),
        ("wheel_dense.zt", set_field("f32", "encoding", "lz4"), UnsupportedError, "encoding"),
        ("wheel_dense.zt", set_field("f32", "encoding", {"a": 1}), FormatError, "encoding"),
        ("wheel_dense.zt", set_field("f32", "layout", ["dense"]), FormatError, "layout"),
        (
            "wheel_dense.zt",
            set_field("f32", "data_endianness", "middle"),
            UnsupportedError,
            "endian",
        ),
        ("wheel_dense.zt", set_field("f32", "checksum", 5), FormatError, "checksum"),
        ("wheel_dense.zt", set_field("f32", "name", "f64"), FormatError, "twice"),
        ("wheel_dense.zt", set_field("f32", "offset", 64), FormatError, "shared"),
        ("wheel_dense.zt", lambda index: {"not": "an array"}, FormatError, "array"),
        ("wheel_dense.zt", lambda index: [*index, 3], FormatError, "not a map"),
        ("sparse_csr.zt", set_field("csr_raw", "size", 100), FormatError, "nnz"),
        ("sparse_csr.zt", set_field("csr_crc", "shape", [4, 3, 1]), FormatError, "2-D"),
        ("sparse_coo.zt", set_field("coo_2d", "size", 70), FormatError, "records"),
        ("sparse_coo.zt", set_field("coo_2d", "shape", []), FormatError, "dimensions"),
    ],
)
def test_bad_index_entries_are_refused(tmp_path, fname, edit, error, match):
    path = edited(tmp_path, fname, edit)
    with pytest.raises(error, match=match) as info:
        read_all(path)
    assert info.value.path == path


def test_size_field_too_large_or_beyond_file(tmp_path):
    with open(fixture("wheel_dense.zt"), "rb") as fh:
        data = fh.read()
    for size, match in (((128 << 20) + 1, "128 MiB"), (len(data), "does not fit")):
        path = write(tmp_path, data[:-8] + size.to_bytes(8, "little"))
        with pytest.raises(FormatError, match=match):
            zt.Reader(path)


def test_index_must_fill_its_range(tmp_path):
    with open(fixture("wheel_dense.zt"), "rb") as fh:
        data = fh.read()
    n = int.from_bytes(data[-8:], "little")
    path = write(tmp_path, data[:-8] + (n - 1).to_bytes(8, "little"))
    with pytest.raises(FormatError):
        zt.Reader(path)


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 40, 200])
def test_truncated_files_are_refused(tmp_path, cut):
    with open(fixture("wheel_dense.zt"), "rb") as fh:
        data = fh.read()
    with pytest.raises(ZTensorError):
        zt.Reader(write(tmp_path, data[:-cut]))


def test_tiny_files(tmp_path):
    for data in (b"ZTEN0001", b"ZTEN0001\x00\x00"):
        with pytest.raises(FormatError):
            zt.Reader(write(tmp_path, data))
    with zt.Reader(fixture("wheel_empty.zt")) as r:
        assert r.tensor_names == []


def test_corrupt_or_oversized_zstd_is_a_decode_error(tmp_path):
    import zstandard

    def with_blob(index, blob_offset, blob):
        for e in index:
            if e["name"] == "coo_zstd":
                e["offset"], e["size"] = blob_offset, len(blob)
                e.pop("checksum", None)
        return index

    with open(fixture("sparse_coo.zt"), "rb") as fh:
        blobs, index = split(fh.read())
    bomb = zstandard.ZstdCompressor().compress(bytes(10_000_000))  # 36 x 36 max: 1.2 MB
    offset = len(blobs) + (-len(blobs) % 64)
    data = join(blobs + bytes(offset - len(blobs)) + bomb, with_blob(index, offset, bomb))
    with zt.Reader(write(tmp_path, data)) as r:
        with pytest.raises(DecodeError):
            r.read_tensor("coo_zstd")
    garbage = b"\x28\xb5\x2f\xfd" + bytes(60)
    with open(fixture("sparse_coo.zt"), "rb") as fh:
        blobs, index = split(fh.read())
    data = join(blobs + bytes(offset - len(blobs)) + garbage, with_blob(index, offset, garbage))
    with zt.Reader(write(tmp_path, data)) as r:
        with pytest.raises(DecodeError):
            r.read_tensor("coo_zstd")


def test_csr_blob_with_bad_indices_is_refused(tmp_path):
    with open(fixture("sparse_csr.zt"), "rb") as fh:
        data = bytearray(fh.read())
    with zt.Reader(fixture("sparse_csr.zt")) as r:
        indices = r.manifest.objects["csr_raw"].components["indices"]
    data[indices.offset : indices.offset + 8] = (99).to_bytes(8, "little")
    with zt.Reader(write(tmp_path, bytes(data))) as r:
        with pytest.raises(FormatError, match="out of range"):
            r.read_tensor("csr_raw")


# --------------------------------------------------------------------------- properties


def _check_outcome(path: str) -> None:
    try:
        with zt.Reader(path) as r:
            for n in r.tensor_names:
                meta = r.metadata(n)
                value = r.read_tensor(n)
                assert value.shape == meta.shape
    except ZTensorError:
        pass


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    fname=st.sampled_from(GOOD_FILES),
    position=st.floats(0, 1, exclude_max=True),
    value=st.integers(0, 255),
    cut=st.booleans(),
)
def test_any_mutation_or_truncation_gives_error_or_declared_shapes(
    tmp_path, fname, position, value, cut
):
    with open(fixture(fname), "rb") as fh:
        data = bytearray(fh.read())
    i = int(position * len(data))
    if cut:
        data = data[:i]
    else:
        data[i] = value
    _check_outcome(write(tmp_path, bytes(data)))


def test_fixtures_are_unchanged_by_reading(tmp_path):
    # a Reader maps files read-only: reading (and migrating) never alters the input
    src = tmp_path / "in.zt"
    shutil.copy(fixture("sparse_coo.zt"), src)
    before = src.read_bytes()
    read_all(str(src))
    migrate(str(src), str(tmp_path / "out.zt"))
    assert src.read_bytes() == before


def test_legacy_files_cannot_be_appended_to(tmp_path):
    path = tmp_path / "in.zt"
    shutil.copy(fixture("wheel_dense.zt"), path)
    with pytest.raises(ZTensorError, match="migrate"):
        zt.Writer(str(path), "a")
    assert path.read_bytes() == open(fixture("wheel_dense.zt"), "rb").read()


# --------------------------------------------------------------------------- generated files

LONG_NAMES = {
    "float64": "<f8",
    "float32": "<f4",
    "float16": "<f2",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "|i1",
    "uint64": "<u8",
    "uint32": "<u4",
    "uint16": "<u2",
    "uint8": "|u1",
    "bool": "|b1",
}


def legacy_file(entries) -> bytes:
    """A v0.1 file (definite CBOR maps, unaligned offsets allowed) from (fields, blob)."""
    import zstandard

    out = bytearray(b"ZTEN0001")
    index = []
    for fields, blob, pad in entries:
        out += bytes(pad)
        if fields["encoding"] == "zstd":
            blob = zstandard.ZstdCompressor(level=1).compress(blob)
        if fields.pop("with_checksum"):
            import google_crc32c

            fields["checksum"] = f"crc32c:0x{google_crc32c.value(blob):08X}"
        index.append({**fields, "offset": len(out), "size": len(blob)})
        out += blob
    cbor = cbor2.dumps(index)
    return bytes(out + cbor + len(cbor).to_bytes(8, "little"))


@st.composite
def legacy_tensor(draw, name: str):
    long = draw(st.sampled_from(sorted(LONG_NAMES)))
    dt = np.dtype(LONG_NAMES[long])
    layout = draw(st.sampled_from(["dense", "sparsecsr", "sparsecoo"]))
    big = draw(st.booleans())
    fields = {
        "name": name,
        "dtype": long,
        "layout": layout,
        "encoding": draw(st.sampled_from(["raw", "zstd"])),
        "data_endianness": "big" if big else "little",
        "with_checksum": draw(st.booleans()),
    }
    order = ">" if big else "<"
    stored_dt = dt.newbyteorder(order) if dt.itemsize > 1 else dt
    shape = tuple(
        draw(st.lists(st.integers(1, 4), min_size=2, max_size=2 if layout != "dense" else 3))
    )
    numel = int(np.prod(shape))
    raw = draw(st.binary(min_size=numel * dt.itemsize, max_size=numel * dt.itemsize))
    dense = np.frombuffer(raw, dtype=stored_dt).astype(dt).reshape(shape)
    if dt == np.bool_:
        dense = dense.view(np.uint8) % 2 == 1
    mask = np.array(draw(st.lists(st.booleans(), min_size=numel, max_size=numel))).reshape(shape)
    if layout == "dense":
        blob = dense.astype(stored_dt).tobytes()
        expected = dense
    elif layout == "sparsecsr":
        vals = dense[mask]
        rows, cols = np.nonzero(mask)
        indptr = np.searchsorted(rows, np.arange(shape[0] + 1)).astype(f"{order}u8")
        blob = (
            indptr.tobytes()
            + cols.astype(f"{order}u8").tobytes()
            + vals.astype(stored_dt).tobytes()
        )
        expected = (vals, cols, indptr.astype(np.int64))
    else:
        coords = np.stack(np.nonzero(mask))
        vals = dense[mask]
        rec = np.dtype([("i", f"{order}u8", (len(shape),)), ("v", stored_dt)])
        table = np.empty(vals.size, dtype=rec)
        table["i"] = coords.T
        table["v"] = vals
        blob = table.tobytes()
        expected = (vals, coords)
    fields["shape"] = list(shape)
    return fields, blob, draw(st.integers(0, 70)), expected


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tensors=st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True).flatmap(
        lambda ids: st.tuples(*[legacy_tensor(f"t{i}") for i in ids])
    )
)
def test_generated_legacy_files_read_and_migrate_exactly(tmp_path, tensors):
    src = tmp_path / "gen.zt"
    src.write_bytes(legacy_file([(dict(f), b, p) for f, b, p, _ in tensors]))
    out = tmp_path / "gen_v1.zt"
    if out.exists():
        out.unlink()
    migrate(str(src), str(out))
    for path in (src, out):
        with zt.Reader(str(path), verify=True) as r:
            for fields, _, _, expected in tensors:
                got = r.read_tensor(fields["name"])
                if fields["layout"] == "dense":
                    assert_same_bits(got, expected)
                elif fields["layout"] == "sparsecsr":
                    vals, cols, indptr = expected
                    np.testing.assert_array_equal(got.data, vals)
                    assert got.data.dtype == vals.dtype or vals.dtype == np.float16
                    np.testing.assert_array_equal(got.indices, cols)
                    np.testing.assert_array_equal(got.indptr, indptr)
                else:
                    vals, coords = expected
                    np.testing.assert_array_equal(got.data, vals)
                    np.testing.assert_array_equal(
                        np.stack([np.asarray(c) for c in got.coords]), coords
                    )
