"""Remote reads (issue 16): one Dataset as .zt, zarr and netCDF4, served by one local HTTP
server that waits a fixed delay before every answer (an object store's latency), read with
xarray. Time and server-side request count for: open, one chunk, a time series at one point,
``mean("time")`` with Dask, and the whole-file read of raw data against fsspec's plain ``cat``.

    python benchmark/remote_perf.py            # 256 MiB, 20 ms per request
    python benchmark/remote_perf.py --mb 1024  # the issue's 1 GiB
    python benchmark/remote_perf.py --quick    # 32 MiB, one repetition

Same chunks everywhere (24 time steps x 90 x 90 of float32), zstd level 3 for .zt and zarr
(consolidated metadata); netCDF4/HDF5 with the same chunks, zstd where the HDF5 filter is
installed, else zlib level 3 (said in the output), read through h5netcdf over an fsspec file.
Every case opens its file afresh (no client cache), after one untimed pass of every case
(imports, sessions). Formats are interleaved repetition by repetition; each figure is the
minimum over the repetitions, compared within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import xarray as xr

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from range_server import RangeServer  # noqa: E402

import ztensor_array as zt  # noqa: E402

CHUNKS = (24, 90, 90)


def dataset(mb: int) -> xr.Dataset:
    """float32 (time, lat, lon): a smooth field plus noise, ``mb`` MiB."""
    lat, lon = 180, 360
    steps = max(CHUNKS[0], mb * 2**20 // (lat * lon * 4))
    rng = np.random.default_rng(0)
    base = np.sin(np.linspace(0, 6, lat))[:, None] * np.cos(np.linspace(0, 9, lon))[None, :]
    t = np.empty((steps, lat, lon), "f4")
    for i in range(steps):
        t[i] = base * (1 + 0.01 * i) + rng.normal(0, 0.05, (lat, lon)).astype("f4")
    return xr.Dataset(
        {"t": (("time", "lat", "lon"), t, {"units": "K"})},
        coords={
            "time": np.arange(steps, dtype="i8"),
            "lat": np.linspace(-89.5, 89.5, lat),
            "lon": np.linspace(0.5, 359.5, lon),
        },
    )


def write_all(ds: xr.Dataset, root: str) -> str:
    """The three files (and a raw .zt of the same bytes); returns the netCDF compression."""
    zt.to_ztensor(ds, os.path.join(root, "d.zt"), encoding={"t": {"chunks": CHUNKS, "compress": 3}})
    zt.to_ztensor(ds.t.values, os.path.join(root, "raw.zt"), "t")
    import zarr

    codec = zarr.codecs.ZstdCodec(level=3)
    ds.to_zarr(
        os.path.join(root, "d.zarr"),
        encoding={"t": {"chunks": CHUNKS, "compressors": [codec]}},
        consolidated=True,
        zarr_format=3,
        mode="w",
    )
    nc = os.path.join(root, "d.nc")
    try:
        enc = {"t": {"chunksizes": CHUNKS, "compression": "zstd", "complevel": 3}}
        ds.to_netcdf(nc, engine="netcdf4", encoding=enc)
        return "zstd 3"
    except Exception:
        enc = {"t": {"chunksizes": CHUNKS, "zlib": True, "complevel": 3}}
        ds.to_netcdf(nc, engine="netcdf4", encoding=enc)
        return "zlib 3 (no HDF5 zstd filter here)"


def openers(srv: RangeServer) -> dict[str, Callable[..., xr.Dataset]]:
    import fsspec

    def zt_open(**kw):
        return xr.open_dataset(srv.url("d.zt"), engine="ztensor", **kw)

    def zarr_open(**kw):
        return xr.open_zarr(srv.url("d.zarr"), consolidated=True, **kw)

    def nc_open(**kw):
        fs = fsspec.filesystem("http", skip_instance_cache=True)
        return xr.open_dataset(fs.open(srv.url("d.nc"), "rb"), engine="h5netcdf", **kw)

    return {".zt": zt_open, "zarr": zarr_open, "netCDF4": nc_open}


CASES: dict[str, Callable] = {
    "open": lambda op: op(chunks=None),
    "one chunk": lambda op: op(chunks=None).t[0:24, 0:90, 0:90].values,
    "time series at one point": lambda op: op(chunks=None).t[:, 45, 100].values,
    'mean("time") (Dask)': lambda op: op(chunks={}).t.mean("time").compute(scheduler="threads"),
}


def measure(srv: RangeServer, fn: Callable) -> tuple[float, int]:
    srv.reset()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, srv.count()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--delay", type=float, default=0.02, help="seconds before each answer")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.repeat = 32, 1
    with tempfile.TemporaryDirectory() as root:
        ds = dataset(args.mb)
        nc_comp = write_all(ds, root)
        with RangeServer(root, delay=args.delay) as srv:
            ops = openers(srv)
            for fn in CASES.values():  # untimed: imports, sessions, thread pools
                for op in ops.values():
                    fn(op)
            best: dict[tuple[str, str], tuple[float, int]] = {}
            for rep in range(args.repeat):
                for case, fn in CASES.items():
                    names = list(ops) if rep % 2 == 0 else list(reversed(ops))
                    for name in names:
                        t, n = measure(srv, lambda fn=fn, op=ops[name]: fn(op))
                        old = best.get((case, name))
                        best[(case, name)] = (min(t, old[0]) if old else t, n)
            whole = {}
            import fsspec

            for rep in range(args.repeat):
                fs = fsspec.filesystem("http", skip_instance_cache=True)
                pairs = [
                    ("fsspec cat", lambda fs=fs: fs.cat(srv.url("raw.zt"))),
                    (".zt read_tensor", lambda: zt.Reader(srv.url("raw.zt")).read_tensor("t")),
                ]
                for name, fn in pairs if rep % 2 == 0 else reversed(pairs):
                    t, n = measure(srv, fn)
                    old = whole.get(name)
                    whole[name] = (min(t, old[0]) if old else t, n)
    size = ds.t.nbytes / 2**20
    print(f"Dataset: t{tuple(ds.t.shape)} float32, {size:.0f} MiB, chunks {CHUNKS}")
    print(f"server delay {args.delay * 1000:.0f} ms per request; netCDF4 compression {nc_comp}")
    print(f"minimum of {args.repeat} run(s); ratio = .zt time / zarr time\n")
    print("| case | .zt s (requests) | zarr s (requests) | netCDF4 s (requests) | .zt / zarr |")
    print("| --- | --- | --- | --- | --- |")
    for case in CASES:
        cells = [f"{best[(case, n)][0]:.3f} ({best[(case, n)][1]})" for n in ops]
        ratio = best[(case, ".zt")][0] / best[(case, "zarr")][0]
        print(f"| {case} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    cat, ours = whole["fsspec cat"], whole[".zt read_tensor"]
    mbs = ds.t.nbytes / 2**20
    print(
        f"\nwhole raw file ({mbs:.0f} MiB): fsspec cat {mbs / cat[0]:.0f} MiB/s "
        f"({cat[1]} requests),"
        f" .zt {mbs / ours[0]:.0f} MiB/s ({ours[1]} requests): {cat[0] / ours[0]:.2f}x cat's"
        " throughput"
    )


if __name__ == "__main__":
    main()
