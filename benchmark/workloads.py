"""Shared pieces of the benchmark scripts: tensor workloads, timing, physical limits.

Every figure the scripts print is a ratio against a baseline measured in the same run, with
the candidates interleaved repetition by repetition, so a noisy (shared) machine slows both
sides alike. Times are reported as the minimum and the median over the repetitions.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MiB = 1 << 20


# ---------------------------------------------------------------------------- workloads


def llm_shapes(total_bytes: int, count: int = 200, itemsize: int = 4) -> dict[str, tuple]:
    """Shapes of a decoder-only transformer checkpoint of about ``total_bytes``.

    Per layer: q/k/v/o projections (d, d), MLP up/gate (f, d) and down (d, f) with f = 3d,
    and two norms (d,). Plus embeddings, lm_head, a final norm and a few small tensors, so the
    count is exactly ``count`` and the size mix (a few huge, many mid-size, some tiny) is
    that of a real checkpoint.
    """
    per_layer = 9
    extras = ["embed_tokens.weight", "lm_head.weight", "norm.weight", "rotary.inv_freq"]
    layers = (count - len(extras)) // per_layer
    pad = count - len(extras) - layers * per_layer
    # floats: layers * (4 d^2 + 3 * 3 d^2 + 2 d) + 2 * vocab * d with vocab = 8 d
    coef = layers * 13 + 16
    d = max(8, int(math.sqrt(total_bytes / itemsize / coef)) // 8 * 8)
    f, vocab = 3 * d, 8 * d
    shapes: dict[str, tuple] = {
        "embed_tokens.weight": (vocab, d),
        "lm_head.weight": (vocab, d),
        "norm.weight": (d,),
        "rotary.inv_freq": (d // 2,),
    }
    for i in range(layers):
        p = f"layers.{i:03d}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (d, d)
        shapes[p + "mlp.gate_proj.weight"] = (f, d)
        shapes[p + "mlp.up_proj.weight"] = (f, d)
        shapes[p + "mlp.down_proj.weight"] = (d, f)
        shapes[p + "input_layernorm.weight"] = (d,)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
    for i in range(pad):
        shapes[f"layers.{i:03d}.self_attn.q_proj.bias"] = (d,)
    return shapes


def mixed_shapes(total_bytes: int, itemsize: int = 4) -> dict[str, tuple]:
    """An LLM-like mix (see ``llm_shapes``) with 200 tensors."""
    return llm_shapes(total_bytes, 200, itemsize)


def large_shapes(total_bytes: int, itemsize: int = 4, count: int = 8) -> dict[str, tuple]:
    """A few equal, large 2-D tensors (the best case for every format)."""
    rows = max(1, total_bytes // itemsize // count // 4096)
    return {f"block.{i:02d}.weight": (rows, 4096) for i in range(count)}


def make_tensors(shapes: dict[str, tuple], dtype=np.float32, seed: int = 0) -> dict:
    """Weights drawn like an initialised model: N(0, 0.02), so zstd finds what it finds
    in real checkpoints (mostly the exponent bytes), neither zeros nor pure noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(0.02)
        out[name] = a.astype(dtype, copy=False)
    return out


def nbytes(tensors: dict) -> int:
    return sum(a.nbytes for a in tensors.values())


# ---------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Repetition times of one candidate, in seconds."""

    name: str
    times: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.times) if self.times else math.nan

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan


def interleaved(
    candidates: dict[str, Callable[[], object]],
    reps: int,
    setup: Callable[[str], object] | None = None,
    teardown: Callable[[str, object], object] | None = None,
    collect: bool = True,
) -> dict[str, Timing]:
    """Time each candidate ``reps`` times, alternating candidates inside each repetition.

    ``setup(name)`` runs untimed before each call (delete the output file, drop dirty pages),
    ``teardown(name, result)`` untimed after it; the result is dropped before the next call.
    The garbage collector is off while a call is timed; ``collect`` runs it before each call
    (leave it off for microsecond cases: a full collection costs more than they do).
    """
    out = {name: Timing(name) for name in candidates}
    for rep in range(reps):
        order = list(candidates) if rep % 2 == 0 else list(reversed(candidates))
        for name in order:
            if setup is not None:
                setup(name)
            if collect:
                gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                result = candidates[name]()
                dt = time.perf_counter() - t0
            finally:
                gc.enable()
            if teardown is not None:
                teardown(name, result)
            del result
            out[name].times.append(dt)
    return out


