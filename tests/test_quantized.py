"""quantized_group (GPTQ): packing checked against an independent packer written here from
the GPTQ convention, dequantization against plain numpy arithmetic, element by element."""

from __future__ import annotations

import numpy as np
import pytest
import ztensor
from conftest import needs_torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ztensor_array as zt
from ztensor_array import constants, manifest, validation
from ztensor_array.errors import FormatError, UnsupportedError, ZTensorError
from ztensor_array.manifest import Component, Manifest, Object


def pack_columns(values: np.ndarray, bits: int, word_bits: int = 32) -> np.ndarray:
    """GPTQ packing, written independently with Python big integers: for every column, the
    values of that column (top to bottom) form one little-endian bit stream, `bits` per
    value; the stream is cut into `word_bits`-wide words stored top to bottom."""
    n_in, n_cols = values.shape
    n_words = n_in * bits // word_bits
    out = np.zeros((n_words, n_cols), dtype=f"<u{word_bits // 8}")
    for c in range(n_cols):
        stream = 0
        for i in range(n_in):
            stream |= int(values[i, c]) << (i * bits)
        for w in range(n_words):
            out[w, c] = (stream >> (w * word_bits)) & ((1 << word_bits) - 1)
    return out.view(f"<i{word_bits // 8}")


def expected(q, z, s, group_of, zero_offset=0):
    """W[n, k] = (q[k, n] - (z[g, n] + zero_offset)) * s[g, n], in float32, cast once."""
    zf = z.astype(np.float32) + np.float32(zero_offset)
    w = (q.astype(np.float32) - zf[group_of]) * s.astype(np.float32)[group_of]
    return w.T.astype(s.dtype)


