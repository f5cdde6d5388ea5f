"""Scale: opening, reading, appending and writing at 10^2..10^6 chunks and 10^3/10^5 tensors.

Measures every row of issue 14's table and every target of its "Targets" section in one run,
with the peers beside us: zarr 3 (unsharded, and sharded with the same chunks), both with
zstd level 3 like ours; the reference ztensor 1.1.1 and safetensors for the many-tensor file.

Workloads
* Chunked arrays: float32 chunks of 8 x 8 (256 bytes), N chunks laid out as a grid of
  N/10 x 10 chunks (shape (8N/10, 80)), values N(0, 0.02), zstd level 3. The grid is ten
  chunks wide at every size, so "append one chunk row" adds the same ten chunks at every N
  and its cost against N is the cost of the file's size alone. zarr sharded: shards of
  100 x 10 chunks (1,000 chunks each). The Dataset of the xarray rows holds one variable
  ``v`` with dims ``(t, y)`` and the same chunks, written by ``to_ztensor(ds)``.
* Tensors: N dense float32 tensors of 8 x 8 named like a mixture-of-experts checkpoint,
  ``model.layers.{i}.mlp.experts.{j}.w{k}.weight`` (128 experts, w1..w3).

Method
* "First open" cases run in a fresh interpreter per repetition (nothing of the file in
  memory: no manifest memo, no zarr metadata cache). Before timing, that interpreter has
  imported its library and opened and read a *different*, small file of the same kind, so
  import and first-call costs (the same at every size) are not counted.
* Warm cases (reopen, "append from a process that opened the file before") run in one
  interpreter after a first open, and for zarr on the array handle opened there.
* Page cache warm: every file is read once before it is timed. Times: time.perf_counter,
  the median of the repetitions (candidates interleaved, order alternating); writes are
  fewer repetitions at 10^5 and 10^6 chunks.
* Peak memory of an open: ``ru_maxrss`` of a fresh interpreter after opening the file and
  reading one chunk, minus its ``ru_maxrss`` just before (after its imports and warm-up
  open); ``tracemalloc``'s peak of the same is recorded beside it.

    PYTHONPATH=$PWD python benchmark/scale_perf.py --readme README.md   # the full run
    PYTHONPATH=$PWD python benchmark/scale_perf.py --quick              # 10^2..10^4, 10^3/10^4
    PYTHONPATH=$PWD python benchmark/scale_perf.py --sizes 100,1000 --tensors 1000
    python benchmark/scale_perf.py --replot                           # md/png from the JSON

Writes benchmark/results/scale_perf.{json,md,png} (``scale_perf_quick.*`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import workloads as wl  # noqa: E402

OURS, ZARR, SHARDED = "ztensor_array", "zarr", "zarr sharded"
REF, ST = "ztensor 1.1.1", "safetensors"
CBOR, CBOR_NOGC = "cbor2.loads", "cbor2.loads, gc paused"
CHUNK_LIBS = (OURS, ZARR, SHARDED)
TENSOR_LIBS = (OURS, REF, ST)

CHUNK = (8, 8)
GRID_COLS = 10
SHARD_CHUNK_ROWS = 100
LEVEL = 3
SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (100, 1_000, 10_000)
TENSORS = (1_000, 100_000)
QUICK_TENSORS = (1_000, 10_000)
EXPERTS = 128

FANCY_SHAPE, FANCY_CHUNKS, FANCY_SHARDS = (100, 400), (10, 20), (50, 200)
FANCY_T, FANCY_Y, FANCY_POINTS_Y = [1, 50, 99], [0, 399], [0, 200, 399]


# ---------------------------------------------------------------------------- workloads


def chunked_array(n_chunks: int, seed: int = 0) -> np.ndarray:
    rows = n_chunks // GRID_COLS
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows * CHUNK[0], GRID_COLS * CHUNK[1]), dtype=np.float32)
    x *= np.float32(0.02)
    return x


def chunk_key(n_chunks: int) -> tuple[slice, slice]:
    """One whole chunk in the middle of the grid."""
    r = n_chunks // GRID_COLS // 2
    return (slice(r * CHUNK[0], (r + 1) * CHUNK[0]), slice(3 * CHUNK[1], 4 * CHUNK[1]))


def moe_names(n: int) -> list[str]:
    out = []
    for idx in range(n):
        layer, rest = divmod(idx, 3 * EXPERTS)
        expert, k = divmod(rest, 3)
        out.append(f"model.layers.{layer}.mlp.experts.{expert}.w{k + 1}.weight")
    return out


def moe_tensors(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 8, 8), dtype=np.float32) * np.float32(0.02)
    return dict(zip(moe_names(n), data))


# ---------------------------------------------------------------------------- library calls
# Each is the plain public call a user makes; the children and the parent share them.


def write_chunked(lib: str, x: np.ndarray, path: str) -> None:
    if lib == OURS:
        import ztensor_array as zt

        zt.to_ztensor(x, path, "v", mode="w", encoding={"chunks": CHUNK, "compress": LEVEL})
        return
    shards = None
    if lib == SHARDED:
        shards = (SHARD_CHUNK_ROWS * CHUNK[0], GRID_COLS * CHUNK[1])
    write_zarr(x, path, CHUNK, shards)


def write_zarr(x: np.ndarray, path: str, chunks, shards) -> None:
    """``x`` as variable ``v`` (dims t, y) of a zarr 3 group, zstd at our level."""
    import zarr
    from zarr.codecs import ZstdCodec

    group = zarr.open_group(path, mode="w")
    arr = group.create_array(
        "v",
        shape=x.shape,
        chunks=chunks,
        shards=shards,
        dtype=x.dtype,
        compressors=ZstdCodec(level=LEVEL),
        dimension_names=("t", "y"),
    )
    arr[...] = x


def write_dataset(x: np.ndarray, path: str) -> None:
    import xarray as xr

    import ztensor_array as zt

    ds = xr.Dataset({"v": (("t", "y"), x)})
    zt.to_ztensor(ds, path, mode="w", encoding={"v": {"chunks": CHUNK, "compress": LEVEL}})


def open_read(lib: str, path: str, key) -> np.ndarray:
    """Open the file (nothing kept from before) and read one chunk's worth."""
    if lib == OURS:
        import ztensor_array as zt

        with zt.Reader(path) as r:
            out = r.read_slice("v", key)
    else:
        import zarr

        out = zarr.open_array(path, path="v", mode="r")[key]
    wl.touch(out)
    return out


