"""The performance targets of the core format (issue 2), each as a ratio in one run.

Workload: ~1 GiB of float32 in 200 tensors of LLM-like shapes, page cache warm. Every figure
is a ratio against its baseline measured in the same run, candidates interleaved repetition by
repetition, so a busy machine slows both sides alike. The ratio is taken on the minimum over
the repetitions (the median ratio is printed beside it).

    python benchmark/core_perf.py                 # 1 GiB, the figures of the issue
    python benchmark/core_perf.py --quick         # 64 MiB, few repetitions: a smoke run
    python benchmark/core_perf.py --profile       # also cProfile our side of each case

Writes a JSON file and a markdown table (``--out``, default benchmark/results/).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads as wl  # noqa: E402

import ztensor_array as zt  # noqa: E402
from ztensor_array import constants  # noqa: E402
from ztensor_array import manifest as zt_manifest  # noqa: E402
from ztensor_array import validation as zt_validation  # noqa: E402

try:  # the reference implementation, the interop oracle (optional here)
    import ztensor as ref
    import ztensor.numpy as ref_np
except ImportError:  # pragma: no cover - the test extra installs it
    ref = ref_np = None


@dataclass
class Row:
    """One line of the result table: ours against a baseline."""

    case: str
    ours: str
    baseline: str
    ours_s: float
    baseline_s: float
    ratio: float  # ours / baseline time (or the figure itself, for memory and throughput)
    median_ratio: float
    target: str
    holds: bool | None
    note: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = args.dir or tempfile.mkdtemp(prefix="zt-core-perf-")
        os.makedirs(self.dir, exist_ok=True)
        self.rows: list[Row] = []
        shapes = wl.llm_shapes(args.size_mib * wl.MiB)
        t0 = time.perf_counter()
        self.tensors = wl.make_tensors(shapes)
        self.size = wl.nbytes(self.tensors)
        self.names = sorted(self.tensors)
        print(
            f"workload: {len(self.tensors)} float32 tensors, {self.size / wl.MiB:.0f} MiB "
            f"(generated in {time.perf_counter() - t0:.1f} s), files in {self.dir}",
            flush=True,
        )
        self.zt_path = self.path("ours.zt")
        zt.save_file(self.tensors, self.zt_path)
        self.zst_path = self.path("ours-zstd3.zt")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def reps(self, full: int, quick: int) -> int:
        return self.args.reps or (quick if self.args.quick else full)

    def add(
        self,
        case: str,
        timings: dict[str, wl.Timing],
        ours: str,
        baseline: str,
        target: float | None,
        *,
        better: str = "lower",
        note: str = "",
        unit: str = "s",
    ) -> Row:
        o, b = timings[ours], timings[baseline]
        ratio, median_ratio = o.min / b.min, o.median / b.median
        if better == "higher":  # throughput: ours / theirs as speed
            ratio, median_ratio = 1 / ratio, 1 / median_ratio
        holds = None
        target_s = ""
        if target is not None:
            holds = ratio <= target if better == "lower" else ratio >= target
            target_s = f"{'<=' if better == 'lower' else '>='} {target:g}x"
        row = Row(case, ours, baseline, o.min, b.min, ratio, median_ratio, target_s, holds, note)
        self.rows.append(row)
        flag = {True: "ok", False: "MISS", None: ""}[holds]
        figures = (
            ""
            if unit != "s"
            else (f"{ours} {o.min * 1e3:9.3f} ms vs {baseline} {b.min * 1e3:9.3f} ms -> ")
        )
        print(
            f"  {case:<26} {figures}{ratio:6.3f}x (median {median_ratio:6.3f}x) {target_s} {flag}",
            flush=True,
        )
        return row

    def warm(self, *paths: str) -> None:
        for p in paths:
            wl.readinto_seconds(p)

    # ------------------------------------------------------------------ cases

    def write(self) -> None:
        print("raw write (page cache; old output deleted, dirty pages synced, clean cache dropped)")
        with open(self.zt_path, "rb") as f:
            file_bytes = f.read()
        outs = {
            "write()": self.path("w-plain.bin"),
            "ztensor_array": self.path("w-ours.zt"),
            "Writer.add_tensor": self.path("w-writer.zt"),
            "ztensor 1.1.1": self.path("w-ref.zt"),
            "safetensors": self.path("w-st.safetensors"),
        }
        cands: dict[str, Callable] = {
            "write()": lambda: wl.write_seconds(outs["write()"], file_bytes),
            "ztensor_array": lambda: zt.save_file(self.tensors, outs["ztensor_array"]),
            # the seed README's way: a Writer with default arguments, one add_tensor each
            "Writer.add_tensor": lambda: self._writer_save(outs["Writer.add_tensor"]),
        }
        if ref_np is not None:
            cands["ztensor 1.1.1"] = lambda: ref_np.save_file(self.tensors, outs["ztensor 1.1.1"])
        try:
            import safetensors.numpy as st_np

            cands["safetensors"] = lambda: st_np.save_file(self.tensors, outs["safetensors"])
        except ImportError:
            pass
        t = wl.interleaved(
            cands, self.reps(5, 2), setup=lambda n: wl.drop_dirty(outs[n], drop_cache=True)
        )
        self.add("raw write", t, "ztensor_array", "write()", 1.05)
        self.add("raw write, Writer", t, "Writer.add_tensor", "write()", 1.05)
        if "safetensors" in t:
            self.add("raw write, Writer (peer)", t, "Writer.add_tensor", "safetensors", 1.0)
        for peer in ("ztensor 1.1.1", "safetensors"):
            if peer in t:
                self.add("raw write (peer)", t, peer, "write()", None)
        if not self.args.quick or self.args.durable:
            print("durable write (fsync)")
            d = {
                "write()+fsync": lambda: wl.write_seconds(outs["write()"], file_bytes, True),
                "ztensor_array": lambda: self._durable_save(outs["ztensor_array"]),
            }
            t = wl.interleaved(
                d,
                self.reps(3, 1),
                setup=lambda n: wl.drop_dirty(
                    outs["write()" if n == "write()+fsync" else n], drop_cache=True
                ),
            )
            self.add("durable write", t, "ztensor_array", "write()+fsync", 1.05)
        for p in outs.values():
            if os.path.exists(p):
                os.unlink(p)

    def _writer_save(self, path: str) -> None:
        with zt.Writer(path) as w:
            for name, a in self.tensors.items():
                w.add_tensor(name, a)

    def _durable_save(self, path: str) -> None:
        with zt.Writer(path, durable=True) as w:
            for name, a in self.tensors.items():
                w.add_tensor(name, a)

    def read_all(self) -> None:
        print("read all (open + every tensor as an owned array)")
        h5_path = self.path("peer.h5")
        cands: dict[str, Callable] = {
            "readinto": lambda: wl.readinto_seconds(self.zt_path),
            "ztensor_array": lambda: zt.load_file(self.zt_path),
        }
        try:
            import h5py

            with h5py.File(h5_path, "w") as f:
                for name, a in self.tensors.items():
                    f.create_dataset(name, data=a)

            def h5_read():
                with h5py.File(h5_path, "r") as f:
                    return {k: f[k][()] for k in f}

            cands["h5py"] = h5_read
            self.warm(h5_path)
        except ImportError:
            pass
        if ref_np is not None:
            # The reference hands back zero-copy views of its map: copy them to own them.
            cands["ztensor 1.1.1"] = lambda: {
                k: np.array(v) for k, v in ref_np.load_file(self.zt_path).items()
            }
        self.warm(self.zt_path)
        t = wl.interleaved(cands, self.reps(5, 2))
        if "h5py" in t:
            self.add("read all", t, "ztensor_array", "h5py", 1.0)
        if "ztensor 1.1.1" in t:
            self.add("read all", t, "ztensor_array", "ztensor 1.1.1", None)
            if "h5py" in t:
                self.add("read all (peer)", t, "h5py", "ztensor 1.1.1", None)
        self.add("read all vs floor", t, "ztensor_array", "readinto", 1.0)
        if os.path.exists(h5_path):
            os.unlink(h5_path)

    def first_tensor(self) -> None:
        print("first tensor (open + first tensor as a zero-copy view)")
        first = self.names[0]
        with zt.Reader(self.zt_path) as r:
            comp = r.manifest.objects[first].components["data"]
            offset, count = comp.offset, comp.length // 4
            shape = r.manifest.objects[first].shape

        def floor():
            import mmap

            fd = os.open(self.zt_path, os.O_RDONLY)
            try:
                mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            return np.frombuffer(mm, np.float32, count, offset).reshape(shape)

        def ours():
            with zt.Reader(self.zt_path) as r:
                return r.read_tensor(first)

        def ours_first_open():  # as if the process had never opened the file
            zt_validation.forget_memo()
            return ours()

        import cbor2

        with open(self.zt_path, "rb") as f:
            f.seek(r.manifest_offset)
            cbor = f.read(r.size - r.manifest_offset - 16)
        known_tail = cbor + zt_manifest.footer(cbor)

        def least_validating():  # what any reader that checks the file must add to the floor
            import mmap

            fd = os.open(self.zt_path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if os.pread(fd, 8, 0) != constants.MAGIC:
                    raise ValueError("magic")
                if not os.pread(fd, len(known_tail), size - len(known_tail)).endswith(known_tail):
                    raise ValueError("manifest changed")
                mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            return np.frombuffer(mm, np.float32, count, offset).reshape(shape)

        def cbor_only():  # what any Python reader pays at open before looking at a tensor
            return cbor2.loads(cbor)

        cands: dict[str, Callable] = {
            "mmap+frombuffer": floor,
            "ztensor_array": ours,
            "ztensor_array, first open": ours_first_open,
            "cbor2.loads": cbor_only,
            "straight-line reopen": least_validating,
        }
        if ref is not None:

            def reference():
                with ref.Reader(self.zt_path) as r:
                    a = r.read_tensor(first)
                    return a

            cands["ztensor 1.1.1"] = reference
        t = wl.interleaved(cands, self.reps(300, 50), collect=False)
        self.add("first tensor (reopen)", t, "ztensor_array", "mmap+frombuffer", 2.0)
        self.add(
            "first tensor (first open)", t, "ztensor_array, first open", "mmap+frombuffer", 2.0
        )
        self.add(
            "first tensor, least a checking reopen does",
            t,
            "straight-line reopen",
            "mmap+frombuffer",
            None,
            note="no Python beyond the syscalls: footer magic, manifest bytes compared",
        )
        self.add(
            "manifest CBOR decode alone",
            t,
            "cbor2.loads",
            "mmap+frombuffer",
            None,
            note=f"{len(cbor)} bytes of manifest",
        )
        if "ztensor 1.1.1" in t:
            self.add("first tensor (peer)", t, "ztensor 1.1.1", "mmap+frombuffer", None)

    def metadata(self) -> None:
        print("metadata (open + names, shapes and dtypes of every tensor)")

        def ours():
            with zt.Reader(self.zt_path) as r:
                return [(m.name, m.shape, m.dtype) for m in r]

        def ours_first_open():  # as if the process had never opened the file
            zt_validation.forget_memo()
            return ours()

        import cbor2

        with zt.Reader(self.zt_path) as r:
            start, end = r.manifest_offset, r.size - 16
        with open(self.zt_path, "rb") as f:
            f.seek(start)
            cbor = f.read(end - start)
        cands: dict[str, Callable] = {
            "ztensor_array": ours,
            "ztensor_array, first open": ours_first_open,
            "cbor2.loads": lambda: cbor2.loads(cbor),
        }
        if ref is not None:

            def reference():
                with ref.Reader(self.zt_path) as r:
                    return [(m.name, m.shape, m.dtype) for m in r]

            cands["ztensor 1.1.1"] = reference
        try:
            import safetensors
            import safetensors.numpy as st_np

            st_path = self.path("meta.safetensors")
            st_np.save_file(self.tensors, st_path)

            def st_list():
                with safetensors.safe_open(st_path, "np") as f:
                    out = []
                    for k in f.keys():
                        s = f.get_slice(k)
                        out.append((k, s.get_shape(), s.get_dtype()))
                    return out

            cands["safetensors"] = st_list
        except ImportError:
            pass
        t = wl.interleaved(cands, self.reps(300, 50), collect=False)
        if "ztensor 1.1.1" in t:
            self.add("metadata (reopen)", t, "ztensor_array", "ztensor 1.1.1", 0.25)
            self.add("metadata (first open)", t, "ztensor_array, first open", "ztensor 1.1.1", 0.25)
            self.add("manifest CBOR decode alone", t, "cbor2.loads", "ztensor 1.1.1", None)
            if "safetensors" in t:
                self.add("metadata (peer)", t, "safetensors", "ztensor 1.1.1", None)

    def zstd(self) -> None:
        if ref_np is None:
            return
        print("zstd level 3 (whole file; throughput of uncompressed bytes)")
        outs = {
            "ztensor_array": self.zst_path,
            "ztensor 1.1.1": self.path("ref-zstd3.zt"),
            "compression alone": None,
        }
        w = {
            "ztensor_array": lambda: zt.save_file(self.tensors, outs["ztensor_array"], compress=3),
            "ztensor 1.1.1": lambda: ref_np.save_file(
                self.tensors, outs["ztensor 1.1.1"], compression=3
            ),
            "compression alone": lambda: wl.compress_all(self.tensors, 3, os.cpu_count() or 1),
        }
        t = wl.interleaved(
            w, self.reps(3, 1), setup=lambda n: wl.drop_dirty(outs[n], drop_cache=True)
        )
        ratio = self.size / os.path.getsize(self.zst_path)
        self.add(
            "zstd-3 write throughput",
            t,
            "ztensor_array",
            "ztensor 1.1.1",
            1.7,
            better="higher",
            note=f"compression ratio {ratio:.3f}",
        )
        self.add(
            "zstd-3 write, ceiling here",
            t,
            "compression alone",
            "ztensor 1.1.1",
            None,
            better="higher",
            note=f"level-3 frames of every tensor on {os.cpu_count()} threads, nothing written",
        )
        self.warm(outs["ztensor_array"], outs["ztensor 1.1.1"])
        r = {
            "ztensor_array": lambda: zt.load_file(outs["ztensor_array"]),
            "ztensor 1.1.1": lambda: ref_np.load_file(outs["ztensor 1.1.1"]),
        }
        t = wl.interleaved(r, self.reps(3, 1))
        self.add(
            "zstd-3 read throughput", t, "ztensor_array", "ztensor 1.1.1", 1.5, better="higher"
        )
        os.unlink(outs["ztensor 1.1.1"])

    def imports(self) -> None:
        print("import (fresh interpreters; time of the import statement alone)")
        code = (
            "import sys, time; t = time.perf_counter(); import {m}; "
            "dt = time.perf_counter() - t; "
            "print(dt, ','.join(x for x in ('torch', 'xarray', 'dask') if x in sys.modules))"
        )
        out = {"numpy": wl.Timing("numpy"), "ztensor_array": wl.Timing("ztensor_array")}
        heavy = set()
        env = wl.bytecode_env()
        for name in out:  # untimed: writes the bytecode caches
            wl.subprocess_value(code.format(m=name), env)
        for _ in range(self.reps(15, 4)):
            for name in out:
                dt, mods = (wl.subprocess_value(code.format(m=name), env).split(" ") + [""])[:2]
                out[name].times.append(float(dt))
                if name == "ztensor_array" and mods:
                    heavy.update(mods.split(","))
        self.add(
            "import",
            out,
            "ztensor_array",
            "numpy",
            1.2,
            note="heavy modules imported: " + (", ".join(sorted(heavy)) or "none"),
        )
        if heavy:
            self.rows[-1].holds = False

    def peak_memory(self) -> None:
        print("peak RSS of loading everything (fresh process; VmHWM minus RSS before loading)")
        probe = (
            "import sys\n"
            "def status(key):\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith(key):\n"
            "            return int(line.split()[1]) * 1024\n"
            "{imports}\n"
            "before = status('VmRSS:')\n"
            "d = {load}\n"
            "print(status('VmHWM:') - before)\n"
        )
        cases = {
            "ztensor_array": ("import ztensor_array as zt", f"zt.load_file({self.zt_path!r})"),
        }
        if ref_np is not None:
            cases["ztensor 1.1.1"] = (
                "import numpy as np, ztensor.numpy as zn",
                f"{{k: np.array(v) for k, v in zn.load_file({self.zt_path!r}).items()}}",
            )
        try:
            import safetensors  # noqa: F401

            st_path = self.path("meta.safetensors")
            if not os.path.exists(st_path):
                import safetensors.numpy as st_np

                st_np.save_file(self.tensors, st_path)
            cases["safetensors"] = (
                "import safetensors.numpy as sn",
                f"sn.load_file({st_path!r})",
            )
        except ImportError:
            pass
        peaks: dict[str, float] = {}
        for name, (imports, load) in cases.items():
            vals = [
                int(wl.subprocess_value(probe.format(imports=imports, load=load)))
                for _ in range(self.reps(2, 1))
            ]
            peaks[name] = min(vals) / self.size
            print(f"  peak RSS {name:<16} {peaks[name]:.3f}x the data size", flush=True)
        t = {"ztensor_array": wl.Timing("ztensor_array", [peaks["ztensor_array"]])}
        t["data size"] = wl.Timing("data size", [1.0])
        self.add("peak RSS / data size", t, "ztensor_array", "data size", 1.1, unit="x")
        for name, v in peaks.items():
            if name != "ztensor_array":
                self.rows.append(Row("peak RSS (peer)", name, "data size", v, 1.0, v, v, "", None))

    def fresh_process(self) -> None:
        print("fresh process (python start + import + open + load everything)")
        p = self.zt_path
        codes = {
            "ztensor_array": f"import ztensor_array as zt; d = zt.load_file({p!r})",
            "readinto floor": (
                "import numpy as np; import os\n"
                f"b = np.empty(os.path.getsize({p!r}), np.uint8)\n"
                f"f = open({p!r}, 'rb', buffering=0); f.readinto(b)"
            ),
        }
        if ref_np is not None:
            # its idiomatic full load: the views of load_file, every byte touched
            codes["ztensor 1.1.1"] = (
                "import numpy as np, ztensor.numpy as zn\n"
                f"for v in zn.load_file({p!r}).values():\n"
                "    np.add.reduce(v.reshape(-1).view(np.uint8), dtype=np.uint64)"
            )
        self.warm(p)
        env = wl.bytecode_env()
        for code in codes.values():  # untimed: writes the bytecode caches
            wl.subprocess_seconds(code, 1, env)
        t = {n: wl.Timing(n) for n in codes}
        for _ in range(self.reps(5, 2)):
            for n, code in codes.items():
                t[n].times.extend(wl.subprocess_seconds(code, 1, env))
        if "ztensor 1.1.1" in t:
            self.add("fresh process", t, "ztensor_array", "ztensor 1.1.1", 1.0)
        self.add("fresh process vs floor", t, "ztensor_array", "readinto floor", None)

    # ------------------------------------------------------------------ profile

    def profile(self) -> None:
        """cProfile our side of each case and print where the time goes."""
        first = self.names[0]

        def first_tensor():
            for _ in range(200):
                with zt.Reader(self.zt_path) as r:
                    r.read_tensor(first)

        def listing():
            for _ in range(200):
                with zt.Reader(self.zt_path) as r:
                    [(m.name, m.shape, m.dtype) for m in r]

        cases = {
            "raw write": lambda: zt.save_file(self.tensors, self.path("prof.zt")),
            "read all": lambda: zt.load_file(self.zt_path),
            "first tensor x200": first_tensor,
            "metadata x200": listing,
            "zstd-3 write": lambda: zt.save_file(self.tensors, self.path("prof.zt"), compress=3),
            "zstd-3 read": lambda: zt.load_file(self.path("prof.zt")),
        }
        for name, fn in cases.items():
            prof = cProfile.Profile()
            prof.enable()
            fn()
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
            print(f"\n===== profile: {name} (sorted by own time)\n" + s.getvalue().strip())

    # ------------------------------------------------------------------ output

    def report(self) -> None:
        print("\n" + markdown(self.rows))
        os.makedirs(self.args.out, exist_ok=True)
        meta = {
            "machine": wl.machine_description(),
            "command": "python benchmark/core_perf.py " + shlex.join(sys.argv[1:]),
            "size_bytes": self.size,
            "tensors": len(self.tensors),
            "versions": wl.versions("ztensor-array", "ztensor", "h5py", "safetensors", "numpy"),
        }
        stem = "core_perf_quick" if self.args.quick else "core_perf"
        with open(os.path.join(self.args.out, stem + ".json"), "w") as f:
            json.dump({**meta, "rows": [asdict(r) for r in self.rows]}, f, indent=1)
        with open(os.path.join(self.args.out, stem + ".md"), "w") as f:
            m = meta["machine"]
            f.write(
                f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, "
                f"{m['memory_gib']} GiB, {m['os']}), Python {m['python']}, "
                f"{len(self.tensors)} float32 tensors, {self.size / wl.MiB:.0f} MiB, "
                f"page cache warm.\nCommand: `{meta['command'].strip()}`\n\n"
            )
            f.write(markdown(self.rows) + "\n")
        print(f"wrote {stem}.json and {stem}.md in {self.args.out}")

    def cleanup(self) -> None:
        if not self.args.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def markdown(rows: list[Row]) -> str:
    lines = [
        "| case | ours | baseline | ours (s) | baseline (s) | ratio | median ratio "
        "| target | holds |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        holds = {True: "yes", False: "**no**", None: ""}[r.holds]
        note = f" ({r.note})" if r.note else ""
        lines.append(
            f"| {r.case}{note} | {r.ours} | {r.baseline} | {r.ours_s:.4g} | {r.baseline_s:.4g} "
            f"| {r.ratio:.3f} | {r.median_ratio:.3f} | {r.target} | {holds} |"
        )
    return "\n".join(lines)


CASES = (
    "write",
    "read_all",
    "first_tensor",
    "metadata",
    "zstd",
    "imports",
    "peak_memory",
    "fresh_process",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="data size (default 1024)")
    ap.add_argument("--quick", action="store_true", help="64 MiB and few repetitions")
    ap.add_argument("--reps", type=int, default=0, help="repetitions (default per case)")
    ap.add_argument("--dir", help="where to put the files (default: a fresh temp folder)")
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
        help="folder for the JSON and markdown results",
    )
    ap.add_argument("--only", nargs="+", choices=CASES, help="run only these cases")
    ap.add_argument("--durable", action="store_true", help="include fsync writes in --quick")
    ap.add_argument("--profile", action="store_true", help="cProfile our side of each case")
    args = ap.parse_args(argv)
    if args.quick and args.size_mib == 1024:
        args.size_mib = 64
    bench = Bench(args)
    try:
        for case in args.only or CASES:
            getattr(bench, case)()
        if args.profile:
            bench.profile()
        bench.report()
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
