"""Peak resident memory of converting a large safetensors file (issue 8: < 300 MiB for 2 GiB).

Usage: python benchmark/convert_memory.py [SIZE_GIB] [--compress] [--one-tensor]

Writes a safetensors file of SIZE_GIB (default 2) made of 64 MiB float32 tensors (or one
single tensor with --one-tensor) in a temporary folder, converts it in a child process and
prints the child's peak RSS (VmHWM) next to that of a child that only imports the
package, so the figure is what the conversion itself adds.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_file(path: str, total: int, one_tensor: bool) -> None:
    """A safetensors file written header-first, in 64 MiB pieces (never all in memory)."""
    piece = 64 << 20
    n = 1 if one_tensor else total // piece
    size = total if one_tensor else piece
    header = {
        f"w{i}": {"dtype": "F32", "shape": [size // 4], "data_offsets": [i * size, (i + 1) * size]}
        for i in range(n)
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        left = n * size
        while left:  # weights-like data: normal floats, barely compressible
            chunk = rng.standard_normal(min(left, piece) // 4, dtype=np.float32)
            f.write(chunk.tobytes())
            left -= chunk.nbytes


def peak_rss_kib(code: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    gib = float(args[0]) if args else 2.0
    compress = "--compress" in sys.argv
    one = "--one-tensor" in sys.argv
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        src, out = os.path.join(d, "big.safetensors"), os.path.join(d, "big.zt")
        make_file(src, int(gib * (1 << 30)), one)
        # VmHWM (peak RSS of this address space), not ru_maxrss: the latter survives exec
        # and would report the parent's peak
        rss = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
        base = peak_rss_kib(f"import ztensor_array.convert, numpy\n{rss}")
        t0 = time.perf_counter()
        peak = peak_rss_kib(
            "from ztensor_array.convert import convert\n"
            f"convert([{src!r}], {out!r}, compress={3 if compress else 0})\n{rss}"
        )
        secs = time.perf_counter() - t0
        print(
            f"input {os.path.getsize(src) / 2**30:.2f} GiB, output "
            f"{os.path.getsize(out) / 2**30:.2f} GiB, compress={compress}, one_tensor={one}"
        )
        print(f"peak RSS {peak / 1024:.1f} MiB (imports alone {base / 1024:.1f} MiB), {secs:.1f} s")


if __name__ == "__main__":
    main()