def zarr_handle(path: str):
    import zarr

    return zarr.open_array(path, path="v", mode="r+")


def zarr_append(arr, row: np.ndarray) -> None:
    n = arr.shape[0]
    arr.resize((n + row.shape[0], arr.shape[1]))
    arr[n:] = row


def append_row(lib: str, path: str, row: np.ndarray, handle=None) -> None:
    if lib == OURS:
        import ztensor_array as zt

        zt.to_ztensor(row, path, "v", mode="a", append_dim=0)
    else:
        zarr_append(handle if handle is not None else zarr_handle(path), row)


def open_dataset(lib: str, path: str):
    import xarray as xr

    if lib == OURS:
        return xr.open_dataset(path, engine="ztensor")
    return xr.open_dataset(path, engine="zarr", consolidated=False)


def open_tensor(lib: str, path: str, name: str) -> None:
    if lib == OURS:
        import ztensor_array as zt

        with zt.Reader(path) as r:
            wl.touch(r.read_tensor(name))
    elif lib == REF:
        import ztensor

        with ztensor.Reader(path) as r:
            wl.touch(r.read_tensor(name))
    else:
        from safetensors import safe_open

        with safe_open(path, "np") as f:
            wl.touch(f.get_tensor(name))


def append_tensor(path: str) -> None:
    import ztensor_array as zt

    with zt.Writer(path, "a") as w:
        w.add_tensor(f"model.extra.{uuid.uuid4().hex}.weight", np.ones((8, 8), np.float32))


def manifest_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        f.seek(-16, os.SEEK_END)
        n = int.from_bytes(f.read(8), "little")
        f.seek(-16 - n, os.SEEK_END)
        return f.read(n)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- child cases
# Each runs in a fresh interpreter (``--child JSON``) and prints one JSON line.


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(spec: dict) -> dict:
    case, lib = spec["case"], spec.get("lib")
    key = tuple(slice(*s) for s in spec["key"]) if "key" in spec else None
    warm = spec.get("warm")
    if case == "open_chunk":
        open_read(lib, warm, chunk_key(100))
        gc.collect()
        return {"t": _timed(lambda: open_read(lib, spec["path"], key))}
    if case == "peak_mem":
        open_read(lib, warm, chunk_key(100))
        gc.collect()
        base = _maxrss()
        open_read(lib, spec["path"], key)
        return {"rss": _maxrss() - base, "base": base}
    if case == "trace_mem":
        open_read(lib, warm, chunk_key(100))
        gc.collect()
        tracemalloc.start()
        open_read(lib, spec["path"], key)
        return {"peak": tracemalloc.get_traced_memory()[1]}
    if case == "append_fresh":
        row = np.ones((CHUNK[0], GRID_COLS * CHUNK[1]), np.float32)
        append_row(lib, warm, row)
        gc.collect()
        return {"t": _timed(lambda: append_row(lib, spec["path"], row))}
    if case == "append_warm":
        row = np.ones((CHUNK[0], GRID_COLS * CHUNK[1]), np.float32)
        append_row(lib, warm, row)
        open_read(lib, spec["path"], key)  # the process opens the file first
        handle = zarr_handle(spec["path"]) if lib != OURS else None
        times = []
        for _ in range(spec["reps"]):
            gc.collect()
            times.append(_timed(lambda: append_row(lib, spec["path"], row, handle)))
        return {"times": times}
    if case == "xarray":
        ds = open_dataset(lib, warm)
        _ = ds["v"].isel(t=slice(0, 8), y=slice(0, 8)).values
        ds.close()
        gc.collect()
        t0 = time.perf_counter()
        ds = open_dataset(lib, spec["path"])
        t1 = time.perf_counter()
        v = ds["v"].isel(t=key[0], y=key[1]).values
        t2 = time.perf_counter()
        assert v.shape == CHUNK, v.shape
        return {"open": t1 - t0, "isel": t2 - t1}
    if case == "open_tensor":
        open_tensor(lib, warm, moe_names(1)[0])
        gc.collect()
        return {"t": _timed(lambda: open_tensor(lib, spec["path"], spec["name"]))}
    if case == "cbor":
        import cbor2

        cbor2.loads(manifest_bytes(warm))
        data = manifest_bytes(spec["path"])
        gc.collect()
        if spec["gc"]:
            return {"t": _timed(lambda: cbor2.loads(data))}
        gc.disable()
        return {"t": _timed(lambda: cbor2.loads(data))}
    if case == "reopen_tensor":
        open_tensor(OURS, warm, moe_names(1)[0])
        open_tensor(OURS, spec["path"], spec["name"])
        times = []
        for _ in range(spec["reps"]):
            times.append(_timed(lambda: open_tensor(OURS, spec["path"], spec["name"])))
        return {"times": times}
    if case == "append_tensor_warm":
        append_tensor(spec["small"])
        open_tensor(OURS, spec["path"], spec["name"])  # the process opens the file first
        small, times = [], []
        for _ in range(spec["reps"]):
            gc.collect()
            small.append(_timed(lambda: append_tensor(spec["small"])))
            gc.collect()
            times.append(_timed(lambda: append_tensor(spec["path"])))
        return {"times": times, "small": small}
    if case == "append_tensor_fresh":
        append_tensor(spec["small"])
        gc.collect()
        return {"t": _timed(lambda: append_tensor(spec["path"]))}
    raise SystemExit(f"unknown case {case}")


