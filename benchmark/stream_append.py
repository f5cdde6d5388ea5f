"""Issue-4 figures: stream a large tensor in blocks with flat memory, and append to a big file.

    python benchmark/stream_append.py              # 4 GiB tensor, 64 MiB blocks
    python benchmark/stream_append.py --gib 1      # smaller run

Each measurement runs in a fresh subprocess so peak RSS (VmHWM) belongs to it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_STREAM = """
import json, sys, time, numpy as np, ztensor_array as zt
path, gib, block_mib, compress = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n = int(gib * (1 << 30)) // 4
per = block_mib * (1 << 20) // 4
block = np.arange(per, dtype=np.float32)
t = time.perf_counter()
with zt.Writer(path) as w:
    with w.stream_tensor("big", (n,), np.float32, compress=compress, checksum="crc32c") as s:
        done = 0
        while done < n:
            k = min(per, n - done)
            s.write(block[:k])
            done += k
elapsed = time.perf_counter() - t
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
print(json.dumps({"seconds": elapsed, "peak_rss_mib": hwm / 1024}))
"""

_APPEND = """
import json, sys, time, numpy as np, ztensor_array as zt
path = sys.argv[1]
small = np.ones(1 << 18, dtype=np.float32)  # 1 MiB
t = time.perf_counter()
with zt.Writer(path, mode="a") as w:
    w.add_tensor("small", small)
elapsed = time.perf_counter() - t
with zt.Reader(path) as r:
    assert r.read_tensor("small").sum() == small.size
print(json.dumps({"seconds": elapsed}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("--block-mib", type=int, default=64)
    ap.add_argument("--dir", default=None, help="folder for the test file (default: tmp)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "stream.zt")
        raw = _run(_STREAM, path, args.gib, args.block_mib, 0)
        size = os.path.getsize(path)
        appends = [
            _run(_APPEND.replace('"small"', f'"small{i}"'), path)["seconds"] for i in range(5)
        ]
        zstd = _run(_STREAM, path + ".z", args.gib, args.block_mib, 3)
    print(
        f"stream raw   {args.gib:g} GiB in {args.block_mib} MiB blocks: "
        f"{raw['seconds']:.2f} s, peak RSS {raw['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"stream zstd3 {args.gib:g} GiB in {args.block_mib} MiB blocks: "
        f"{zstd['seconds']:.2f} s, peak RSS {zstd['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"append 1 MiB tensor to a {size / (1 << 30):.2f} GiB file: "
        f"median {sorted(appends)[2] * 1e3:.1f} ms, best {min(appends) * 1e3:.1f} ms "
        f"(in-process time, excluding interpreter start)"
    )


if __name__ == "__main__":
    main()
