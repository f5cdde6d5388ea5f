"""Shared fixtures: sample arrays of every dtype, the reference oracle, hand-built files.

Malformed files are built here with cbor2 and struct only (never with our writer), so the
tests of the reader do not depend on the code they test.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from collections.abc import Mapping
from typing import Any

import cbor2
import ml_dtypes
import numpy as np
import pytest
from hypothesis import settings

# CI (CI=true, set by the CI runner) explores a fixed set of examples so that a red run is
# reproducible and never a matter of luck; local runs explore new random examples each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

MAGIC = b"ZTEN1000"

# torch is the optional `torch` extra: tests that need it skip, saying so, where it is absent
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is the optional `torch` extra")

# zTensor dtype name -> numpy dtype (independent of ztensor_array.dtypes, as an oracle)
NUMPY_OF = {
    "f64": np.dtype("<f8"),
    "f32": np.dtype("<f4"),
    "f16": np.dtype("<f2"),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "f8_e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
    "f8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "complex64": np.dtype("<c8"),
    "complex128": np.dtype("<c16"),
    "i64": np.dtype("<i8"),
    "i32": np.dtype("<i4"),
    "i16": np.dtype("<i2"),
    "i8": np.dtype("i1"),
    "u64": np.dtype("<u8"),
    "u32": np.dtype("<u4"),
    "u16": np.dtype("<u2"),
    "u8": np.dtype("u1"),
    "bool": np.dtype("bool"),
}
ALL_DTYPES = tuple(NUMPY_OF)
# the 13 dtypes the reference 1.1.1 knows
CORE_DTYPES = tuple(d for d in ALL_DTYPES if not d.startswith(("f8", "complex")))
# the 1.1.1 reader's names for them (its metadata dtype_str)
LONG_NAME = {
    "f64": "float64",
    "f32": "float32",
    "f16": "float16",
    "bf16": "bfloat16",
    "i64": "int64",
    "i32": "int32",
    "i16": "int16",
    "i8": "int8",
    "u64": "uint64",
    "u32": "uint32",
    "u16": "uint16",
    "u8": "uint8",
    "bool": "bool",
}


def sample(dtype: str, shape: tuple[int, ...] = (3, 5), seed: int = 0) -> np.ndarray:
    """Deterministic values that exercise the dtype's range (extremes, signs, fractions)."""
    rng = np.random.default_rng(seed)
    dt = NUMPY_OF[dtype]
    n = int(np.prod(shape))
    if dtype == "bool":
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        vals = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
        if n >= 2:
            vals[0], vals[1] = info.min, info.max
        return vals.reshape(shape)
    if dt.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt).reshape(shape)
    return (rng.standard_normal(n) * 4).astype(dt).reshape(shape)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality of dtype, shape and element bytes (NaN-safe)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def assert_same(a, b) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


@pytest.fixture(scope="session")
def zref():
    """The reference implementation ztensor==1.1.1 (declared in the `test` extra)."""
    import ztensor

    return ztensor


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def fresh_memo():
    """No manifest kept from other tests, nor left for them (modules that count decodes
    or compare memoized with fresh state use it for every test)."""
    from ztensor_array import validation

    validation.forget_memo()
    yield
    validation.forget_memo()


# --------------------------------------------------------------------------- hand-built files


def torn_file(tmp_path):
    """(path, its bytes before the tear) of a file whose append crashed: blob bytes after
    the footer, no new footer."""
    import ztensor_array as zt

    path = tmp_path / "torn.zt"
    with zt.Writer(path) as w:
        w.add_tensor("a", np.arange(10, dtype=np.int32))
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b"\x00" * 56 + np.arange(100, dtype=np.float64).tobytes())
    return path, good


def component(dtype: str, offset: int, length: int, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"dtype": dtype, "offset": offset, "length": length}
    out.update(extra)
    return out


def build_file(
    path: str | os.PathLike,
    objects: Mapping[str, Any],
    blobs: Mapping[int, bytes],
    *,
    attributes: Mapping[str, Any] | None = None,
    version: str = "1.1.0",
    manifest_bytes: bytes | None = None,
    declared_size: int | None = None,
    head: bytes = MAGIC,
    tail: bytes = MAGIC,
    pad_to: int | None = None,
) -> bytes:
    """Write a v1 file from a manifest dict and {offset: bytes}; returns the file bytes.

    Every knob can be broken on purpose: the manifest bytes, its declared size, either magic.
    """
    body = bytearray(head)
    for offset in sorted(blobs):
        if offset > len(body):
            body += bytes(offset - len(body))
        body[offset : offset + len(blobs[offset])] = blobs[offset]
    if pad_to is not None and pad_to > len(body):
        body += bytes(pad_to - len(body))
    if manifest_bytes is None:
        root: dict[str, Any] = {"version": version}
        if attributes is not None:
            root["attributes"] = dict(attributes)
        root["objects"] = dict(objects)
        manifest_bytes = cbor2.dumps(root)
    size = len(manifest_bytes) if declared_size is None else declared_size
    data = bytes(body) + manifest_bytes + struct.pack("<Q", size) + tail
    with open(path, "wb") as f:
        f.write(data)
    return data