def run_child(spec: dict) -> dict:
    res = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=wl.bytecode_env(),
    )
    if res.returncode != 0:
        raise RuntimeError(f"child {spec['case']} {spec.get('lib')} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def fresh_times(specs: dict[str, dict], reps: int, field: str = "t") -> dict[str, list]:
    """``reps`` fresh interpreters per candidate, interleaved, order alternating."""
    out: dict[str, list] = {name: [] for name in specs}
    for rep in range(reps):
        names = list(specs) if rep % 2 == 0 else list(reversed(specs))
        for name in names:
            out[name].append(run_child(specs[name])[field])
    return out


# ---------------------------------------------------------------------------- the run


def _med(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def _key_json(key) -> list:
    return [[s.start, s.stop] for s in key]


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.dir or tempfile.mkdtemp(prefix="zt-scale-")
        os.makedirs(self.work, exist_ok=True)
        self.warm = os.path.join(self.work, "warm")
        os.makedirs(self.warm, exist_ok=True)
        self.reps = args.reps or (3 if args.quick else 7)

    def wpath(self, what: str) -> str:
        return os.path.join(self.warm, what)

    def setup_warm(self) -> None:
        """Small files of every kind: the children open these before timing theirs."""
        x = chunked_array(100, seed=1)
        for lib, name in ((OURS, "c.zt"), (ZARR, "c.zarr"), (SHARDED, "s.zarr")):
            write_chunked(lib, x, self.wpath(name))
            write_chunked(lib, x, self.wpath("app-" + name))
        write_dataset(x, self.wpath("x.zt"))
        t = moe_tensors(1, seed=1)
        from safetensors.numpy import save_file as st_save

        import ztensor_array as zt

        zt.save_file(t, self.wpath("t.zt"))
        zt.save_file(t, self.wpath("small.zt"))
        st_save(t, self.wpath("t.safetensors"))

    def warm_chunk(self, lib: str, append: bool = False) -> str:
        name = {OURS: "c.zt", ZARR: "c.zarr", SHARDED: "s.zarr"}[lib]
        return self.wpath(("app-" if append else "") + name)

    # ------------------------------------------------------------------ chunked arrays

    def chunked(self, n: int) -> dict:
        a = self.args
        folder = os.path.join(self.work, f"c{n}")
        os.makedirs(folder, exist_ok=True)
        paths = {
            OURS: os.path.join(folder, "v.zt"),
            ZARR: os.path.join(folder, "v.zarr"),
            SHARDED: os.path.join(folder, "s.zarr"),
        }
        xr_paths = {OURS: os.path.join(folder, "x.zt"), ZARR: paths[ZARR], SHARDED: paths[SHARDED]}
        x = chunked_array(n)
        key = chunk_key(n)
        res: dict = {"shape": list(x.shape), "data_bytes": x.nbytes}
        print(f"\n{n:,} chunks: shape {x.shape}, {x.nbytes / 2**20:.1f} MiB", flush=True)

        reps = 1 if n >= 1_000_000 else 2 if n >= 100_000 else 3
        if a.quick:
            reps = min(reps, 2)
        writes: dict[str, list] = {lib: [] for lib in CHUNK_LIBS}
        for rep in range(reps):
            order = CHUNK_LIBS if rep % 2 == 0 else tuple(reversed(CHUNK_LIBS))
            for lib in order:
                wl.remove(paths[lib])
                os.sync()
                gc.collect()
                writes[lib].append(_timed(lambda lib=lib: write_chunked(lib, x, paths[lib])))
                print(f"  write {lib:<14} {writes[lib][-1]:8.2f} s", flush=True)
        res["write"] = writes
        res["file_bytes"] = {lib: wl.disk_bytes(p) for lib, p in paths.items()}
        os.sync()
        res["write_dataset"] = [_timed(lambda: write_dataset(x, xr_paths[OURS]))]
        print(f"  write xarray Dataset (ours) {res['write_dataset'][0]:8.2f} s", flush=True)
        for lib in CHUNK_LIBS:  # warm the page cache, and check the values once
            np.testing.assert_array_equal(open_read(lib, paths[lib], key), x[key])
        np.testing.assert_array_equal(open_read(OURS, xr_paths[OURS], key), x[key])

        kj = _key_json(key)
        specs = {
            lib: {
                "case": "open_chunk",
                "lib": lib,
                "path": paths[lib],
                "warm": self.warm_chunk(lib),
                "key": kj,
            }
            for lib in CHUNK_LIBS
        }
        res["open_chunk"] = fresh_times(specs, self.reps)
        self._show("first open + read one chunk", res["open_chunk"])

        mem = {}
        for lib in CHUNK_LIBS:
            spec = dict(specs[lib], case="peak_mem")
            rss = [run_child(spec)["rss"] for _ in range(3)]
            trace = run_child(dict(specs[lib], case="trace_mem"))["peak"]
            mem[lib] = {"rss": _med(rss), "rss_all": rss, "tracemalloc": trace}
            print(
                f"  peak memory of the open   {lib:<14} ru_maxrss +{_med(rss) / 2**20:7.1f} MiB"
                f"   tracemalloc {trace / 2**20:7.1f} MiB",
                flush=True,
            )
        res["peak_mem"] = mem

        xspecs = {
            lib: {
                "case": "xarray",
                "lib": lib,
                "path": xr_paths[lib],
                "key": kj,
                "warm": self.wpath("x.zt") if lib == OURS else self.warm_chunk(lib),
            }
            for lib in CHUNK_LIBS
        }
        xo: dict[str, list] = {lib: [] for lib in CHUNK_LIBS}
        xi: dict[str, list] = {lib: [] for lib in CHUNK_LIBS}
        for rep in range(self.reps):
            for lib in CHUNK_LIBS if rep % 2 == 0 else tuple(reversed(CHUNK_LIBS)):
                r = run_child(xspecs[lib])
                xo[lib].append(r["open"])
                xi[lib].append(r["isel"])
        res["xr_open"], res["xr_isel"] = xo, xi
        self._show("xr.open_dataset", xo)
        self._show("then one chunk .isel().values", xi)

        aspecs = {
            lib: {
                "case": "append_fresh",
                "lib": lib,
                "path": paths[lib],
                "key": kj,
                "warm": self.warm_chunk(lib, append=True),
            }
            for lib in CHUNK_LIBS
        }
        res["append_fresh"] = fresh_times(aspecs, self.reps)
        self._show("append one chunk row, fresh process", res["append_fresh"])
        warm: dict[str, list] = {lib: [] for lib in CHUNK_LIBS}
        for rnd in range(2):
            for lib in CHUNK_LIBS if rnd == 0 else tuple(reversed(CHUNK_LIBS)):
                spec = dict(aspecs[lib], case="append_warm", reps=max(2, self.reps // 2 + 1))
                warm[lib] += run_child(spec)["times"]
        res["append_warm"] = warm
        self._show("append one chunk row, opened before", warm)
        grown = x.shape[0] + CHUNK[0] * (len(warm[OURS]) + len(res["append_fresh"][OURS]))
        for lib in CHUNK_LIBS:  # every append landed, and the old data is intact
            if lib == OURS:
                import ztensor_array as zt

                with zt.Reader(paths[lib]) as r:
                    shape = r.metadata("v").shape
            else:
                shape = zarr_handle(paths[lib]).shape
            assert shape[0] == grown, (lib, shape, grown)
            np.testing.assert_array_equal(open_read(lib, paths[lib], key), x[key])
        if not a.keep:
            wl.remove(folder)
        return res

    def _show(self, what: str, times: dict[str, list], unit: float = 1e3) -> None:
        cells = "  ".join(f"{lib} {_med(t) * unit:9.2f}" for lib, t in times.items())
        print(f"  {what:<38} ms: {cells}", flush=True)

    # ------------------------------------------------------------------ many tensors

    def tensors(self, n: int) -> dict:
        from safetensors.numpy import save_file as st_save

        import ztensor_array as zt

        folder = os.path.join(self.work, f"t{n}")
        os.makedirs(folder, exist_ok=True)
        paths = {OURS: os.path.join(folder, "m.zt"), ST: os.path.join(folder, "m.safetensors")}
        paths[REF] = paths[OURS]
        t = moe_tensors(n)
        name = moe_names(n)[n // 2]
        print(f"\n{n:,} tensors (8 x 8 float32, MoE names)", flush=True)
        res: dict = {
            "write": {
                OURS: [_timed(lambda: zt.save_file(t, paths[OURS]))],
                ST: [_timed(lambda: st_save(t, paths[ST]))],
            }
        }
        res["manifest_bytes"] = len(manifest_bytes(paths[OURS]))
        for lib in TENSOR_LIBS:
            open_tensor(lib, paths[lib], name)  # page cache warm; values checked below
        with zt.Reader(paths[OURS]) as r:
            np.testing.assert_array_equal(r.read_tensor(name), t[name])
        warm = {OURS: self.wpath("t.zt"), REF: self.wpath("t.zt"), ST: self.wpath("t.safetensors")}
        specs = {
            lib: {
                "case": "open_tensor",
                "lib": lib,
                "path": paths[lib],
                "name": name,
                "warm": warm[lib],
            }
            for lib in TENSOR_LIBS
        }
        for label, use_gc in ((CBOR, True), (CBOR_NOGC, False)):
            specs[label] = {"case": "cbor", "path": paths[OURS], "gc": use_gc, "warm": warm[OURS]}
        res["open"] = fresh_times(specs, self.reps)
        self._show("first open + one tensor", res["open"])
        spec = {"case": "reopen_tensor", "path": paths[OURS], "name": name, "warm": warm[OURS]}
        res["reopen"] = run_child(dict(spec, reps=max(5, self.reps)))["times"]
        self._show("reopen + one tensor, same process", {OURS: res["reopen"]})

        small = self.wpath("small.zt")
        base = {"path": paths[OURS], "name": name, "small": small}
        fresh = fresh_times({OURS: dict(base, case="append_tensor_fresh")}, self.reps)
        res["append_fresh"] = fresh[OURS]
        r = run_child(dict(base, case="append_tensor_warm", reps=max(5, self.reps)))
        res["append_warm"], res["append_small"] = r["times"], r["small"]
        self._show(
            "append one tensor",
            {
                "fresh": res["append_fresh"],
                "opened before": res["append_warm"],
                "to a 1-tensor file": res["append_small"],
            },
        )
        with zt.Reader(paths[OURS]) as rd:
            assert len(rd) == n + len(res["append_fresh"]) + len(res["append_warm"])
            np.testing.assert_array_equal(rd.read_tensor(name), t[name])
        if not self.args.keep:
            wl.remove(folder)
        return res

    # ------------------------------------------------------------------ fancy indexing

    def fancy(self) -> dict:
        """Orthogonal and point-wise picks on a (100, 400) grid of (10, 20) chunks: how many
        chunks each library decodes, and how long the read takes (file opened before)."""
        import xarray as xr
        import zarr
        from zarr.codecs import ZstdCodec

        import ztensor_array as zt
        from ztensor_array.layouts.chunked import read as chunked_read

        rng = np.random.default_rng(0)
        x = rng.standard_normal(FANCY_SHAPE, dtype=np.float32)
        folder = os.path.join(self.work, "fancy")
        os.makedirs(folder, exist_ok=True)
        paths = {lib: os.path.join(folder, f"{i}") for i, lib in enumerate(CHUNK_LIBS)}
        ds = xr.Dataset({"v": (("t", "y"), x)})
        zt.to_ztensor(
            ds, paths[OURS], mode="w", encoding={"v": {"chunks": FANCY_CHUNKS, "compress": LEVEL}}
        )
        for lib, shards in ((ZARR, None), (SHARDED, FANCY_SHARDS)):
            write_zarr(x, paths[lib], FANCY_CHUNKS, shards)

        counts = {"n": 0}
        real_chunk, real_zstd = chunked_read._chunk, ZstdCodec._decode_single

        def spy_chunk(*args, **kwargs):
            counts["n"] += 1
            return real_chunk(*args, **kwargs)

        async def spy_zstd(self, *args, **kwargs):
            counts["n"] += 1
            return await real_zstd(self, *args, **kwargs)

        ortho = np.ix_(FANCY_T, FANCY_Y)
        points = (np.array(FANCY_T), np.array(FANCY_POINTS_Y))
        readers = {OURS: zt.Reader(paths[OURS])}
        for lib in (ZARR, SHARDED):
            readers[lib] = zarr.open_array(paths[lib], path="v", mode="r")
        dsets = {lib: open_dataset(lib, paths[lib]) for lib in CHUNK_LIBS}

        def reads(lib):
            r, d = readers[lib], dsets[lib]
            pt = xr.DataArray(FANCY_T, dims="p"), xr.DataArray(FANCY_POINTS_Y, dims="p")
            if lib == OURS:
                ortho_read = lambda: r.read_slice("v", (FANCY_T, FANCY_Y))  # noqa: E731
                point_read = lambda: r.read_points("v", points)  # noqa: E731
            else:
                ortho_read = lambda: r.oindex[FANCY_T, FANCY_Y]  # noqa: E731
                point_read = lambda: r.vindex[points]  # noqa: E731
            return {
                "orthogonal (read_slice / oindex)": (ortho_read, x[ortho]),
                "point-wise (read_points / vindex)": (point_read, x[points]),
                "xarray isel, orthogonal": (
                    lambda: d["v"].isel(t=FANCY_T, y=FANCY_Y).values,
                    x[ortho],
                ),
                "xarray isel, point-wise": (
                    lambda: d["v"].isel(t=pt[0], y=pt[1]).values,
                    x[points],
                ),
            }

        out: dict = {}
        chunked_read._chunk, ZstdCodec._decode_single = spy_chunk, spy_zstd
        try:
            for lib in CHUNK_LIBS:
                for case, (fn, want) in reads(lib).items():
                    counts["n"] = 0
                    np.testing.assert_array_equal(fn(), want)
                    out.setdefault(case, {})[lib] = {"decoded": counts["n"]}
        finally:
            chunked_read._chunk, ZstdCodec._decode_single = real_chunk, real_zstd
        fns = {(lib, case): fn for lib in CHUNK_LIBS for case, (fn, _) in reads(lib).items()}
        times = wl.interleaved(
            {f"{lib}|{case}": fn for (lib, case), fn in fns.items()}, max(7, self.reps * 3)
        )
        for label, tm in times.items():
            lib, case = label.split("|")
            out[case][lib]["times"] = tm.times
        readers[OURS].close()
        for d in dsets.values():
            d.close()
        print("\nfancy indexing: t=[1, 50, 99], y=[0, 399] on (100, 400) in (10, 20) chunks (200)")
        for case, libs in out.items():
            cells = "  ".join(
                f"{lib} {v['decoded']:3d} chunks {_med(v['times']) * 1e3:6.2f} ms"
                for lib, v in libs.items()
            )
            print(f"  {case:<36} {cells}")
        if not self.args.keep:
            wl.remove(folder)
        return out


# ---------------------------------------------------------------------------- targets


def _target(name, value, limit, unit="x", detail=""):
    ok = None if limit is None else bool(value <= limit)
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "unit": unit,
        "pass": ok,
        "detail": detail,
    }


def targets(res: dict) -> list[dict]:
    out: list[dict] = []
    ch = {int(k): v for k, v in res.get("chunked", {}).items()}
    if ch:
        lo, hi = min(ch), max(ch)
        big = ch[hi]
        m = lambda case, n, lib=OURS: _med(ch[n][case][lib])  # noqa: E731
        out.append(
            _target(
                f"open + read one chunk: {hi:,} vs {lo:,} chunks",
                m("open_chunk", hi) / m("open_chunk", lo),
                1.5,
                detail=f"{m('open_chunk', hi) * 1e3:.2f} vs {m('open_chunk', lo) * 1e3:.2f} ms",
            )
        )
        out.append(
            _target(
                f"open + read one chunk at {hi:,} chunks vs zarr",
                m("open_chunk", hi) / m("open_chunk", hi, ZARR),
                1.0,
                detail=f"{m('open_chunk', hi) * 1e3:.2f} vs "
                f"{m('open_chunk', hi, ZARR) * 1e3:.2f} ms",
            )
        )
        out.append(
            _target(
                f"open + read one chunk at {hi:,} chunks vs zarr sharded (no target)",
                m("open_chunk", hi) / m("open_chunk", hi, SHARDED),
                None,
            )
        )
        base = 1_000 if 1_000 in ch else lo
        for case, label in (("append_warm", "opened before"), ("append_fresh", "fresh process")):
            out.append(
                _target(
                    f"append one chunk row ({label}): {hi:,} vs {base:,} chunks",
                    m(case, hi) / m(case, base),
                    1.5,
                    detail=f"{m(case, hi) * 1e3:.2f} vs {m(case, base) * 1e3:.2f} ms",
                )
            )
            out.append(
                _target(
                    f"append one chunk row ({label}) at {hi:,} chunks vs zarr resize + write",
                    m(case, hi) / m(case, hi, ZARR),
                    1.0,
                    detail=f"{m(case, hi) * 1e3:.2f} vs {m(case, hi, ZARR) * 1e3:.2f} ms",
                )
            )
            out.append(
                _target(
                    f"append one chunk row ({label}) at {hi:,} chunks vs zarr sharded (no target)",
                    m(case, hi) / m(case, hi, SHARDED),
                    None,
                )
            )
        wn = (
            100_000
            if 100_000 in ch
            else max(n for n in ch if n <= 100_000)
            if any(n <= 100_000 for n in ch)
            else hi
        )
        out.append(
            _target(
                f"write {wn:,} chunks vs zarr",
                m("write", wn) / m("write", wn, ZARR),
                1.0,
                detail=f"{m('write', wn):.2f} vs {m('write', wn, ZARR):.2f} s",
            )
        )
        out.append(
            _target(
                f"write {wn:,} chunks vs zarr sharded (no target)",
                m("write", wn) / m("write", wn, SHARDED),
                None,
            )
        )
        out.append(
            _target(
                f"xr.open_dataset, one variable of {hi:,} chunks",
                _med(big["xr_open"][OURS]) * 1e3,
                50.0,
                "ms",
                detail=f"zarr {_med(big['xr_open'][ZARR]) * 1e3:.1f} ms",
            )
        )
        out.append(
            _target(
                f"then a single-chunk .isel(...).values ({hi:,} chunks)",
                _med(big["xr_isel"][OURS]) * 1e3,
                10.0,
                "ms",
                detail=f"zarr {_med(big['xr_isel'][ZARR]) * 1e3:.1f} ms",
            )
        )
        out.append(
            _target(
                f"peak memory opening the {hi:,}-chunk file (ru_maxrss over the interpreter's)",
                big["peak_mem"][OURS]["rss"] / 2**20,
                100.0,
                "MiB",
                detail=f"tracemalloc peak {big['peak_mem'][OURS]['tracemalloc'] / 2**20:.1f} "
                f"MiB; zarr {big['peak_mem'][ZARR]['rss'] / 2**20:.1f} MiB",
            )
        )
    tn = {int(k): v for k, v in res.get("tensors", {}).items()}
    if tn:
        hi = max(tn)
        t = tn[hi]
        first = _med(t["open"][OURS])
        out.append(
            _target(
                f"{hi:,} tensors, first open + one tensor vs cbor2.loads of its manifest",
                first / _med(t["open"][CBOR]),
                1.1,
                detail=f"{first * 1e3:.1f} vs {_med(t['open'][CBOR]) * 1e3:.1f} ms",
            )
        )
        for peer in (CBOR_NOGC, REF, ST):
            out.append(
                _target(
                    f"{hi:,} tensors, first open + one tensor vs {peer} (no target)",
                    first / _med(t["open"][peer]),
                    None,
                    detail=f"{first * 1e3:.1f} vs {_med(t['open'][peer]) * 1e3:.1f} ms",
                )
            )
        out.append(
            _target(
                f"{hi:,} tensors, reopen in the same process vs {REF}'s first open",
                _med(t["reopen"]) / _med(t["open"][REF]),
                0.1,
                detail=f"{_med(t['reopen']) * 1e3:.2f} vs {_med(t['open'][REF]) * 1e3:.1f} ms",
            )
        )
        fixed = _med(t["append_small"])
        out.append(
            _target(
                f"{hi:,} tensors, append one (opened before) vs first open",
                _med(t["append_warm"]) / first,
                0.2 + fixed / first,
                detail=f"{_med(t['append_warm']) * 1e3:.1f} ms; limit 0.2x + the same "
                f"append to a 1-tensor file ({fixed * 1e3:.2f} ms)",
            )
        )
        out.append(
            _target(
                f"{hi:,} tensors, append one (fresh process) vs first open",
                _med(t["append_fresh"]) / first,
                1.2,
                detail=f"{_med(t['append_fresh']) * 1e3:.1f} vs {first * 1e3:.1f} ms",
            )
        )
    fa = res.get("fancy")
    if fa:
        for case in ("orthogonal (read_slice / oindex)", "point-wise (read_points / vindex)"):
            ours, theirs = fa[case][OURS]["decoded"], fa[case][ZARR]["decoded"]
            out.append(
                _target(
                    f"fancy indexing, {case}: chunks decoded, ours - zarr's",
                    ours - theirs,
                    0,
                    "chunks",
                    detail=f"{ours} vs {theirs}",
                )
            )
    return out


# ---------------------------------------------------------------------------- output


def _fmt_value(t: dict) -> str:
    v = t["value"]
    return (
        f"{v:.3f}x"
        if t["unit"] == "x"
        else f"{v:.1f} {t['unit']}"
        if t["unit"] != "chunks"
        else f"{v:+d}"
    )


def _fmt_limit(t: dict) -> str:
    if t["limit"] is None:
        return "-"
    return f"<= {t['limit']:.3g}x" if t["unit"] == "x" else f"<= {t['limit']:g} {t['unit']}"


def _verdict(t: dict) -> str:
    return "info" if t["pass"] is None else "PASS" if t["pass"] else "MISS"


def print_targets(ts: list[dict]) -> None:
    print("\nTargets (issue 14), ratios within this run:")
    for t in ts:
        print(
            f"  {_verdict(t):4}  {t['target']:<78} {_fmt_value(t):>12} "
            f"{_fmt_limit(t):>12}  {t['detail']}"
        )


def markdown(res: dict) -> str:
    meta = res["meta"]
    lines = [
        "# Scale: cost against the number of chunks and tensors (issue 14)",
        "",
        f"Measured {meta['date']} on {meta['cpu']} ({meta['cores']} cores, "
        f"{meta['memory_gib']} GiB), "
        f"Python {meta['python']}, numpy {meta['numpy']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f". Load average (1/5/15 min) before {meta['load_before']}, after {meta['load_after']}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Times are medians in milliseconds unless marked; first-open rows run in a fresh "
        "interpreter each (see benchmark/README.md).",
        "",
        "## Targets",
        "",
        "| | target | measured | limit | detail |",
        "|---|---|---:|---:|---|",
    ]
    for t in res["targets"]:
        lines.append(
            f"| {_verdict(t)} | {t['target']} | {_fmt_value(t)} | {_fmt_limit(t)} | {t['detail']} |"
        )
    ch = res.get("chunked", {})
    if ch:
        sizes = sorted(ch, key=int)
        lines += ["", "## Chunked arrays (8 x 8 float32 chunks, zstd 3, grid N/10 x 10)", ""]
        lines.append("| case | library | " + " | ".join(f"{int(n):,}" for n in sizes) + " |")
        lines.append("|---|---|" + "---:|" * len(sizes))
        rows = [
            ("write (s)", "write", 1.0),
            ("write the xarray Dataset (s)", "write_dataset", 1.0),
            ("first open + read one chunk", "open_chunk", 1e3),
            ("append one chunk row, opened before", "append_warm", 1e3),
            ("append one chunk row, fresh process", "append_fresh", 1e3),
            ("xr.open_dataset", "xr_open", 1e3),
            ("then one chunk `.isel().values`", "xr_isel", 1e3),
        ]
        for label, case, scale in rows:
            libs = [OURS] if case == "write_dataset" else CHUNK_LIBS
            for lib in libs:
                cells = []
                for n in sizes:
                    v = ch[n][case]
                    v = v if case == "write_dataset" else v.get(lib, [])
                    cells.append(f"{_med(v) * scale:.2f}" if v else "-")
                lines.append(f"| {label} | {lib} | " + " | ".join(cells) + " |")
        for lib in CHUNK_LIBS:
            cells = [f"{ch[n]['peak_mem'][lib]['rss'] / 2**20:.1f}" for n in sizes]
            lines.append(
                f"| peak memory of the open, ru_maxrss (MiB) | {lib} | " + " | ".join(cells) + " |"
            )
        for lib in CHUNK_LIBS:
            cells = [f"{ch[n]['peak_mem'][lib]['tracemalloc'] / 2**20:.1f}" for n in sizes]
            lines.append(
                f"| peak memory of the open, tracemalloc (MiB) | {lib} | "
                + " | ".join(cells)
                + " |"
            )
        for lib in CHUNK_LIBS:
            cells = [f"{ch[n]['file_bytes'][lib] / 2**20:.1f}" for n in sizes]
            lines.append(f"| stored bytes (MiB) | {lib} | " + " | ".join(cells) + " |")
    tn = res.get("tensors", {})
    if tn:
        counts = sorted(tn, key=int)
        lines += ["", "## Dense tensors (8 x 8 float32, MoE names)", ""]
        lines.append("| case | library | " + " | ".join(f"{int(n):,}" for n in counts) + " |")
        lines.append("|---|---|" + "---:|" * len(counts))
        for lib in (*TENSOR_LIBS, CBOR, CBOR_NOGC):
            cells = [f"{_med(tn[n]['open'][lib]) * 1e3:.2f}" for n in counts]
            what = (
                "manifest decode alone" if lib in (CBOR, CBOR_NOGC) else "first open + one tensor"
            )
            lines.append(f"| {what} | {lib} | " + " | ".join(cells) + " |")
        for label, case in (
            ("reopen + one tensor, same process", "reopen"),
            ("append one tensor, opened before", "append_warm"),
            ("append one tensor, fresh process", "append_fresh"),
            ("append one tensor to a 1-tensor file", "append_small"),
        ):
            cells = [f"{_med(tn[n][case]) * 1e3:.2f}" for n in counts]
            lines.append(f"| {label} | {OURS} | " + " | ".join(cells) + " |")
        for lib in (OURS, ST):
            cells = [f"{_med(tn[n]['write'][lib]):.2f}" for n in counts]
            lines.append(f"| write (s) | {lib} | " + " | ".join(cells) + " |")
        cells = [f"{tn[n]['manifest_bytes'] / 1e6:.2f}" for n in counts]
        lines.append(f"| manifest (MB) | {OURS} | " + " | ".join(cells) + " |")
    fa = res.get("fancy")
    if fa:
        lines += [
            "",
            "## Fancy indexing: t=[1, 50, 99], y=[0, 399] (points: y=[0, 200, 399]) "
            "on (100, 400) in (10, 20) chunks",
            "",
            "| selection | library | chunks decoded | ms |",
            "|---|---|---:|---:|",
        ]
        for case, libs in fa.items():
            for lib, v in libs.items():
                lines.append(f"| {case} | {lib} | {v['decoded']} | {_med(v['times']) * 1e3:.2f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install ztensor-array[bench])")
        return False
    ch = {int(k): v for k, v in res.get("chunked", {}).items()}
    tn = {int(k): v for k, v in res.get("tensors", {}).items()}
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    colors = {
        OURS: "tab:blue",
        ZARR: "tab:orange",
        SHARDED: "tab:green",
        REF: "tab:red",
        ST: "tab:purple",
        CBOR: "tab:gray",
        CBOR_NOGC: "tab:olive",
    }
    sizes = sorted(ch)
    ax = axes[0]
    for case, style, label in (
        ("open_chunk", "-", "open + read a chunk"),
        ("append_warm", "--", "append a chunk row (opened before)"),
        ("append_fresh", ":", "append a chunk row (fresh process)"),
    ):
        for lib in CHUNK_LIBS:
            ax.plot(
                sizes,
                [_med(ch[n][case][lib]) * 1e3 for n in sizes],
                style,
                marker="o",
                color=colors[lib],
                label=f"{lib}: {label}",
            )
    ax.plot(
        sizes,
        [_med(ch[n]["xr_open"][OURS]) * 1e3 for n in sizes],
        "-.",
        marker="s",
        color="black",
        label=f"{OURS}: xr.open_dataset",
    )
    ax.set_title("open, read and append (ms)")
    ax = axes[1]
    for lib in CHUNK_LIBS:
        ax.plot(
            sizes,
            [_med(ch[n]["write"][lib]) for n in sizes],
            "-",
            marker="o",
            color=colors[lib],
            label=lib,
        )
    ax.set_title("write the whole array (s)")
    for ax in axes[:2]:
        ax.set_xlabel("chunks")
    ax = axes[2]
    counts = sorted(tn)
    for lib in (*TENSOR_LIBS, CBOR):
        ax.plot(
            counts,
            [_med(tn[n]["open"][lib]) * 1e3 for n in counts],
            "-",
            marker="o",
            color=colors[lib],
            label=f"{lib}: first open + one tensor"
            if lib != CBOR
            else "cbor2.loads of the manifest",
        )
    for case, style, label in (
        ("reopen", "--", "reopen"),
        ("append_warm", ":", "append one (opened before)"),
        ("append_fresh", "-.", "append one (fresh process)"),
    ):
        ax.plot(
            counts,
            [_med(tn[n][case]) * 1e3 for n in counts],
            style,
            marker="s",
            color=colors[OURS],
            label=f"{OURS}: {label}",
        )
    ax.set_xlabel("tensors")
    ax.set_title("many small tensors (ms)")
    has_data = (bool(ch), bool(ch), bool(tn))  # --skip leaves parts out
    for ax, used in zip(axes, has_data):
        if not used:
            ax.set_axis_off()
            continue
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    meta = res["meta"]
    fig.suptitle(
        f"Cost against size ({meta['date']}, {meta['cores']} cores; medians; lower is better)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


README_START = "<!-- scale:start (generated by benchmark/scale_perf.py --readme) -->"
README_END = "<!-- scale:end -->"


def update_readme(readme: str, res: dict, out_dir: str, stem: str) -> None:
    with open(readme) as f:
        text = f.read()
    i, j = text.find(README_START), text.find(README_END)
    if i < 0 or j < i:
        print(f"{readme}: no scale markers ({README_START} ... {README_END}); not updated")
        return
    rel = os.path.relpath(out_dir, os.path.dirname(os.path.abspath(readme)))
    meta = res["meta"]
    body = [
        f"![cost against size]({rel}/{stem}.png)",
        "",
        f"Measured {meta['date']} ({meta['cores']} cores; load average before "
        f"{meta['load_before']}, after {meta['load_after']}) at "
        f"{', '.join(f'{int(n):,}' for n in meta['sizes'])} chunks and "
        f"{', '.join(f'{int(n):,}' for n in meta['tensor_counts'])} tensors. "
        f"Command: `{meta['command']}`",
        "",
        "| | target | measured | limit |",
        "|---|---|---:|---:|",
    ]
    for t in res["targets"]:
        body.append(f"| {_verdict(t)} | {t['target']} | {_fmt_value(t)} | {_fmt_limit(t)} |")
    body += ["", f"All rows and sizes: [{rel}/{stem}.md]({rel}/{stem}.md).", ""]
    new = text[: i + len(README_START)] + "\n" + "\n".join(body) + text[j:]
    with open(readme, "w") as f:
        f.write(new)
    print(f"updated the scale section of {readme}")


def write_outputs(res: dict, out_dir: str, stem: str, readme: str | None) -> None:
    res["targets"] = targets(res)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(markdown(res))
    png = plot(res, os.path.join(out_dir, stem + ".png"))
    print_targets(res["targets"])
    print(f"\nwrote {out_dir}/{stem}.json, .md" + (", .png" if png else ""))
    if readme:
        update_readme(readme, res, out_dir, stem)


def _sizes(text: str) -> list[int]:
    return sorted({int(float(s)) for s in text.split(",") if s.strip()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--quick", action="store_true", help="10^2..10^4 chunks, 10^3/10^4 tensors, few repetitions"
    )
    ap.add_argument(
        "--sizes",
        help="chunk counts, comma-separated (multiples of 10; default 1e2,1e3,1e4,1e5,1e6)",
    )
    ap.add_argument("--tensors", help="tensor counts, comma-separated (default 1e3,1e5)")
    ap.add_argument(
        "--reps",
        type=int,
        default=0,
        help="repetitions of the fresh-process cases (default 7, quick 3)",
    )
    ap.add_argument(
        "--dir", help="where to put the files (default: a fresh temp folder, removed after)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--stem", help="output file names (default scale_perf, scale_perf_quick)")
    ap.add_argument("--readme", help="rewrite this README's scale section (between its markers)")
    ap.add_argument(
        "--replot", action="store_true", help="only remake md/png (and --readme) from the JSON"
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=("chunked", "tensors", "fancy"))
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    stem = args.stem or ("scale_perf_quick" if args.quick else "scale_perf")
    if args.replot:
        with open(os.path.join(args.out, stem + ".json")) as f:
            res = json.load(f)
        write_outputs(res, args.out, stem, args.readme)
        return 0
    sizes = _sizes(args.sizes) if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    counts = (
        _sizes(args.tensors) if args.tensors else list(QUICK_TENSORS if args.quick else TENSORS)
    )
    if any(n % GRID_COLS or n < GRID_COLS for n in sizes):
        ap.error(f"chunk counts must be multiples of {GRID_COLS}")
    import ztensor_array

    cmd = "python benchmark/scale_perf.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    meta = wl.machine_description()
    meta.update(
        versions=wl.versions(
            "ztensor-array", "ztensor", "zarr", "safetensors", "xarray", "cbor2", "dask"
        ),
        ztensor_array_from=os.path.dirname(ztensor_array.__file__),
        load_before=[round(v, 2) for v in os.getloadavg()],
        command=cmd.strip(),
        sizes=sizes,
        tensor_counts=counts,
        chunk="8 x 8 float32, zstd level 3, grid N/10 x 10; zarr shards of 100 x 10 chunks",
        tensor="8 x 8 float32, names model.layers.{i}.mlp.experts.{j}.w{k}.weight",
        memory="ru_maxrss after open + one chunk minus before, in a fresh interpreter (after "
        "imports and a warm-up open); tracemalloc peak beside it",
    )
    print(f"load average before: {meta['load_before']}; files in {args.dir or 'a temp folder'}")
    run = Run(args)
    t_start = time.perf_counter()
    res: dict = {"meta": meta, "chunked": {}, "tensors": {}}
    try:
        run.setup_warm()
        if "fancy" not in args.skip:
            res["fancy"] = run.fancy()
        if "tensors" not in args.skip:
            for n in counts:
                res["tensors"][str(n)] = run.tensors(n)
        if "chunked" not in args.skip:
            for n in sizes:
                res["chunked"][str(n)] = run.chunked(n)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(run.work, ignore_errors=True)
    meta["load_after"] = [round(v, 2) for v in os.getloadavg()]
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    write_outputs(res, args.out, stem, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
