"""Inputs shared by the benchmark modules, and the guard for features not built yet."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import numpy as np

MiB = 1 << 20


def tensors(total_bytes: int, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` float32 tensors of mixed 2-D and 1-D shapes, about ``total_bytes`` in all.

    Values are N(0, 0.02), like freshly initialised weights: zstd sees what it sees in
    real checkpoints rather than zeros or noise.
    """
    rng = np.random.default_rng(seed)
    per = max(1, total_bytes // 4 // count)
    out = {}
    for i in range(count):
        if i % 4 == 3:  # a norm-like vector between matrices
            shape: tuple[int, ...] = (max(1, min(per, 4096)),)
        else:
            cols = 256
            shape = (max(1, per // cols), cols)
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(0.02)
        out[f"layers.{i:05d}.weight"] = a
    return out


def save(path: str, data: dict[str, np.ndarray], level: int = 0, checksum=None) -> str:
    import ztensor_array as zt

    with zt.Writer(path) as w:
        for name, a in data.items():
            w.add_tensor(name, a, compress=level, checksum=checksum)
    return os.path.abspath(path)


def require(module: str, attr: str | None = None) -> Callable:
    """The feature ``module.attr`` of ztensor_array, or NotImplementedError (asv: skipped).

    Benchmarks of the dask, xarray and convert areas are written against the public contract
    in ARCHITECTURE.md; until a feature exists they are reported as skipped, not failed.
    """
    try:
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    except (ImportError, AttributeError) as exc:
        raise NotImplementedError(f"{module}.{attr or ''} is not available: {exc}") from None
