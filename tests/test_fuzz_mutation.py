"""Truncated and mutated files: a ZTensorError or arrays of the declared shapes and dtypes,
nothing else (no other exception, no crash, no hang). With digests on every component and
verification on, a changed data byte must raise.
"""

from __future__ import annotations

import contextlib
import os
import signal

import cbor2
import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ztensor_array as za
from ztensor_array.errors import ChecksumError, ZTensorError

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _manifest(data: bytes) -> dict:
    n = int.from_bytes(data[-16:-8], "little")
    return cbor2.loads(data[-16 - n : -16])


def _build(path, checksum: str | None) -> bytes:
    rng = np.random.default_rng(5)
    m = sp.random(6, 9, density=0.3, format="csr", random_state=3, dtype=np.float32)
    coo = sp.random(5, 4, density=0.4, random_state=4, dtype=np.float64).tocoo()
    with za.Writer(path) as w:
        w.attributes.update({"title": "fuzz", "n": 3})
        w.add_tensor("raw_f32", rng.standard_normal((4, 5)).astype(np.float32), checksum=checksum)
        w.add_tensor("z_i16", np.arange(300, dtype=np.int16), compress=True, checksum=checksum)
        w.add_tensor("bool", rng.integers(0, 2, 17).astype(bool), checksum=checksum)
        w.add_tensor(
            "f8",
            rng.standard_normal(12).astype(ml_dtypes.float8_e4m3fn),
            checksum=checksum,
            attributes={"unit": "x", "k": [1, 2]},
        )
        w.add_tensor("c64", (rng.standard_normal(3) + 1j).astype(np.complex64), checksum=checksum)
        w.add_tensor(
            "bf16_z",
            rng.standard_normal((3, 3)).astype(ml_dtypes.bfloat16),
            compress=5,
            checksum=checksum,
        )
        w.add_tensor("scalar", np.array(1.5), checksum=checksum)
        w.add_tensor("empty", np.zeros((0, 3), np.float32), checksum=checksum)
        w.add_sparse_csr(
            "csr", m.data, m.indices, m.indptr, m.shape, compress=True, checksum=checksum
        )
        w.add_sparse_coo(
            "coo", coo.data, np.stack([coo.row, coo.col]), coo.shape, checksum=checksum
        )
    return path.read_bytes()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "base.zt"
    return _build(path, None)


@pytest.fixture(scope="module")
def digested(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "digested.zt"
    data = _build(path, "crc32c")
    spans = [
        (c["offset"], c["offset"] + c["length"], name)
        for name, o in _manifest(data)["objects"].items()
        for c in o["components"].values()
        if c["length"]
    ]
    return data, spans


class Hang(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: int):
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check_any(path, verify: bool) -> None:
    """Open and read everything: a ZTensorError, or values matching the declared metadata."""
    with _deadline(20):
        try:
            with za.Reader(path, verify=verify) as r:
                _ = r.attributes
                for md in r:
                    try:
                        value = r.read_tensor(md.name)
                    except ZTensorError:
                        continue
                    assert tuple(value.shape) == tuple(md.shape), md
                    if isinstance(value, np.ndarray):
                        assert value.dtype == md.dtype, md
                        with np.errstate(all="ignore"):  # garbage floats may be NaN
                            np.asarray(value).sum()  # touch every byte
                    else:  # scipy.sparse
                        assert sp.issparse(value)
                        value.toarray()
        except ZTensorError:
            pass


def test_base_files_are_valid(base, digested, tmp_path):
    for data in (base, digested[0]):
        p = tmp_path / "ok.zt"
        p.write_bytes(data)
        with za.Reader(p, verify=True) as r:
            assert len(r) == 10
            for n in r.tensor_names:
                r.read_tensor(n)


def _manifest_start(data: bytes) -> int:
    return len(data) - 16 - int.from_bytes(data[-16:-8], "little")


@contextlib.contextmanager
def _in_place(tmp_path, data: bytes):
    """A file holding ``data`` and a function that flips one byte of it in place (rewriting
    whole small files per case is slow on ext4, which flushes on truncate)."""
    p = tmp_path / "case.zt"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDWR)

    @contextlib.contextmanager
    def flipped(pos: int, mask: int):
        os.pwrite(fd, bytes([data[pos] ^ mask]), pos)
        try:
            yield p
        finally:
            os.pwrite(fd, bytes([data[pos]]), pos)

    try:
        yield flipped
    finally:
        os.close(fd)


