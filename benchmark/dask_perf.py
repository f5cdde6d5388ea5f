"""Dask benchmarks of issue 5, as ratios measured in one run on one machine.

(a) read:  from_ztensor(...).sum() vs zarr 3 (raw and zstd-3) vs summing in-memory numpy
(b) write: to_ztensor(compress=3) of a dask computation vs single-threaded compression of
           the same (precomputed) blocks, and vs da.to_zarr with the same codec
(c) out of core: peak RssAnon (anonymous memory, excludes the file-backed page cache) while
           reducing a large raw file

    python benchmark/dask_perf.py                 # full size: 2 GiB / 64 MiB chunks, 8 GiB
    python benchmark/dask_perf.py --quick         # 256 MiB / 16 MiB chunks, 1 GiB

Every timing is the best of --repeat interleaved rounds, with a warm page cache (the files were just
written), so the read figures compare decoding and reduction, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

import dask
import dask.array as da
import numpy as np

import ztensor_array as zt

MiB = 1 << 20


def interleaved(fns: dict, repeat: int) -> dict:
    """Best time of each function over ``repeat`` rounds that each run every function once,
    so that load from other processes weighs on all of them alike."""
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


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


def bench_write(folder: str, nbytes: int, chunk_bytes: int, repeat: int) -> dict:
    import zarr
    from zarr.codecs import ZstdCodec

    from ztensor_array.codecs import zstd

    # The computation is cheap (a scaling of blocks held in memory), so the figures compare
    # compression and writing, not the cost of producing the data.
    data = source(nbytes, chunk_bytes).compute()
    arr = da.from_array(data, chunks=source(nbytes, chunk_bytes).chunksize, name=False) * 1.0
    arr = arr.astype(np.float32)
    blocks = [np.ascontiguousarray(b) for b in dask.compute(*arr.to_delayed().ravel())]
    out = {"size_mib": data.nbytes / MiB}

    def single_thread():  # the same bytes, compressed one block after the other
        for block in blocks:
            zstd.compress_sized(memoryview(block).cast("B"), 3)

    def ours():
        zt.to_ztensor(arr, os.path.join(folder, "w.zt"), "x", mode="w", compress=3)

    def theirs():
        z = zarr.create_array(
            os.path.join(folder, "w.zarr"),
            shape=arr.shape,
            chunks=arr.chunksize,
            dtype=arr.dtype,
            compressors=[ZstdCodec(level=3)],
            overwrite=True,
        )
        da.to_zarr(arr, z)

    fns = {"single_thread_compress": single_thread, "zt_to_ztensor": ours, "zarr_to_zarr": theirs}
    out.update(interleaved(fns, repeat))
    out["speedup_vs_single_thread"] = out["single_thread_compress"] / out["zt_to_ztensor"]
    out["ratio_zt_vs_zarr"] = out["zt_to_ztensor"] / out["zarr_to_zarr"]
    out["cores"] = os.cpu_count()
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append")
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
                results["b_write"] = bench_write(folder, size, chunk, args.repeat)
            if not args.only or "c" in args.only:
                results["c_out_of_core"] = bench_out_of_core(folder, big, chunk)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
