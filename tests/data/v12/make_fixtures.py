"""Generate the v1.2 fixtures in this folder with the reference writer ``ztensor==1.2.3``.

Run it with an interpreter that has ztensor 1.2.3, numpy, ml_dtypes and cbor2 (1.2.3 clashes
with the 1.1.1 oracle by package name, so it lives in its own virtual environment)::

    python -m venv /tmp/zt12 && /tmp/zt12/bin/pip install ztensor==1.2.3 cbor2 ml_dtypes
    /tmp/zt12/bin/python tests/data/v12/make_fixtures.py

``expected()`` needs only numpy and ml_dtypes: the tests import it to know what each fixture
must contain, so the committed files are checked against values built independently of any
zTensor reader.

What the files exercise (all written by 1.2.3 itself, except where noted):
- dense_v12.zt: every dtype 1.2.3 writes, raw and zstd (`uncompressed_length`), crc32c and
  sha256 digests, a 0-d array (1.2.3 stores it as shape [1]) and an empty one.
- types_v12.zt: the `type` field over a storage dtype: f8_e4m3fn and f8_e5m2 over u8,
  complex64 over f32 and complex128 over f64 (logical shape, 2 floats per element).
- layouts_v12.zt: quantized_group in the GPTQ form (packed_weight/scales/zeros with bits,
  group_size, packing, plus non-text object attributes), sparse_csr and sparse_coo.
- attrs_v12.zt: non-text global attributes. The 1.2.3 Python API cannot set global
  attributes although the v1.2 manifest allows any CBOR value there, so this script writes
  the file with 1.2.3 and then re-encodes its manifest with the root `attributes` map added
  (keys in 1.2.3's order: version, attributes, objects), and checks 1.2.3 still opens it.
"""

from __future__ import annotations

import os
import sys

import ml_dtypes
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

GPTQ = {"rows": 16, "cols": 64, "bits": 4, "group_size": 16}
GLOBAL_ATTRS = {
    "framework": "test",
    "epoch": 3,
    "lr": 0.5,
    "flags": [True, False, None],
    "nested": {"a": [1, 2, 3], "b": b"\x00\x01"},
}


def _pack_columns(values: np.ndarray, bits: int) -> np.ndarray:
    """GPTQ packing into int32 words along axis 0 (little-endian bit stream per column)."""
    n_in, n_cols = values.shape
    out = np.zeros((n_in * bits // 32, n_cols), dtype="<u4")
    for c in range(n_cols):
        stream = sum(int(values[i, c]) << (i * bits) for i in range(n_in))
        for w in range(out.shape[0]):
            out[w, c] = (stream >> (32 * w)) & 0xFFFFFFFF
    return out.view("<i4")


def expected() -> dict[str, dict[str, np.ndarray]]:
    """file name -> tensor name -> the array each fixture holds (logical dtype and shape)."""
    rng = np.random.default_rng(12)
    dense = {
        "f64": rng.standard_normal((3, 4)),
        "f32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "f16": rng.standard_normal(17).astype(np.float16),
        "bf16": rng.standard_normal((4, 4)).astype(ml_dtypes.bfloat16),
        "i64": rng.integers(-(2**62), 2**62, 5, dtype=np.int64),
        "i32": rng.integers(-(2**31), 2**31, 6, dtype=np.int32),
        "i16": rng.integers(-(2**15), 2**15, 7, dtype=np.int16),
        "i8": rng.integers(-128, 128, 8, dtype=np.int8),
        "u64": rng.integers(0, 2**63, 5, dtype=np.uint64),
        "u32": rng.integers(0, 2**32, 6, dtype=np.uint32),
        "u16": rng.integers(0, 2**16, 7, dtype=np.uint16),
        "u8": rng.integers(0, 256, 9, dtype=np.uint8),
        "bool": rng.random(10) < 0.5,
        "zstd_f32": np.repeat(np.arange(64, dtype=np.float32), 16),
        "zstd_i16_crc": np.tile(np.arange(-8, 8, dtype=np.int16), 40),
        "raw_sha": np.arange(12, dtype=np.float64).reshape(3, 4),
        "scalar": np.array([2.5], dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.int16),
    }
    f8_source = np.concatenate([np.linspace(-400, 400, 30), [0.0, -0.0]]).astype(np.float32)
    types = {
        "e4m3": f8_source.astype(ml_dtypes.float8_e4m3fn).reshape(4, 8),
        "e5m2": f8_source.astype(ml_dtypes.float8_e5m2),
        "c64": (rng.standard_normal(6) + 1j * rng.standard_normal(6)).astype(np.complex64),
        "c128": (rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))),
        "plain": np.arange(5, dtype=np.int32),
    }
    g = GPTQ
    groups = g["cols"] // g["group_size"]
    q = rng.integers(0, 16, (g["cols"], g["rows"]))
    z = rng.integers(0, 16, (groups, g["rows"]))
    s = (rng.random((groups, g["rows"])) * 0.05 + 0.01).astype(np.float16)
    layouts = {
        # the quantized parts; the tests dequantize them with their own numpy arithmetic
        "gptq.q": q,
        "gptq.z": z,
        "gptq.scales": s,
        "gptq.packed_weight": _pack_columns(q, 4),
        "gptq.qzeros": _pack_columns(z.T, 4).T.copy(),
        "csr.values": np.array([1.5, -2.0, 3.25], dtype=np.float32),
        "csr.indices": np.array([2, 0, 1], dtype=np.uint64),
        "csr.indptr": np.array([0, 1, 2, 3], dtype=np.uint64),
        "coo.values": np.array([7, 8], dtype=np.int64),
        "coo.coords": np.array([0, 1, 1, 0, 0, 1], dtype=np.uint64),  # SoA, 3-D, nnz=2
    }
    attrs = {"x": np.arange(4, dtype=np.float32)}
    return {
        "dense_v12.zt": dense,
        "types_v12.zt": types,
        "layouts_v12.zt": layouts,
        "attrs_v12.zt": attrs,
    }