def _truncations(base, tmp_path, lengths) -> None:
    for n in lengths:
        p = tmp_path / f"t{n}.zt"  # a fresh file per case (see _in_place)
        p.write_bytes(base[:n])
        with pytest.raises(ZTensorError):  # the footer is gone: nothing can be trusted
            with _deadline(20), za.Reader(p) as r:
                [r.read_tensor(x) for x in r.tensor_names]
        p.unlink()


def _flips(base, tmp_path, positions, masks) -> None:
    with _in_place(tmp_path, base) as flipped:
        for pos in positions:
            for mask in masks:
                with flipped(pos, mask) as p:
                    _check_any(p, verify=False)


def test_truncations(base, tmp_path):
    n = len(base)
    edges = set(range(0, 80)) | set(range(_manifest_start(base) - 8, n))
    _truncations(base, tmp_path, sorted(edges | set(range(0, n, 17))))


def test_single_byte_flips(base, tmp_path):
    # every byte of the header, manifest and footer; a sample of the blob bytes
    start = _manifest_start(base)
    positions = list(range(0, 64)) + list(range(64, start, 5)) + list(range(start, len(base)))
    _flips(base, tmp_path, positions, (0xFF,))


@pytest.mark.slow
def test_every_truncation(base, tmp_path):
    _truncations(base, tmp_path, range(len(base)))


@pytest.mark.slow
def test_every_single_byte_flip(base, tmp_path):
    _flips(base, tmp_path, range(len(base)), (0x01, 0x80, 0xFF))


def test_every_data_byte_flip_is_caught_by_verification(digested, tmp_path):
    data0, spans = digested
    with _in_place(tmp_path, data0) as flipped:
        for start, end, name in spans:
            for pos in range(start, end):
                with flipped(pos, 0x04) as p, _deadline(20), za.Reader(p, verify=True) as r:
                    with pytest.raises(ChecksumError) as info:
                        r.read_tensor(name)
                    assert info.value.obj == name


@SETTINGS
@given(data=st.data())
def test_random_mutations(base, tmp_path, data):
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8), label="count")):
        pos = data.draw(st.integers(0, len(buf) - 1), label="pos")
        buf[pos] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(buf))), label="cut")
    if cut is not None:
        buf = buf[:cut]
    insert = data.draw(st.binary(max_size=8), label="insert")
    at = data.draw(st.integers(0, len(buf)), label="at")
    buf[at:at] = insert
    p = tmp_path / "r.zt"
    p.write_bytes(bytes(buf))
    _check_any(p, verify=data.draw(st.booleans(), label="verify"))


@SETTINGS
@given(data=st.data())
def test_random_data_mutations_with_digests_raise(digested, tmp_path, data):
    data0, spans = digested
    start, end, name = data.draw(st.sampled_from(spans), label="component")
    buf = bytearray(data0)
    pos = data.draw(st.integers(start, end - 1), label="pos")
    buf[pos] ^= data.draw(st.integers(1, 255), label="mask")
    for _ in range(data.draw(st.integers(0, 3), label="more")):  # more bytes in that blob
        q = data.draw(st.integers(start, end - 1))
        buf[q] = data.draw(st.integers(0, 255))
    assume(buf[start:end] != data0[start:end])  # the later writes may undo the flip
    p = tmp_path / "d.zt"
    p.write_bytes(bytes(buf))
    with _deadline(20), za.Reader(p) as r:
        with pytest.raises(ZTensorError):
            r.read_tensor(name, verify_checksum=True)
        _check_any(p, verify=True)