def make(rng, n_out, n_in, bits, group_size, scale_dtype=np.float16):
    groups = -(-n_in // group_size)
    q = rng.integers(0, 1 << bits, size=(n_in, n_out))
    z = rng.integers(0, 1 << bits, size=(groups, n_out))
    s = (rng.random((groups, n_out)) * 0.1 + 0.001).astype(scale_dtype)
    return q, z, s


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_dequantize_matches_numpy(tmp_path, bits):
    rng = np.random.default_rng(bits)
    n_out, n_in, gs = 64, 256, 32
    q, z, s = make(rng, n_out, n_in, bits, gs)
    path = tmp_path / "q.zt"
    with zt.Writer(path) as w:
        w.add_quantized_group(
            "w",
            pack_columns(q, bits),
            s,
            pack_columns(z.T, bits).T,
            (n_out, n_in),
            bits=bits,
            group_size=gs,
        )
    with zt.Reader(path) as r:
        got = r.read_tensor("w")
        attrs = r.metadata("w").attributes
        assert r.metadata("w").dtype == np.float16  # what read_tensor returns
    want = expected(q, z, s, np.arange(n_in) // gs)
    assert got.shape == (n_out, n_in) and got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
    assert attrs["bits"] == bits and attrs["group_size"] == gs
    assert (
        attrs["packing"]
        == {2: "16_per_i32", 3: "32_per_3xi32", 4: "8_per_i32", 8: "4_per_i32"}[bits]
    )


def test_nibble_order_by_hand(tmp_path):
    # one output column, 8 inputs packed in one int32: input k sits in bits [4k, 4k+4)
    word = np.array([[0x76543210]], dtype=np.int32)
    scales = np.array([[1.0]], dtype=np.float32)
    zeros = np.array([[0.0]], dtype=np.float32)  # float zero points, stored plainly
    path = tmp_path / "n.zt"
    with zt.Writer(path) as w:
        w.add_quantized_group("w", word, scales, zeros, (1, 8), bits=4, group_size=8)
    with zt.Reader(path) as r:
        np.testing.assert_array_equal(r.read_tensor("w"), [[0, 1, 2, 3, 4, 5, 6, 7]])


def test_three_bit_value_straddles_words(tmp_path):
    # 32 three-bit inputs in 3 words; input 10 has its low 2 bits at the top of word 0 and
    # its high bit at the bottom of word 1 (GPTQ-for-LLaMa's 3-bit layout)
    q = np.zeros((32, 1), dtype=np.int64)
    q[10, 0] = 0b101
    words = np.array([[1 << 30], [1], [0]], dtype=np.int64).astype(np.uint32).view(np.int32)
    np.testing.assert_array_equal(pack_columns(q, 3), words)
    path = tmp_path / "t.zt"
    with zt.Writer(path) as w:
        w.add_quantized_group(
            "w",
            words,
            np.ones((1, 1), np.float32),
            np.zeros((1, 1), np.float32),
            (1, 32),
            bits=3,
            group_size=32,
        )
    with zt.Reader(path) as r:
        got = r.read_tensor("w")
    assert got[0, 10] == 5 and np.count_nonzero(got) == 1


def _float_zeros_file(tmp_path):
    """A GPTQ tensor with float zero points and act-order g_idx ("fz", compressed, with a
    digest) and one with integer zeros stored with the v1 offset ("v1")."""
    rng = np.random.default_rng(7)
    n_out, n_in, gs, bits = 16, 64, 16, 4
    q, _, s = make(rng, n_out, n_in, bits, gs, np.float32)
    zf = rng.random((n_in // gs, n_out)).astype(np.float16) * 8
    g_idx = rng.permutation(np.arange(n_in) // gs).astype(np.int32)  # act-order
    zi = rng.integers(1, 16, size=(n_in // gs, n_out))
    path = tmp_path / "f.zt"
    packed = pack_columns(q, bits)
    with zt.Writer(path) as w:
        w.add_quantized_group(
            "fz",
            packed,
            s,
            zf,
            (n_out, n_in),
            bits=4,
            group_size=gs,
            g_idx=g_idx,
            compress=True,
            checksum="crc32c",
        )
        w.add_quantized_group(
            "v1",
            packed,
            s,
            pack_columns((zi - 1).T, bits).T,
            (n_out, n_in),
            bits=4,
            group_size=gs,
            zero_offset=1,
        )
    return path, q, zf, zi, s, g_idx, packed, gs, n_in


def test_float_zeros_g_idx_offset_and_components(tmp_path):
    path, q, zf, zi, s, g_idx, packed, gs, n_in = _float_zeros_file(tmp_path)
    with zt.Reader(path, verify=True) as r:
        np.testing.assert_array_equal(r.read_tensor("fz"), expected(q, zf, s, g_idx))
        np.testing.assert_array_equal(
            r.read_tensor("v1"), expected(q, zi - 1, s, np.arange(n_in) // gs, 1)
        )
        parts = r.read_components("fz")
        assert set(parts) == {"packed_weight", "scales", "zeros", "g_idx"}
        np.testing.assert_array_equal(parts["packed_weight"], packed.reshape(-1))
        np.testing.assert_array_equal(parts["zeros"], zf.reshape(-1))
        assert parts["zeros"].dtype == np.float16


@needs_torch
def test_float_zeros_g_idx_to_torch(tmp_path):
    path, q, zf, _, s, g_idx, *_ = _float_zeros_file(tmp_path)
    with zt.Reader(path, verify=True) as r:
        t = r.read_tensor("fz", to="torch")
    np.testing.assert_array_equal(t.numpy(), expected(q, zf, s, g_idx))


def test_u8_container_and_torch_inputs(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    rng = np.random.default_rng(3)
    q, z, s = make(rng, 8, 32, 2, 32, np.float32)
    packed = pack_columns(q, 2, word_bits=8).view(np.uint8)
    zeros = pack_columns(z.T, 2, word_bits=8).T.view(np.uint8)
    path = tmp_path / "u.zt"
    with zt.Writer(path) as w:
        w.add_quantized_group(
            "w",
            torch.from_numpy(packed.copy()),
            torch.from_numpy(s),
            torch.from_numpy(zeros.copy()),
            (8, 32),
            bits=2,
            group_size=-1,
        )
    with zt.Reader(path) as r:
        assert r.metadata("w").attributes["packing"] == "4_per_u8"
        np.testing.assert_array_equal(r.read_tensor("w"), expected(q, z, s, np.zeros(32, int)))


def test_inconsistent_parts_refused_at_write(tmp_path):
    rng = np.random.default_rng(1)
    q, z, s = make(rng, 16, 64, 4, 16)
    packed, zeros = pack_columns(q, 4), pack_columns(z.T, 4).T
    with zt.Writer(tmp_path / "bad.zt") as w:
        with pytest.raises(ZTensorError, match="scales"):
            w.add_quantized_group("a", packed, s[:-1], zeros, (16, 64), bits=4, group_size=16)
        with pytest.raises(ZTensorError, match="packed_weight"):
            w.add_quantized_group("b", packed, s, zeros, (16, 128), bits=4, group_size=16)
        with pytest.raises(ZTensorError, match="packing"):
            w.add_quantized_group(
                "c", packed, s, zeros, (16, 64), bits=4, group_size=16, packing="4_per_i32"
            )
        with pytest.raises(ZTensorError, match="container"):
            w.add_quantized_group(
                "d", packed.astype(np.float32), s, zeros, (16, 64), bits=4, group_size=16
            )
        with pytest.raises(ZTensorError, match="not supported"):
            w.add_quantized_group("e", packed, s, zeros, (16, 64), bits=9, group_size=16)
        w.add_tensor("ok", np.arange(3))


def _object(lengths, bits=4, group_size=16, shape=(16, 64), dtypes_=("i32", "f16", "i32")):
    comps, offset = {}, 64
    for role, dt in zip(("packed_weight", "scales", "zeros"), dtypes_):
        comps[role] = Component(dt, offset, lengths[role])
        offset += -(-lengths[role] // 64) * 64
    attrs = {"bits": bits, "group_size": group_size, "packing": "8_per_i32"}
    return Object(shape, "quantized_group", comps, attrs), offset


def test_structure_check_at_open():
    good = {"packed_weight": 16 * 64 // 2, "scales": 4 * 16 * 2, "zeros": 4 * 16 // 2}
    obj, end = _object(good)
    validation.validate(Manifest({"w": obj}), end)
    for role in good:
        bad = dict(good, **{role: good[role] + (4 if role != "scales" else 2)})
        obj, end = _object(bad)
        with pytest.raises(FormatError, match=role):
            validation.validate(Manifest({"w": obj}), end)
    obj, end = _object(good, group_size=0)
    with pytest.raises(FormatError, match="group_size"):
        validation.validate(Manifest({"w": obj}), end)


def _write_raw(path, objects, blobs):
    """A file assembled from our manifest encoder, for layouts our Writer does not make."""
    data = bytearray(constants.MAGIC)
    comps_at = {}
    for key, blob in blobs.items():
        data += bytes(-len(data) % 64)
        comps_at[key] = len(data)
        data += blob
    objs = {}
    for name, (shape, fmt, roles, attrs) in objects.items():
        objs[name] = Object(
            shape,
            fmt,
            {
                role: Component(dt, comps_at[(name, role)], len(blobs[(name, role)]))
                for role, dt in roles.items()
            },
            attrs,
        )
    mbytes = manifest.encode(Manifest(objs))
    path.write_bytes(bytes(data) + mbytes + manifest.footer(mbytes))


def test_unknown_variant_opens_and_reads_parts(tmp_path):
    # a v1.2-style quantized_group with roles we do not know: the file still opens
    path = tmp_path / "v.zt"
    data = np.arange(8, dtype=np.uint8).tobytes()
    scales = np.ones(2, np.float16).tobytes()
    dense = np.arange(4, dtype=np.float32).tobytes()
    _write_raw(
        path,
        {
            "q": ((4, 4), "quantized_group", {"data": "u8", "scales": "f16"}, {"bits": 4}),
            "x": ((4,), "dense", {"data": "f32"}, None),
        },
        {("q", "data"): data, ("q", "scales"): scales, ("x", "data"): dense},
    )
    with zt.Reader(path) as r:
        np.testing.assert_array_equal(r.read_tensor("x"), np.arange(4, dtype=np.float32))
        with pytest.raises(UnsupportedError, match="'q'"):
            r.read_tensor("q")
        parts = r.read_components("q")
        assert parts["data"].tobytes() == data and parts["scales"].tobytes() == scales


def test_g_idx_out_of_range_is_a_format_error(tmp_path):
    rng = np.random.default_rng(2)
    q, z, s = make(rng, 8, 32, 4, 16)
    path = tmp_path / "g.zt"
    with zt.Writer(path) as w:
        w.add_quantized_group(
            "w",
            pack_columns(q, 4),
            s,
            pack_columns(z.T, 4).T,
            (8, 32),
            bits=4,
            group_size=16,
            g_idx=np.full(32, 2, np.int32),
        )
    with zt.Reader(path) as r, pytest.raises(FormatError, match="g_idx"):
        r.read_tensor("w")


def test_reference_opens_file_with_quantized_group(tmp_path):
    rng = np.random.default_rng(4)
    q, z, s = make(rng, 8, 32, 4, 16)
    path = tmp_path / "ref.zt"
    with zt.Writer(path) as w:
        w.add_tensor("dense", np.arange(6, dtype=np.int16).reshape(2, 3))
        w.add_quantized_group(
            "w", pack_columns(q, 4), s, pack_columns(z.T, 4).T, (8, 32), bits=4, group_size=16
        )
    r = ztensor.Reader(str(path))
    assert sorted(r.tensor_names) == ["dense", "w"]
    np.testing.assert_array_equal(r.read_tensor("dense"), np.arange(6).reshape(2, 3))


@settings(max_examples=25, deadline=None)
@given(
    bits=st.sampled_from([2, 3, 4, 8]),
    n_out_words=st.integers(1, 3),
    in_blocks=st.integers(1, 3),
    group_size=st.sampled_from([-1, 8, 32, 40]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_roundtrip(tmp_path_factory, bits, n_out_words, in_blocks, group_size, seed):
    rng = np.random.default_rng(seed)
    n_out, n_in = 32 * n_out_words, 32 * in_blocks
    gs = n_in if group_size == -1 else group_size
    q, z, s = make(rng, n_out, n_in, bits, gs)
    path = tmp_path_factory.mktemp("p") / "p.zt"
    with zt.Writer(path) as w:
        w.add_quantized_group(
            "w",
            pack_columns(q, bits),
            s,
            pack_columns(z.T, bits).T,
            (n_out, n_in),
            bits=bits,
            group_size=group_size,
        )
    with zt.Reader(path) as r:
        np.testing.assert_array_equal(r.read_tensor("w"), expected(q, z, s, np.arange(n_in) // gs))