def dense_file(path, arrays: Mapping[str, np.ndarray], **kw) -> bytes:
    """A valid file of raw dense tensors, laid out by hand at 64-byte boundaries."""
    objects, blobs = {}, {}
    pos = 64
    for name, arr in arrays.items():
        data = np.ascontiguousarray(arr).tobytes()
        dtype = next(k for k, v in NUMPY_OF.items() if v == arr.dtype)
        objects[name] = {
            "shape": list(arr.shape),
            "format": "dense",
            "components": {"data": component(dtype, pos, len(data))},
        }
        blobs[pos] = data
        pos += -(-len(data) // 64) * 64 or 64
    return build_file(path, objects, blobs, **kw)


def read_all(reader) -> dict[str, Any]:
    return {n: reader.read_tensor(n) for n in reader.tensor_names}


_ANON_PRELUDE = """
import sys, threading, time
import numpy as np, xarray as xr, dask.array as da
from ztensor_array.backends.xarray import to_ztensor_dataset
"""
_ANON_PROBE = """
def anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
peak = [0]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
base = anon()
t = threading.Thread(target=sample)
t.start()
{action}
done.set()
t.join()
print(peak[0] - base)
"""


def anon_growth_in_subprocess(create: str, action: str, *args: str) -> int:
    """Peak growth of anonymous memory (RssAnon, which leaves out the file page cache), in
    bytes, while a fresh interpreter runs ``action`` (``sys.argv[1:]`` are ``args``): what
    a write really holds in memory, not what it caches. ``create`` (making the file) runs
    in an interpreter of its own first, so memory its allocator keeps after freeing cannot
    hide or inflate the growth of ``action``."""
    import subprocess
    import sys
    import textwrap

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    prelude = textwrap.dedent(_ANON_PRELUDE)
    create_code = prelude + textwrap.dedent(create)
    subprocess.run([sys.executable, "-c", create_code, *args], check=True, env=env)
    code = prelude + _ANON_PROBE.format(action=textwrap.dedent(action))
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env
    )
    return int(out.stdout.split()[-1])


def peak_rss_in_subprocess(code: str, *args: str) -> int:
    """Peak resident memory (VmHWM), in bytes, of a fresh interpreter that runs ``code``
    (``sys.argv[1:]`` are ``args``). Unlike a sampling thread it also sees peaks reached
    while C code holds the GIL (a zlib output buffer joined into one bytes object); it
    counts mapped file pages too, so compare runs that map alike."""
    import subprocess
    import sys

    peak = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\n{peak}", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1]) * 1024


def write_dense_zstd_dataset(ds, path: str) -> None:
    """A Dataset as other zTensor writers store it: dense zstd tensors with crc32c digests,
    dimension names in the reserved attribute (to_ztensor itself writes compressed variables
    as chunked objects)."""
    from ztensor_array import Writer

    with Writer(path, "w") as w:
        w.attributes = dict(ds.attrs)
        for name, v in ds.variables.items():
            attrs = {"_ARRAY_DIMENSIONS": list(v.dims), **v.attrs}
            w.add_tensor(name, v.values, compress=True, checksum="crc32c", attributes=attrs)


def write_ztensor_and_zarr(tmp_path, ds, layout: str, encodings: Mapping) -> tuple[str, str]:
    """The same Dataset as a .zt (``encodings[layout]``, or "dense-zstd" for a file from
    another writer) and as the zarr store that serves as the oracle."""
    from ztensor_array.backends.xarray import to_ztensor_dataset

    path, zpath = str(tmp_path / "d.zt"), str(tmp_path / "d.zarr")
    if layout == "dense-zstd":
        write_dense_zstd_dataset(ds, path)
    else:
        to_ztensor_dataset(ds, path, mode="w", encoding=encodings[layout])
    ds.to_zarr(zpath, mode="w")
    return path, zpath