@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_random_manifest_mutations(base, tmp_path, data):
    """Concentrated on the CBOR manifest, where structure lives."""
    n = int.from_bytes(base[-16:-8], "little")
    start = len(base) - 16 - n
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(start, len(base) - 17))
        buf[pos] = data.draw(st.integers(0, 255))
    p = tmp_path / "m.zt"
    p.write_bytes(bytes(buf))
    _check_any(p, verify=False)


# --------------------------------------------------------------------------- structure-aware

_DTYPES = ["f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2", "complex64", "complex128"]
_DTYPES += ["i64", "i32", "i16", "i8", "u64", "u32", "u16", "u8", "bool"]
_ROLES = {
    "dense": ["data"],
    "sparse_csr": ["values", "indices", "indptr"],
    "sparse_coo": ["values", "coords"],
    "chunked": ["0", "0.0", "1.0", "c0", "c0.0"],
    "quantized_group": ["packed_weight", "scales", "zeros", "g_idx"],
    "ggml_quantized": ["data", "blocks"],
    "hologram": ["data"],
}


def _zstd(data: bytes) -> bytes:
    import zstandard

    c = zstandard.ZstdCompressor(level=1).compressobj()
    return c.compress(data) + c.flush()


@st.composite
def _component(draw, role_pool):
    encoding = draw(st.sampled_from(["raw", "raw", "zstd"]))
    comp = {
        "dtype": draw(st.sampled_from(_DTYPES)),
        "offset": 64 * draw(st.integers(1, 8)),
        "length": draw(st.sampled_from([0, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 100])),
    }
    if encoding == "zstd":
        comp["encoding"] = "zstd"
    if draw(st.booleans()):
        comp["uncompressed_length"] = draw(st.integers(0, 200))
    if draw(st.integers(0, 4)) == 0:
        comp["type"] = draw(st.sampled_from(["f8_e4m3fn", "f8_e5m2", "complex64", "complex128"]))
    if draw(st.integers(0, 4)) == 0:
        comp["digest"] = draw(st.sampled_from(["crc32c:0x00000000", "sha256:00", "x:1"]))
    return comp


@st.composite
def _manifests(draw):
    objects = {}
    for i in range(draw(st.integers(1, 3))):
        fmt = draw(st.sampled_from(list(_ROLES)))
        roles = draw(st.lists(st.sampled_from(_ROLES[fmt]), min_size=1, max_size=4, unique=True))
        obj = {
            "shape": draw(st.lists(st.integers(0, 6), max_size=3)),
            "format": fmt,
            "components": {r: draw(_component(roles)) for r in roles},
        }
        if draw(st.booleans()):
            obj["attributes"] = draw(
                st.dictionaries(
                    st.sampled_from(
                        [
                            "bits",
                            "group_size",
                            "packing",
                            "chunks",
                            "fill_value",
                            "ggml_type",
                            "chunk_shape",
                            "sym",
                        ]
                    ),
                    st.one_of(
                        st.integers(-2, 64),
                        st.text(max_size=6),
                        st.lists(st.integers(0, 4), max_size=3),
                        st.none(),
                    ),
                )
            )
        objects[f"o{i}"] = obj
    return objects


@settings(SETTINGS, max_examples=150)
@given(objects=_manifests(), data=st.data())
def test_random_manifests(tmp_path, objects, data):
    """Hand-made manifests of every format over random blobs: never anything but
    ZTensorError or declared shapes."""
    from conftest import build_file

    blobs = {}
    for obj in objects.values():
        for comp in obj["components"].values():
            payload = data.draw(st.binary(min_size=comp["length"], max_size=comp["length"]))
            if comp.get("encoding") == "zstd":
                payload = _zstd(data.draw(st.binary(max_size=200)))
                comp["length"] = len(payload)
            blobs[comp["offset"]] = payload
    p = tmp_path / "g.zt"
    build_file(p, objects, blobs, pad_to=64 * 10)
    _check_any(p, verify=data.draw(st.booleans()))


