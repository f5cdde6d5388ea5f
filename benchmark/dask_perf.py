"""Dask benchmarks of issue 5, as ratios measured in one run on one machine.

(a) read:  from_ztensor(...).sum() vs zarr 3 (raw and zstd-3) vs summing in-memory numpy
(b) write: to_ztensor(compress=3) of a dask computation (x * 1.0 over blocks in memory) vs
           single-threaded compression of the same (precomputed) blocks, and vs da.to_zarr
           with the same codec. Measured in the same rounds, to read the speedup against:
           - the hardware ceiling: the same blocks compressed by a pool of one thread per
             core (no file, no dask): what the cores give for zstd alone;
           - the ceiling counting the computation: the writer must also compute the blocks
             (timed on one thread), so at best it reaches
             hardware ceiling * compress / (compress + compute).
           Run on the issue's smooth signal (compresses to <1%: the computation costs about
           half of the compression) and on a noisy one (compresses to ~85-90%).
           Both writers write a new file each round (the old one is removed untimed).
(c) out of core: peak RssAnon (anonymous memory, excludes the file-backed page cache) while
           reducing a large raw file

    python benchmark/dask_perf.py                 # full size: 2 GiB / 64 MiB chunks, 8 GiB
    python benchmark/dask_perf.py --quick         # 256 MiB / 16 MiB chunks, 1 GiB

Every timing comes from --repeat interleaved rounds, with a warm page cache (the files were
just written), so the read figures compare decoding and reduction, not the disk. Ratios are
given best-of (best time over best time) and per round (min and median over rounds).
Results go to benchmark/results/dask_perf[_quick].json and .md (merged: an --only run
replaces only its sections).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np

import ztensor_array as zt

MiB = 1 << 20


def rounds(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Times of each function in ``repeat`` rounds that each run every function once, so that
    load from other processes weighs on all of them alike. A value may be (setup, fn):
    setup runs untimed before fn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            if isinstance(fn, tuple):
                fn[0]()
                fn = fn[1]
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def interleaved(fns: dict, repeat: int) -> dict:
    """Best time of each function over ``repeat`` interleaved rounds."""
    return {k: min(v) for k, v in rounds(fns, repeat).items()}


def source(nbytes: int, chunk_bytes: int) -> da.Array:
    """A cheap, compressible float32 dask computation (a smooth signal plus a ramp)."""
    n = nbytes // 4
    cols = 1024
    rows = n // cols
    crow = max(1, chunk_bytes // (cols * 4))
    i = da.arange(rows * cols, chunks=crow * cols, dtype=np.float32).reshape(rows, cols)
    return (da.sin(i / 5000.0) * 100).round(2).astype(np.float32).rechunk((crow, cols))


def rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


class PeakAnon:
    """Samples RssAnon every 5 ms in a thread; .peak is the highest value seen (KiB)."""

    def __enter__(self):
        self.peak = rss_anon_kib()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_anon_kib())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon_kib())


def bench_read(folder: str, nbytes: int, chunk_bytes: int, repeat: int) -> dict:
    import zarr
    from zarr.codecs import ZstdCodec

    arr = source(nbytes, chunk_bytes)
    data = arr.compute()
    chunks = arr.chunksize
    out = {"size_mib": data.nbytes / MiB, "chunk_mib": chunks[0] * chunks[1] * 4 / MiB}
    raw = os.path.join(folder, "raw.zt")
    zst = os.path.join(folder, "zstd.zt")
    zt.to_ztensor(arr, raw, "x", mode="w")
    zt.to_ztensor(arr, zst, "x", mode="w", compress=3)
    zr = zarr.create_array(
        os.path.join(folder, "raw.zarr"),
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype,
        compressors=None,
        overwrite=True,
    )
    zr[...] = data
    zz = zarr.create_array(
        os.path.join(folder, "zstd.zarr"),
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype,
        compressors=[ZstdCodec(level=3)],
        overwrite=True,
    )
    zz[...] = data
    want = float(data.sum(dtype=np.float64))
    arrays = {
        "zt_raw": zt.from_ztensor(raw, "x"),
        "zt_zstd": zt.from_ztensor(zst, "x"),
        "zarr_raw": da.from_zarr(zr),
        "zarr_zstd": da.from_zarr(zz),
        "numpy_dask": da.from_array(data, chunks=chunks, name=False),
    }
    for label, a in arrays.items():
        got = float(a.sum(dtype=np.float64).compute())
        assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), (label, got, want)
    fns = {label: (lambda a=a: a.sum().compute()) for label, a in arrays.items()}
    fns["numpy_plain"] = data.sum
    out.update(interleaved(fns, repeat))
    out["ratio_zt_raw_vs_zarr_raw"] = out["zt_raw"] / out["zarr_raw"]
    out["ratio_zt_zstd_vs_zarr_zstd"] = out["zt_zstd"] / out["zarr_zstd"]
    out["ratio_zt_raw_vs_numpy_dask"] = out["zt_raw"] / out["numpy_dask"]
    out["ratio_zt_raw_vs_numpy_plain"] = out["zt_raw"] / out["numpy_plain"]
    return out


def smooth_plus_noise(nbytes: int) -> np.ndarray:
    """The smooth signal of ``source`` plus unit Gaussian noise: float data that compresses
    to ~85-90% at zstd-3 (~250-500 MB/s on one core), so compression, not the computation,
    dominates the write. A supplement to (b), not its definition."""
    n = nbytes // 4
    cols = 1024
    i = np.arange(n // cols * cols, dtype=np.float32)
    noise = np.random.default_rng(0).standard_normal(i.size, dtype=np.float32)
    return (np.sin(i / 5000.0) * 100 + noise).astype(np.float32).reshape(-1, cols)


def bench_write(folder: str, nbytes: int, chunk_bytes: int, repeat: int, data: str) -> dict:
    """(b): to_ztensor(compress=3) of a dask computation, against the same blocks compressed
    on one thread, on a pool of one thread per core (the hardware ceiling: no file, no dask),
    and da.to_zarr with the same codec. Computing the blocks on one thread is timed too: the
    writer has to do that work as well, so it bounds what any writer can reach."""
    import zarr
    from zarr.codecs import ZstdCodec

    from ztensor_array.codecs import zstd

    # The computation is cheap (a scaling of blocks held in memory), but with very
    # compressible data it still costs a good part of what compression costs.
    chunks = source(nbytes, chunk_bytes).chunksize
    values = (
        source(nbytes, chunk_bytes).compute() if data == "smooth" else smooth_plus_noise(nbytes)
    )
    arr = (da.from_array(values, chunks=chunks, name=False) * 1.0).astype(np.float32)
    blocks = [np.ascontiguousarray(b) for b in dask.compute(*arr.to_delayed().ravel())]
    threads = os.cpu_count() or 1
    stored = sum(len(zstd.compress_sized(memoryview(b).cast("B"), 3)) for b in blocks)
    out = {
        "data": data,
        "size_mib": values.nbytes / MiB,
        "chunk_mib": blocks[0].nbytes / MiB,
        "compressed_fraction": stored / values.nbytes,
        "threads": threads,
    }
    pool = ThreadPoolExecutor(threads)
    ours_path = os.path.join(folder, "w.zt")
    zarr_path = os.path.join(folder, "w.zarr")

    def compress(block):
        return zstd.compress_sized(memoryview(block).cast("B"), 3)

    def single_thread():  # the same bytes, compressed one block after the other
        for block in blocks:
            compress(block)

    def thread_pool():  # the same bytes on one thread per core: what the hardware allows
        list(pool.map(compress, blocks))

    # the computation alone, on one thread, each block dropped once made (as the writer does)
    sink = arr.map_blocks(_drop, dtype=np.uint8, chunks=(1,) * arr.ndim)

    def compute_only():
        sink.compute(scheduler="sync")

    def ours():
        zt.to_ztensor(arr, ours_path, "x", mode="w", compress=3)

    def theirs():
        z = zarr.create_array(
            zarr_path,
            shape=arr.shape,
            chunks=arr.chunksize,
            dtype=arr.dtype,
            compressors=[ZstdCodec(level=3)],
            overwrite=True,
        )
        da.to_zarr(arr, z)

    def fresh():  # both writers write a new file each round (untimed removal first)
        shutil.rmtree(zarr_path, ignore_errors=True)
        if os.path.exists(ours_path):
            os.unlink(ours_path)
        # and start with no writeback of the previous writer's ~GB in flight (otherwise the
        # second writer of a round pays for the first one's dirty pages)
        os.sync()

    fns = {
        "single_thread_compress": single_thread,
        "pool_compress": thread_pool,
        "compute_single_thread": compute_only,
        "zt_to_ztensor": (fresh, ours),
        "zarr_to_zarr": (fresh, theirs),
    }
    try:
        times = rounds(fns, repeat)
    finally:
        pool.shutdown()
    out.update({k: min(v) for k, v in times.items()})
    out["rounds"] = times
    single, pool_t = times["single_thread_compress"], times["pool_compress"]
    compute, zt_t = times["compute_single_thread"], times["zt_to_ztensor"]
    out["speedup_vs_single_thread"] = ratio_stats(single, zt_t)
    out["hardware_ceiling"] = ratio_stats(single, pool_t)
    # what a writer could reach if computing and compressing scaled like compression alone
    ceiling = [p * s / (s + c) for p, s, c in zip(_per_round(single, pool_t), single, compute)]
    out["ceiling_with_computation"] = _summary(ceiling)
    out["fraction_of_hardware_ceiling"] = _summary(
        [a / b for a, b in zip(_per_round(single, zt_t), _per_round(single, pool_t))]
    )
    out["ratio_zt_vs_zarr"] = ratio_stats(zt_t, times["zarr_to_zarr"])
    return out


def _drop(block: np.ndarray) -> np.ndarray:
    return np.zeros((1,) * block.ndim, np.uint8)


def _per_round(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den)]


def _summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratio_stats(num: list[float], den: list[float]) -> dict:
    """num/den as best-of (min over min) and per round (min, median, max over rounds)."""
    return {"best_of": min(num) / min(den), **_summary(_per_round(num, den))}


def bench_out_of_core(folder: str, nbytes: int, chunk_bytes: int) -> dict:
    arr = source(nbytes, chunk_bytes)
    path = os.path.join(folder, "big.zt")
    zt.to_ztensor(arr, path, "x", mode="w")
    y = zt.from_ztensor(path, "x")
    base = rss_anon_kib()
    with PeakAnon() as peak:
        total = float(y.sum(dtype=np.float64).compute())
    return {
        "file_gib": os.path.getsize(path) / (1 << 30),
        "rss_anon_before_mib": base / 1024,
        "peak_rss_anon_mib": peak.peak / 1024,
        "sum": total,
    }


def markdown(results: dict) -> str:
    """The issue's targets as a table (ratios from one run; speedups: higher is better)."""
    lines = [
        "| case | measured | best-of | per-round min | per-round median | target | holds |",
        "|---|---|---:|---:|---:|---|---|",
    ]

    def row(case, measured, stats, target=None, ok=None):
        if isinstance(stats, dict):
            best = f"{stats['best_of']:.3f}" if "best_of" in stats else ""
            cells = f"{best} | {stats['min']:.3f} | {stats['median']:.3f}"
        elif isinstance(stats, float):
            cells = f"{stats:.3f} | | "
        else:
            cells = " | | "
        holds = "" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {case} | {measured} | {cells} | {target or ''} | {holds} |")

    a = results.get("a_read")
    if a:
        row(
            "(a) read: zt raw / zarr raw (time)",
            f"{a['zt_raw']:.3f} s",
            a["ratio_zt_raw_vs_zarr_raw"],
            "<= 1",
            a["ratio_zt_raw_vs_zarr_raw"] <= 1,
        )
        row(
            "(a) read: zt zstd / zarr zstd (time)",
            f"{a['zt_zstd']:.3f} s",
            a["ratio_zt_zstd_vs_zarr_zstd"],
            "<= 1",
            a["ratio_zt_zstd_vs_zarr_zstd"] <= 1,
        )
        row(
            "(a) read: zt raw / numpy sum (time)",
            f"{a['numpy_plain']:.3f} s numpy",
            a["ratio_zt_raw_vs_numpy_plain"],
            "<= 1.2",
            a["ratio_zt_raw_vs_numpy_plain"] <= 1.2,
        )
    for key in ("b_write", "b_write_noisy"):
        b = results.get(key)
        if not b:
            continue
        stored = 100 * b["compressed_fraction"]
        what = f"{b['data']} data, {b['size_mib']:.0f} MiB, stored {stored:.1f}%"
        main = key == "b_write"
        sp = b["speedup_vs_single_thread"]
        row(
            f"(b) to_ztensor zstd-3 speedup vs 1-thread compression ({what})",
            f"{b['zt_to_ztensor']:.3f} s",
            sp,
            ">= 1.6" if main else None,
            sp["best_of"] >= 1.6 if main else None,
        )
        row(
            f"(b) hardware ceiling: {b['threads']}-thread pool vs 1 thread, same blocks, no file",
            f"{b['pool_compress']:.3f} s",
            b["hardware_ceiling"],
        )
        c = b["ceiling_with_computation"]
        row(
            "(b) ceiling counting the computation (1-thread compute "
            f"{b['compute_single_thread']:.3f} s)",
            "",
            c,
        )
        f = b["fraction_of_hardware_ceiling"]
        row("(b) to_ztensor speedup / hardware ceiling", "", f)
        z = b["ratio_zt_vs_zarr"]
        row(
            "(b) to_ztensor / da.to_zarr (time)",
            f"{b['zarr_to_zarr']:.3f} s zarr",
            z,
            "<= 1" if main else None,
            z["best_of"] <= 1 if main else None,
        )
    c = results.get("c_out_of_core")
    if c:
        row(
            f"(c) peak RssAnon reducing {c['file_gib']:.1f} GiB (MiB)",
            f"{c['peak_rss_anon_mib']:.0f}",
            None,
            "< 1024",
            c["peak_rss_anon_mib"] < 1024,
        )
    return "\n".join(lines)