def touch(obj) -> None:
    """Read every byte of an array (or the arrays of a dict/list), so lazy readers pay."""
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        for a in obj:
            touch(a)
        return
    a = np.asarray(obj)
    if not a.size:
        return
    raw = a.reshape(-1).view(np.uint8)
    head = raw.size // 8 * 8
    np.add.reduce(raw[:head].view(np.uint64), dtype=np.uint64)  # wraps, never slow-paths
    np.add.reduce(raw[head:], dtype=np.uint64)


def subprocess_seconds(code: str, reps: int, env: dict | None = None) -> list[float]:
    """Wall time of ``python -c code`` in fresh interpreters."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        times.append(time.perf_counter() - t0)
    return times


def subprocess_value(code: str, env: dict | None = None) -> str:
    """stdout of ``python -c code`` (for figures measured inside a fresh process)."""
    res = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    return res.stdout.strip()


def bytecode_env() -> dict:
    """The environment with bytecode caching on, as in any installed package: with
    PYTHONDONTWRITEBYTECODE set, an editable install recompiles every module at each import
    while numpy's precompiled files load, which is not the comparison users see."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def drop_dirty(path: str | None = None, *, drop_cache: bool = False) -> None:
    """Remove a previous output and push dirty pages out, so one write doesn't pay another's
    writeback. ``drop_cache`` (where allowed: root on Linux) drops the clean page cache too,
    so every write starts with the same free memory and none pays for reclaiming cache to
    make room: that made writes here bimodal (0.25 s or 0.8 s for the same GiB). Callers
    that time warm reads afterwards must warm their files again."""
    if path and os.path.exists(path):
        os.unlink(path)
    os.sync()
    if drop_cache:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")
        except OSError:
            pass  # not root, or not Linux: dirty pages are still synced


# ---------------------------------------------------------------------------- physical limits


def remove(path: str) -> None:
    """Delete a file or a folder (zarr stores) if it is there."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


def disk_bytes(path: str) -> int:
    """Size of a file, or of every file under a folder."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def memcpy_bandwidth(size: int, reps: int = 3) -> float:
    """Bytes/s of one large numpy copy into a pre-faulted buffer."""
    src = np.ones(size, dtype=np.uint8)
    dst = np.empty_like(src)
    dst[:] = 0
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return size / best


def compress_all(tensors: dict, level: int, threads: int) -> int:
    """Compress every tensor to a zstd frame on ``threads`` threads and write nothing: the
    most a parallel compressing writer can reach on this machine. Returns the bytes made."""
    from concurrent.futures import ThreadPoolExecutor

    import zstandard

    def one(a: np.ndarray) -> int:
        c = zstandard.ZstdCompressor(level=level).compressobj()
        data = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        return len(c.compress(data)) + len(c.flush())

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, tensors.values()))


def readinto_seconds(path: str) -> float:
    """open + ``readinto`` of the whole file into a fresh buffer (the page-cache read floor)."""
    size = os.path.getsize(path)
    t0 = time.perf_counter()
    buf = np.empty(size, dtype=np.uint8)
    with open(path, "rb", buffering=0) as f:
        view = memoryview(buf)
        done = 0
        while done < size:
            n = f.readinto(view[done:])
            if not n:
                break
            done += n
    return time.perf_counter() - t0


def write_seconds(path: str, data, fsync: bool = False) -> float:
    """open + one ``write()`` (looped until complete) + close, optionally fsync."""
    view = memoryview(data).cast("B")
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        done = 0
        while done < view.nbytes:
            done += os.write(fd, view[done:])
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def machine_description() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def versions(*modules: str) -> dict[str, str]:
    """Installed versions of peer libraries (missing ones are left out)."""
    from importlib import metadata

    out = {}
    for m in modules:
        try:
            out[m] = metadata.version(m)
        except metadata.PackageNotFoundError:
            pass
    return out