_FIELD_VALUES = {
    "dtype": st.sampled_from(_DTYPES + ["f4", 7]),
    "offset": st.one_of(st.integers(0, 3000), st.sampled_from([64, 128, 192, 1 << 64])),
    "length": st.one_of(st.integers(0, 400), st.sampled_from([1 << 40, 2**64 - 1])),
    "encoding": st.sampled_from(["raw", "zstd", "lz4", 0]),
    "uncompressed_length": st.one_of(st.integers(0, 3000), st.just(1 << 50)),
    "type": st.sampled_from(["f8_e4m3fn", "f8_e5m2", "complex64", "complex128", "bf16", "x"]),
    "digest": st.sampled_from(["crc32c:0x00000000", "sha256:", "crc32c:zz", "md5:1"]),
}


@settings(SETTINGS, max_examples=200)
@given(data=st.data())
def test_structured_manifest_mutations(base, tmp_path, data):
    """Change manifest fields (not bytes) of a valid file, keep every blob: the reader must
    still answer with a ZTensorError or values of the declared shapes and dtypes."""
    start = _manifest_start(base)
    root = _manifest(base)
    objects = root["objects"]
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        name = data.draw(st.sampled_from(sorted(objects)), label="object")
        obj = objects[name]
        what = data.draw(
            st.sampled_from(["shape", "dim", "format", "component", "drop", "rename", "attrs"]),
            label="what",
        )
        comps = obj["components"]
        if what == "shape":
            obj["shape"] = data.draw(st.lists(st.integers(0, 40), max_size=4))
        elif what == "dim" and obj["shape"]:
            i = data.draw(st.integers(0, len(obj["shape"]) - 1))
            obj["shape"][i] = max(0, obj["shape"][i] + data.draw(st.integers(-2, 2)))
        elif what == "format":
            obj["format"] = data.draw(st.sampled_from(["dense", "sparse_csr", "sparse_coo", "zz"]))
        elif what == "component" and comps:
            role = data.draw(st.sampled_from(sorted(comps)))
            field = data.draw(st.sampled_from(sorted(_FIELD_VALUES)))
            comps[role][field] = data.draw(_FIELD_VALUES[field])
        elif what == "drop" and comps:
            comps.pop(data.draw(st.sampled_from(sorted(comps))))
        elif what == "rename" and comps:
            role = data.draw(st.sampled_from(sorted(comps)))
            new = data.draw(st.sampled_from(["data", "values", "indices", "indptr", "coords"]))
            comps[new] = comps.pop(role)
        elif what == "attrs":
            obj["attributes"] = data.draw(
                st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers()))
            )
            if obj["attributes"] is None:
                del obj["attributes"]
    mb = cbor2.dumps(root)
    p = tmp_path / "s.zt"
    p.write_bytes(base[:start] + mb + len(mb).to_bytes(8, "little") + base[-8:])
    _check_any(p, verify=data.draw(st.booleans(), label="verify"))


@pytest.mark.parametrize("role", ["indices", "values"])
def test_huge_uncompressed_length_on_sparse_component(base, tmp_path, role):
    """Found by the fuzzer above in CI: a sparse component (whose size the shape does not
    fix) declaring a 1 PiB `uncompressed_length` must be refused at open, not allocated."""
    start = _manifest_start(base)
    root = _manifest(base)
    root["objects"]["csr"]["components"][role]["uncompressed_length"] = 1 << 50
    mb = cbor2.dumps(root)
    p = tmp_path / "huge.zt"
    p.write_bytes(base[:start] + mb + len(mb).to_bytes(8, "little") + base[-8:])
    with pytest.raises(ZTensorError, match="uncompressed_length") as info:
        za.Reader(p)
    assert "csr" in str(info.value) and role in str(info.value)