def save(results: dict, out: str, stem: str) -> None:
    """Merge into benchmark/results/<stem>.json (a partial --only run keeps the other
    sections) and rewrite <stem>.md from it."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import workloads as wl

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, stem + ".json")
    merged = {}
    if os.path.exists(path):
        with open(path) as f:
            merged = json.load(f)
    stamp = {
        "machine": wl.machine_description(),
        "command": "python benchmark/dask_perf.py " + shlex.join(sys.argv[1:]),
        "versions": wl.versions("ztensor-array", "dask", "zarr", "zstandard", "numpy"),
    }
    for key, value in results.items():
        merged[key] = {**value, "measured": stamp}
    with open(path, "w") as f:
        json.dump(merged, f, indent=1)
    with open(os.path.join(out, stem + ".md"), "w") as f:
        for key, value in merged.items():
            m = value["measured"]
            mach = m["machine"]
            f.write(
                f"- {key}: {mach['date']}, {mach['cpu']} ({mach['cores']} cores), "
                f"Python {mach['python']}; `{m['command'].strip()}`\n"
            )
        f.write("\n" + markdown(merged) + "\n")
    print(f"wrote {stem}.json and {stem}.md in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append")
    ap.add_argument(
        "--b-data",
        nargs="+",
        choices=["smooth", "noisy"],
        default=["smooth", "noisy"],
        help="data for (b): the issue's smooth signal, and a noisy one that compresses less",
    )
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
        help="folder for dask_perf[_quick].json and .md",
    )
    args = ap.parse_args()
    size, chunk, big = (
        (256 * MiB, 16 * MiB, 1 << 30) if args.quick else (2 << 30, 64 * MiB, 8 << 30)
    )
    folder = tempfile.mkdtemp(prefix="zt-dask-bench-", dir=args.dir)
    results = {}
    try:
        with dask.config.set(scheduler="threads"):
            if not args.only or "a" in args.only:
                results["a_read"] = bench_read(folder, size, chunk, args.repeat)
            if not args.only or "b" in args.only:
                for data in args.b_data:
                    key = "b_write" if data == "smooth" else "b_write_noisy"
                    results[key] = bench_write(folder, size, chunk, args.repeat, data)
            if not args.only or "c" in args.only:
                results["c_out_of_core"] = bench_out_of_core(folder, big, chunk)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2))
    print(markdown(results))
    save(results, args.out, "dask_perf_quick" if args.quick else "dask_perf")


if __name__ == "__main__":
    main()
