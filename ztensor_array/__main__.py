"""``python -m ztensor_array``: write a small generated checkpoint, read it back, describe it."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from . import Reader, Writer
from .errors import counted


def demo(path: str) -> None:
    rng = np.random.default_rng(0)
    with Writer(path) as w:
        w.attributes["source"] = "python -m ztensor_array demo"
        w.add_tensor("embed.weight", rng.standard_normal((512, 64), dtype=np.float32))
        w.add_tensor("embed.bias", np.zeros(64, dtype=np.float32), checksum="crc32c")
        w.add_tensor("counts", np.arange(10_000, dtype=np.int64), compress=True)
    with Reader(path, verify=True) as r:
        count = counted(len(r), "tensor")
        print(f"{path}: zTensor {r.version}, {count}, attributes {r.attributes}")
        for meta in r:
            value = r.read_tensor(meta.name)
            print(
                f"  {meta.name:14s} {meta.layout:6s} {meta.dtype_str:8s} "
                f"{str(meta.shape):12s} {meta.encoding:5s} {meta.size:>8d} bytes "
                f"sum={float(np.sum(value)):.3f}"
            )


def main(argv: list[str]) -> int:
    if argv and argv[0] not in ("demo",):
        print("usage: python -m ztensor_array [demo [PATH]]", file=sys.stderr)
        return 2
    path = argv[1] if len(argv) > 1 else os.path.join(tempfile.gettempdir(), "demo.zt")
    demo(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