def _manifest(path):
    import cbor2

    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[-16:-8], "little")
    return data, len(data) - 16 - n, cbor2.loads(data[-16 - n : -16])


def main() -> None:
    import cbor2
    import ztensor

    exp = expected()
    out = lambda name: os.path.join(HERE, name)  # noqa: E731

    with ztensor.Writer(out("dense_v12.zt")) as w:
        for name, arr in exp["dense_v12.zt"].items():
            if name == "zstd_f32":
                w.write_numpy(name, arr, compress=True)
            elif name == "zstd_i16_crc":
                w.write_numpy(name, arr, compress=5, checksum="crc32c")
            elif name == "raw_sha":
                w.write_numpy(name, arr, checksum="sha256")
            elif name == "scalar":
                w.write_numpy(name, np.array(2.5, dtype=np.float32))  # 0-d in, [1] stored
            else:
                w.write_numpy(name, np.ascontiguousarray(arr))

    t = exp["types_v12.zt"]
    with ztensor.Writer(out("types_v12.zt")) as w:
        for name, storage, ltype in (
            ("e4m3", "uint8", "f8_e4m3fn"),
            ("e5m2", "uint8", "f8_e5m2"),
            ("c64", "float32", "complex64"),
            ("c128", "float64", "complex128"),
        ):
            arr = t[name]
            raw = arr.view(np.uint8) if storage == "uint8" else arr.view(storage)
            w.write(
                name,
                ztensor.Tensor(
                    {"data": raw.reshape(-1)}, shape=list(arr.shape), dtype=storage, type=ltype
                ),
                compress=name == "c128",
                checksum="crc32c",
            )
        w.write_numpy("plain", t["plain"])

    lay = exp["layouts_v12.zt"]
    g = GPTQ
    with ztensor.Writer(out("layouts_v12.zt")) as w:
        w.write(
            "gptq",
            ztensor.Tensor(
                {
                    "packed_weight": lay["gptq.packed_weight"].reshape(-1),
                    "scales": lay["gptq.scales"].reshape(-1),
                    "zeros": lay["gptq.qzeros"].reshape(-1),
                },
                shape=[g["rows"], g["cols"]],
                dtype="int32",
                format="quantized_group",
                attributes={
                    "bits": g["bits"],
                    "group_size": g["group_size"],
                    "packing": "8_per_i32",
                    "desc_act": False,
                    "damp": 0.01,
                    "source": b"gptq",
                },
            ),
            compress=True,
            checksum="sha256",
        )
        w.write(
            "csr",
            ztensor.Tensor(
                {k.split(".")[1]: v for k, v in lay.items() if k.startswith("csr.")},
                shape=[3, 3],
                format="sparse_csr",
            ),
        )
        w.write(
            "coo",
            ztensor.Tensor(
                {k.split(".")[1]: v for k, v in lay.items() if k.startswith("coo.")},
                shape=[2, 4, 2],
                format="sparse_coo",
            ),
        )

    path = out("attrs_v12.zt")
    with ztensor.Writer(path) as w:
        w.write_numpy("x", exp["attrs_v12.zt"]["x"])
    data, start, m = _manifest(path)
    attrs = dict(sorted(GLOBAL_ATTRS.items()))  # a BTreeMap in 1.2: keys in sorted order
    root = {"version": m["version"], "attributes": attrs, "objects": m["objects"]}
    mbytes = cbor2.dumps(root)
    with open(path, "wb") as f:
        f.write(data[:start] + mbytes + len(mbytes).to_bytes(8, "little") + b"ZTEN1000")
    assert list(ztensor.Reader(path).keys()) == ["x"]

    for name in exp:
        print(name, os.path.getsize(out(name)), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
