"""``ztensor convert`` of safetensors files made by safetensors.numpy: every dtype, metadata,
several inputs, deletion of originals, and hostile headers refused with a clear error."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from conftest import peak_rss_in_subprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file
from test_cli import assert_one_line_error, no_temp_files, ztensor

import ztensor_array as zt
from ztensor_array.convert import convert as convert_files
from ztensor_array.errors import ZTensorError

DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _arrays(rng):
    out = {}
    for i, (st_name, dt) in enumerate(DTYPES.items()):
        shape = (3, i + 1, 2)
        if st_name == "BOOL":
            out[f"t_{st_name}"] = rng.random(shape) > 0.5
        elif np.dtype(dt).kind in "iu":
            out[f"t_{st_name}"] = rng.integers(0, 100, shape).astype(dt)
        else:
            out[f"t_{st_name}"] = rng.standard_normal(shape).astype(dt)
    out["scalar"] = np.array(2.5, dtype=np.float32)
    out["empty"] = np.zeros((0, 4), dtype=np.float32)
    return out


def _assert_equal_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8))


def test_every_dtype_and_metadata(tmp_path):
    """Every safetensors dtype, F8 included (written by safetensors.torch, since
    safetensors.numpy has no bf16/f8), read back bit for bit."""
    torch = pytest.importorskip("torch", reason="torch is the optional `torch` extra")
    from safetensors.torch import load_file as torch_load
    from safetensors.torch import save_file as torch_save

    arrays = _arrays(np.random.default_rng(0))
    tensors = {}
    for name, arr in arrays.items():
        if (
            arr.dtype.kind in "biuf"
            and arr.dtype.name in ("bool", "float64", "float32", "float16")
            or arr.dtype.kind in "iu"
        ):
            tensors[name] = torch.from_numpy(arr.copy())
        else:  # ml_dtypes: hand the bits to torch
            tdt = {
                "bfloat16": torch.bfloat16,
                "float8_e4m3fn": torch.float8_e4m3fn,
                "float8_e5m2": torch.float8_e5m2,
            }[arr.dtype.name]
            bits = torch.from_numpy(arr.view(np.uint8 if arr.itemsize == 1 else np.int16).copy())
            tensors[name] = bits.view(tdt)
    src = tmp_path / "m.safetensors"
    torch_save(tensors, src, metadata={"format": "pt", "note": "hi"})
    want = torch_load(src)  # the oracle: what safetensors itself reads back
    out = tmp_path / "m.zt"
    proc = ztensor("convert", src, "-o", out)
    assert "tensors" in proc.stdout and proc.stderr == ""
    with zt.Reader(out) as r:
        assert r.attributes == {"format": "pt", "note": "hi"}
        assert set(r.tensor_names) == set(want)
        for name, t in want.items():
            got = r.read_tensor(name)
            assert got.dtype == np.dtype(arrays[name].dtype) and got.shape == tuple(t.shape)
            flat = t.contiguous().reshape(-1)
            want_bits = flat.view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
            np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want_bits)


def test_numpy_written_file(tmp_path):
    arrays = {
        k: v
        for k, v in _arrays(np.random.default_rng(1)).items()
        if v.dtype.name not in ("bfloat16", "float8_e4m3fn", "float8_e5m2")
    }
    src = tmp_path / "n.safetensors"
    save_file(arrays, src)
    want = load_file(src)
    out = tmp_path / "n.zt"
    ztensor("convert", src, "-o", out)
    with zt.Reader(out) as r:
        for name, arr in want.items():
            _assert_equal_bits(r.read_tensor(name), arr)


@pytest.mark.parametrize(
    "flags",
    [["-c"], ["-l", "10"], ["-c", "-l", "1", "--checksum", "sha256"], ["--checksum", "crc32c"]],
)
def test_compression_and_checksum_flags(tmp_path, flags):
    arrays = {"a": np.arange(5000, dtype=np.float32).reshape(50, 100)}
    src = tmp_path / "a.safetensors"
    save_file(arrays, src)
    out = tmp_path / "a.zt"
    ztensor("convert", src, "-o", out, *flags)
    with zt.Reader(out) as r:
        comp = r.manifest.objects["a"].components["data"]
        compressed = "-c" in flags or "-l" in flags
        assert comp.encoding == ("zstd" if compressed else "raw")
        if "--checksum" in flags:
            algo = flags[flags.index("--checksum") + 1]
            assert comp.digest.startswith(algo + ":")
        else:
            assert comp.digest is None
        np.testing.assert_array_equal(r.read_tensor("a", verify_checksum=True), arrays["a"])


def test_many_inputs_collisions_and_prefix(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"x": np.ones(3, np.float32), "y": np.zeros(2, np.int8)}, a)
    save_file({"x": np.full(3, 7, np.float32)}, b)
    out = tmp_path / "ab.zt"
    assert_one_line_error(
        ztensor("convert", a, b, "-o", out, check=False), "'x'", "--prefix-with-filename"
    )
    assert not out.exists() and no_temp_files(tmp_path)
    ztensor("convert", a, b, "-o", out, "--prefix-with-filename")
    with zt.Reader(out) as r:
        assert sorted(r.tensor_names) == ["a/x", "a/y", "b/x"]
        np.testing.assert_array_equal(r.read_tensor("b/x"), np.full(3, 7, np.float32))
    c = tmp_path / "c.safetensors"
    save_file({"z": np.arange(4, dtype=np.int64)}, c)
    out2 = tmp_path / "ac.zt"
    ztensor("convert", a, c, "-o", out2)
    assert sorted(zt.Reader(out2).tensor_names) == ["x", "y", "z"]


def test_refuses_to_overwrite_without_force(tmp_path):
    src = tmp_path / "a.safetensors"
    save_file({"x": np.ones(3, np.float32)}, src)
    out = tmp_path / "a.zt"
    out.write_bytes(b"keep me")
    assert_one_line_error(ztensor("convert", src, "-o", out, check=False), "--force")
    assert out.read_bytes() == b"keep me"
    ztensor("convert", src, "-o", out, "--force")
    np.testing.assert_array_equal(zt.Reader(out).read_tensor("x"), np.ones(3, np.float32))


def test_delete_original_only_after_success(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"x": np.ones(3, np.float32)}, a)
    save_file({"x": np.ones(3, np.float32)}, b)  # collides: the conversion fails
    out = tmp_path / "o.zt"
    ztensor("convert", "--delete-original", a, b, "-o", out, check=False)
    assert a.exists() and b.exists() and not out.exists()
    b.unlink()
    save_file({"y": np.arange(3, dtype=np.int16)}, b)
    proc = ztensor("convert", "--delete-original", a, b, "-o", out)
    assert not a.exists() and not b.exists() and "deleted" in proc.stdout
    with zt.Reader(out) as r:
        np.testing.assert_array_equal(r.read_tensor("y"), np.arange(3, dtype=np.int16))


def test_format_from_content_before_extension(tmp_path):
    src = tmp_path / "weights.bin"  # .bin usually means a torch pickle
    save_file({"x": np.arange(6, dtype=np.float64)}, src)
    out = tmp_path / "w.zt"
    ztensor("convert", src, "-o", out)
    np.testing.assert_array_equal(zt.Reader(out).read_tensor("x"), np.arange(6.0))
    ztensor("convert", "-f", "safetensors", src, "-o", tmp_path / "w2.zt")


# --------------------------------------------------------------------------- hostile input


def _raw_safetensors(path, header: dict, data: bytes = b"", header_len: int | None = None):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    n = len(text) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + text + data)


HOSTILE = {
    "header_claims_100GB": (
        {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
        bytes(8),
        100 << 30,
        "header claims",
    ),
    "tensor_claims_100GB": (
        {"x": {"dtype": "F32", "shape": [25 << 30], "data_offsets": [0, 100 << 30]}},
        bytes(8),
        None,
        "beyond",
    ),
    "overlapping_offsets": (
        {
            "x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "y": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
        },
        bytes(24),
        None,
        "overlap",
    ),
    "bad_dtype": (
        {"x": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}},
        bytes(16),
        None,
        "F128",
    ),
    "size_mismatch": (
        {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
        bytes(8),
        None,
        "needs 12",
    ),
    "negative_shape": (
        {"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
        bytes(4),
        None,
        "shape",
    ),
    # the sizes multiply to 0 bytes, but numpy holds no such array (a ValueError from
    # np.zeros used to escape, naming nothing)
    "shape_2_to_the_64_by_0": (
        {"x": {"dtype": "F32", "shape": [1 << 64, 0], "data_offsets": [0, 0]}},
        b"",
        None,
        "object 'x': shape [18446744073709551616, 0] is too large",
    ),
    "100_dimensions": (
        {"x": {"dtype": "F32", "shape": [1] * 100, "data_offsets": [0, 4]}},
        bytes(4),
        None,
        "object 'x': 100 dimensions (numpy arrays have at most 64)",
    ),
    "100_empty_dimensions": (
        {"x": {"dtype": "F32", "shape": [0] * 100, "data_offsets": [0, 0]}},
        b"",
        None,
        "object 'x': 100 dimensions",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_are_refused(tmp_path, case):
    header, data, header_len, needle = HOSTILE[case]
    src = tmp_path / "bad.safetensors"
    _raw_safetensors(src, header, data, header_len)
    out = tmp_path / "bad.zt"
    assert_one_line_error(
        ztensor("convert", src, "-o", out, check=False), "bad.safetensors", needle
    )
    assert not out.exists() and no_temp_files(tmp_path)


def test_deeply_nested_json_header(tmp_path):
    """json.loads recurses: 100k nested arrays raised a RecursionError naming no file."""
    src = tmp_path / "deep.safetensors"
    text = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    src.write_bytes(struct.pack("<Q", len(text)) + text)
    proc = ztensor("convert", src, "-o", tmp_path / "deep.zt", check=False)
    assert_one_line_error(proc, "deep.safetensors", "too deeply")


def test_header_that_is_not_json(tmp_path):
    src = tmp_path / "x.safetensors"
    src.write_bytes(struct.pack("<Q", 8) + b"{nope!!}")
    assert_one_line_error(ztensor("convert", src, "-o", tmp_path / "x.zt", check=False), "JSON")


@pytest.mark.parametrize("flags", [[], ["-c"]])
def test_conversion_memory_is_flat(tmp_path, flags):
    """A 96 MiB file converts with far less resident memory than its size: tensors are
    mmap views written straight out (big ones block by block) and their pages dropped."""
    src = tmp_path / "big.safetensors"
    rng = np.random.default_rng(0)
    tensors = {f"w{i}": rng.standard_normal(1 << 21, dtype=np.float32) for i in range(6)}
    tensors.update({f"s{i}": rng.standard_normal(1 << 19, dtype=np.float32) for i in range(16)})
    tensors["big"] = rng.standard_normal(4 << 20, dtype=np.float32)  # 16 MiB
    save_file(tensors, src)
    del tensors
    out = tmp_path / "big.zt"
    level = 3 if flags else 0
    tiny = tmp_path / "tiny.safetensors"
    save_file({"t": np.ones(256, np.float32)}, tiny)

    def peak_of(path, dst):
        code = "from ztensor_array.convert import convert\nconvert(sys.argv[1:2], sys.argv[2], "
        return peak_rss_in_subprocess(code + f"compress={level})", str(path), str(dst))

    # the same conversion of a 1 KiB file is the baseline: imports, pools, zstd contexts
    grown = peak_of(src, out) - peak_of(tiny, tmp_path / "tiny.zt")
    assert grown < 48 << 20, f"peak RSS grew by {grown >> 10} KiB for a 96 MiB file"
    with zt.Reader(out) as r:
        assert len(r) == 23
        np.testing.assert_array_equal(r.read_tensor("big")[:5], load_file(src)["big"][:5])


# --------------------------------------------------------------------------- properties


_ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "I8", "U64", "BOOL", "BF16", "F8_E5M2", "X9"]),
        "shape": st.lists(st.integers(-1, 4), max_size=3),
        "data_offsets": st.lists(st.integers(-1, 64), min_size=0, max_size=3),
    }
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.dictionaries(st.text("abc", min_size=1, max_size=3), _ENTRY, max_size=4),
    data_len=st.integers(0, 64),
)
def test_random_headers_convert_exactly_or_fail_cleanly(tmp_path, header, data_len):
    """Whatever the header says, the converter either produces exactly what the safetensors
    library reads, or raises a ZTensorError; never another exception."""
    from safetensors import SafetensorError

    src = tmp_path / "h.safetensors"
    out = tmp_path / "h.zt"
    _raw_safetensors(src, header, bytes(range(data_len)))
    if out.exists():
        out.unlink()
    try:
        oracle = load_file(src)
    except (SafetensorError, Exception):  # noqa: BLE001 - the library's verdict: invalid
        oracle = None
    try:
        convert_files([str(src)], str(out))
    except ZTensorError:
        assert not out.exists()
        return
    assert oracle is not None, "we accepted a file the safetensors library refuses"
    with zt.Reader(out) as r:
        assert set(r.tensor_names) == set(oracle)
        for name, arr in oracle.items():
            _assert_equal_bits(r.read_tensor(name), arr)
