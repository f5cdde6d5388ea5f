"""How much smaller a Q4_0 .zt is than its f16 original, and how fast quantized tensors
dequantize on read (GGUF Q4_0/Q8_0 blocks through gguf, GPTQ 4-bit quantized_group).

    python benchmark/quant_size.py [--tensors 4] [--rows 1024] [--cols 4096] [--repeat 3]

Prints file sizes, the size ratio (Q4_0 stores 18 bytes per 32 weights: 0.28x of f16 before
the manifest) and dequantization throughput in output elements per second.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from gguf import quants
from gguf.constants import GGMLQuantizationType

import ztensor_array as zt


def _best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _gptq_parts(rng, rows: int, cols: int, group_size: int = 128):
    """Random 4-bit GPTQ parts (qweight [cols/8, rows] i32, f16 scales, packed qzeros)."""
    groups = cols // group_size
    qweight = rng.integers(-(2**31), 2**31, size=(cols // 8, rows), dtype=np.int64).astype(np.int32)
    qzeros = rng.integers(-(2**31), 2**31, size=(groups, rows // 8), dtype=np.int64)
    scales = (rng.random((groups, rows)) * 0.01).astype(np.float16)
    return qweight, scales, qzeros.astype(np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=4)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.rows, args.cols)
    weights = {
        f"layer{i}.weight": rng.standard_normal(shape, dtype=np.float32) * 0.02
        for i in range(args.tensors)
    }
    numel = args.tensors * args.rows * args.cols

    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: os.path.join(tmp, f"{k}.zt") for k in ("f16", "q4_0", "q4_0_zstd", "q8_0")}
        with zt.Writer(paths["f16"]) as w:
            for name, x in weights.items():
                w.add_tensor(name, x.astype(np.float16))
        blocks = {}
        for qtype in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q8_0):
            blocks[qtype] = {name: quants.quantize(x, qtype) for name, x in weights.items()}
        for key, qtype, compress in (
            ("q4_0", GGMLQuantizationType.Q4_0, False),
            ("q4_0_zstd", GGMLQuantizationType.Q4_0, True),
            ("q8_0", GGMLQuantizationType.Q8_0, False),
        ):
            with zt.Writer(paths[key]) as w:
                for name, b in blocks[qtype].items():
                    w.add_ggml_quantized(name, b, qtype, shape, compress=compress)
        gptq_path = os.path.join(tmp, "gptq.zt")
        with zt.Writer(gptq_path) as w:
            for name in weights:
                qw, s, qz = _gptq_parts(rng, *shape)
                w.add_quantized_group(name, qw, s, qz, shape, bits=4, group_size=128)
        paths["gptq_4bit"] = gptq_path

        sizes = {k: os.path.getsize(p) for k, p in paths.items()}
        print(f"{args.tensors} tensors of {shape} = {numel / 1e6:.1f} M weights")
        for key, size in sizes.items():
            print(
                f"  {key:10s} {size / 2**20:8.2f} MiB  {size / sizes['f16']:.4f}x of f16  "
                f"{8 * size / numel:.3f} bits/weight"
            )

        def read_all(path):
            with zt.Reader(path) as r:
                for name in weights:
                    r.read_tensor(name, copy=True)  # f16: an owned copy, not an mmap view

        print(f"dequantize on read (best of {args.repeat}):")
        for key in ("f16", "q4_0", "q4_0_zstd", "q8_0", "gptq_4bit"):
            secs = _best_of(args.repeat, lambda p=paths[key]: read_all(p))
            out = "float16" if key in ("f16", "gptq_4bit") else "float32"
            print(
                f"  {key:10s} {secs * 1e3:8.1f} ms  {numel / secs / 1e6:8.1f} M elements/s "
                f"({out} out)"
            )


if __name__ == "__main__":
    main()
