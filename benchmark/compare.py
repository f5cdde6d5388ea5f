"""Peer comparison: write and read throughput of ztensor_array against other formats.

One command, on the current machine:

    python benchmark/compare.py            # 128 / 512 / 1024 MiB, mixed and large tensors
    python benchmark/compare.py --quick    # 16 / 64 MiB, a smoke run (a few minutes)

Peers: ztensor_array (raw, zstd 1/3/19, and the zero-copy mmap read), ztensor 1.1.1,
safetensors, torch.save (pickle when torch is absent), h5py, GGUF, numpy .npz and zarr 3.
Those not installed are skipped. "read" is open plus touching every byte of every tensor,
for every peer, with the page cache warm. The physical limits of the machine are measured
in the same run (memcpy bandwidth, page-cache read bandwidth through ``readinto``, file write
bandwidth through one ``write()``), and every throughput is also given as a fraction of its
limit.

Writes ``results.csv``, ``results.png`` and ``results.md`` (``results-quick.*`` for
``--quick``) in benchmark/ unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import csv
import os
import pickle
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

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------- peers


@dataclass
class Peer:
    """A format under test: how it writes a dict of arrays and reads it back."""

    name: str
    ext: str
    write: Callable[[dict, str], object] | None  # None: reads the file of ``reads_from``
    read: Callable[[str], object]  # returns arrays (or views) to be touched
    slow: bool = False  # one repetition, and skipped above --slow-limit MiB (zstd-19)
    reads_from: str | None = None


def _zt_write(level: int) -> Callable:
    def write(tensors: dict, path: str) -> None:
        zt.save_file(tensors, path, compress=level)

    return write


def _zt_read_views(path: str):
    r = zt.Reader(path)  # views keep the map alive after the reader goes
    try:
        return [r.read_tensor(n) for n in r.tensor_names]
    finally:
        r.close()


def peers() -> list[Peer]:
    out = [
        Peer("ztensor_array", ".zt", _zt_write(0), zt.load_file),
        Peer("ztensor_array mmap", ".zt", None, _zt_read_views, reads_from="ztensor_array"),
        Peer("ztensor_array zstd-1", ".zt", _zt_write(1), zt.load_file),
        Peer("ztensor_array zstd-3", ".zt", _zt_write(3), zt.load_file),
        Peer("ztensor_array zstd-19", ".zt", _zt_write(19), zt.load_file, slow=True),
    ]
    try:
        import ztensor.numpy as ref_np

        out.append(
            Peer(
                "ztensor 1.1.1",
                ".zt",
                lambda t, p: ref_np.save_file(t, p),
                ref_np.load_file,
            )
        )
    except ImportError:
        pass
    try:
        import safetensors.numpy as st_np

        out.append(Peer("safetensors", ".safetensors", st_np.save_file, st_np.load_file))
    except ImportError:
        pass
    try:
        import torch

        def torch_save(t: dict, p: str) -> None:
            torch.save({k: torch.from_numpy(v) for k, v in t.items()}, p)

        def torch_load(p: str):
            return [v.numpy() for v in torch.load(p, weights_only=True).values()]

        out.append(Peer("torch.save", ".pt", torch_save, torch_load))
    except ImportError:

        def pickle_save(t: dict, p: str) -> None:
            with open(p, "wb") as f:
                pickle.dump(t, f, protocol=5)

        def pickle_load(p: str):
            with open(p, "rb") as f:
                return pickle.load(f)  # our own file, written just above

        out.append(Peer("pickle", ".pkl", pickle_save, pickle_load))
    try:
        import h5py

        def h5_write(t: dict, p: str) -> None:
            with h5py.File(p, "w") as f:
                for k, v in t.items():
                    f.create_dataset(k, data=v)

        def h5_read(p: str):
            with h5py.File(p, "r") as f:
                return [f[k][()] for k in f]

        out.append(Peer("h5py", ".h5", h5_write, h5_read))
    except ImportError:
        pass
    try:
        import gguf

        def gguf_write(t: dict, p: str) -> None:
            w = gguf.GGUFWriter(p, "llama")
            for k, v in t.items():
                w.add_tensor(k, v)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()

        def gguf_read(p: str):
            return [np.asarray(t.data) for t in gguf.GGUFReader(p).tensors]

        out.append(Peer("gguf", ".gguf", gguf_write, gguf_read))
    except ImportError:
        pass

    def npz_read(p: str):
        with np.load(p) as f:
            return [f[k] for k in f.files]

    out.append(Peer("npz", ".npz", lambda t, p: np.savez(p, **t), npz_read))
    try:
        import zarr

        def zarr_write(t: dict, p: str) -> None:
            g = zarr.open_group(p, mode="w", zarr_format=3)
            for k, v in t.items():
                g.create_array(k, data=v)

        def zarr_read(p: str):
            g = zarr.open_group(p, mode="r")
            return [g[k][...] for k in g.array_keys()]

        out.append(Peer("zarr 3", ".zarr", zarr_write, zarr_read))
    except ImportError:
        pass
    return out


# ---------------------------------------------------------------------------- running


@dataclass
class Result:
    size_mib: int
    distribution: str
    peer: str
    op: str
    seconds_min: float
    seconds_median: float
    data_bytes: int
    file_bytes: int
    gb_per_s: float
    limit_gb_per_s: float
    fraction_of_limit: float
    vs_ztensor_array: float  # time / ztensor_array raw's time for the same op


def _warm(path: str) -> None:
    if os.path.isdir(path):
        for d, _, fs in os.walk(path):
            for f in fs:
                wl.readinto_seconds(os.path.join(d, f))
    else:
        wl.readinto_seconds(path)


def limits(workdir: str, size: int, reps: int) -> dict[str, float]:
    """The machine's limits for ``size`` bytes, in bytes/s (best of ``reps``)."""
    buf = np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8)
    path = os.path.join(workdir, "limit.bin")
    w, r = [], []
    for _ in range(reps):
        wl.drop_dirty(path, drop_cache=True)
        w.append(wl.write_seconds(path, buf))
        wl.readinto_seconds(path)
        r.append(wl.readinto_seconds(path))
    os.unlink(path)
    return {
        "memcpy": wl.memcpy_bandwidth(min(size, 512 * wl.MiB), reps),
        "write": size / min(w),
        "read": size / min(r),
    }


def _best(*lims: dict[str, float]) -> dict[str, float]:
    return {k: max(lim[k] for lim in lims) for k in lims[0]}


def _path(workdir: str, peer: Peer, by_name: dict[str, Peer]) -> str:
    src = by_name[peer.reads_from] if peer.reads_from else peer
    return os.path.join(workdir, _slug(src.name) + src.ext)


def _time_op(op: str, peer: Peer, path: str, tensors: dict, first: bool) -> float:
    """One timed write, or one timed read (open + touch every byte; warm-up untimed)."""
    if op == "write":  # every write starts synced, with the clean cache dropped (reads,
        wl.remove(path)  # which all come after the writes, warm their file first)
        wl.drop_dirty(drop_cache=True)
        t0 = time.perf_counter()
        peer.write(tensors, path)
        return time.perf_counter() - t0
    if first:
        _warm(path)
        wl.touch(peer.read(path))  # untimed warm-up of the reader and the page cache
    t0 = time.perf_counter()
    got = peer.read(path)
    wl.touch(got)
    dt = time.perf_counter() - t0
    del got
    return dt


def run_case(
    size_mib: int, dist: str, plist: list[Peer], args, workdir: str
) -> tuple[list[Result], dict[str, float]]:
    shapes = (wl.mixed_shapes if dist == "mixed" else wl.large_shapes)(size_mib * wl.MiB)
    tensors = wl.make_tensors(shapes)
    data = wl.nbytes(tensors)
    lim = limits(workdir, data, max(args.reps, 3))
    print(f"\n== {size_mib} MiB, {dist} ({len(tensors)} tensors)", flush=True)
    by_name = {p.name: p for p in plist}
    active = [p for p in plist if not (p.slow and size_mib > args.slow_limit)]
    times: dict[tuple[str, str], list[float]] = {}
    sizes: dict[str, int] = {}
    for op in ("write", "read"):
        for rep in range(args.reps):
            for peer in active if rep % 2 == 0 else list(reversed(active)):
                if (op == "write" and peer.write is None) or (peer.slow and rep > 0):
                    continue
                path = _path(workdir, peer, by_name)
                try:
                    dt = _time_op(op, peer, path, tensors, rep == 0)
                except Exception as exc:  # a peer that cannot handle the case is reported
                    print(f"  {peer.name}: {op} failed: {type(exc).__name__}: {exc}")
                    active = [p for p in active if p is not peer]
                    continue
                times.setdefault((peer.name, op), []).append(dt)
                sizes[peer.name] = wl.disk_bytes(path)
    lim = _best(lim, limits(workdir, data, max(args.reps, 3)))
    print(
        f"   limits: memcpy {lim['memcpy'] / 1e9:.2f} GB/s, page-cache read "
        f"{lim['read'] / 1e9:.2f} GB/s, file write {lim['write'] / 1e9:.2f} GB/s",
        flush=True,
    )
    results = []
    for op in ("write", "read"):
        base = min(times.get(("ztensor_array", op), [np.nan]))
        limit = lim["write"] if op == "write" else lim["read"]
        for peer in plist:
            t = times.get((peer.name, op))
            if not t or peer not in active:
                continue
            best = min(t)
            r = Result(
                size_mib,
                dist,
                peer.name,
                op,
                best,
                float(np.median(t)),
                data,
                sizes[peer.name],
                data / best / 1e9,
                limit / 1e9,
                data / best / limit,
                best / base,
            )
            results.append(r)
            print(
                f"  {op:<5} {peer.name:<22} {best * 1e3:9.1f} ms  {r.gb_per_s:6.2f} GB/s  "
                f"{r.fraction_of_limit:6.1%} of limit  {r.vs_ztensor_array:5.2f}x ztensor_array"
                f"  file {r.file_bytes / data:5.3f}x data",
                flush=True,
            )
    for peer in plist:
        wl.remove(_path(workdir, peer, by_name))
    return results, lim


def _peer_order(rows: list[Result]) -> list[str]:
    """Peers in the order they ran (reads list every peer, writes skip the mmap variant)."""
    return list(dict.fromkeys([r.peer for r in rows if r.op == "read"] + [r.peer for r in rows]))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


# ---------------------------------------------------------------------------- output


def markdown(
    results: list[Result], limits_by_case: dict, meta: dict, only_size: int | None = None
) -> str:
    m = meta["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB RAM, "
        f"{m['os']}), Python {m['python']}, numpy {m['numpy']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Throughput is data bytes / time (GB/s, higher is better); *read* is open plus touching "
        "every byte, page cache warm; *% of limit* compares with this machine's limit measured "
        "in the same run (file write bandwidth of one `write()` for writes, `readinto` of a "
        "warm file into a fresh buffer for reads); *vs raw* is the time relative to "
        "ztensor_array raw (lower is better); *file* is the file size relative to the data.",
    ]
    cases = sorted({(r.size_mib, r.distribution) for r in results})
    if only_size is not None:
        cases = [c for c in cases if c[0] == only_size]
    for size, dist in cases:
        lim = limits_by_case[size, dist]
        rows = [r for r in results if (r.size_mib, r.distribution) == (size, dist)]
        lines += [
            "",
            f"### {size} MiB, {dist} tensors",
            "",
            f"Limits: memcpy {lim['memcpy'] / 1e9:.2f} GB/s, file write "
            f"{lim['write'] / 1e9:.2f} GB/s, page-cache read {lim['read'] / 1e9:.2f} GB/s.",
            "",
            "| format | write GB/s | % of limit | vs raw "
            "| read GB/s | % of limit | vs raw | file |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        names = _peer_order(rows)
        for name in names:
            w = next((r for r in rows if r.peer == name and r.op == "write"), None)
            rd = next((r for r in rows if r.peer == name and r.op == "read"), None)
            cell = lambda r: (  # noqa: E731
                f"{r.gb_per_s:.2f} | {r.fraction_of_limit:.0%} | {r.vs_ztensor_array:.2f}x"
                if r
                else "- | - | -"
            )
            f = (w or rd).file_bytes / (w or rd).data_bytes
            bold = "**" if name == "ztensor_array" else ""
            lines.append(f"| {bold}{name}{bold} | {cell(w)} | {cell(rd)} | {f:.3f} |")
    return "\n".join(lines) + "\n"


README_START = "<!-- benchmark:start (generated by benchmark/compare.py --readme) -->"
README_END = "<!-- benchmark:end -->"


def update_readme(readme: str, results, lims, meta, out_dir: str, stem: str, png: bool) -> bool:
    """Replace the text between the README's benchmark markers with this run's figures
    (the plot and the tables of the largest size). Returns False when the markers are absent."""
    with open(readme) as f:
        text = f.read()
    i, j = text.find(README_START), text.find(README_END)
    if i < 0 or j < i:
        print(f"{readme}: no benchmark markers ({README_START} ... {README_END}); not updated")
        return False
    rel = os.path.relpath(out_dir, os.path.dirname(os.path.abspath(readme)))
    biggest = max(r.size_mib for r in results)
    body = markdown(results, lims, meta, only_size=biggest)
    if png:
        body = f"![write and read throughput]({rel}/{stem}.png)\n\n" + body
    body += f"\nAll sizes: [{rel}/{stem}.md]({rel}/{stem}.md) (CSV: `{rel}/{stem}.csv`).\n"
    new = text[: i + len(README_START)] + "\n" + body + text[j:]
    with open(readme, "w") as f:
        f.write(new)
    print(f"updated the benchmark section of {readme}")
    return True


def plot(results: list[Result], path: str, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install ztensor-array[bench])")
        return False
    biggest = max(r.size_mib for r in results)
    dists = sorted({r.distribution for r in results})
    fig, axes = plt.subplots(1, len(dists), figsize=(7 * len(dists), 5.5), squeeze=False)
    for ax, dist in zip(axes[0], dists):
        rows = [r for r in results if r.size_mib == biggest and r.distribution == dist]
        names = _peer_order(rows)
        y = np.arange(len(names))
        for i, (op, color) in enumerate((("write", "tab:orange"), ("read", "tab:blue"))):
            vals = [
                next((r.gb_per_s for r in rows if r.peer == n and r.op == op), 0.0) for n in names
            ]
            ax.barh(y + (i - 0.5) * 0.4, vals, 0.4, label=op, color=color)
            lim = next((r.limit_gb_per_s for r in rows if r.op == op), None)
            if lim:
                ax.axvline(lim, color=color, linestyle="--", linewidth=1)
                ypos = len(names) - 0.4 if op == "read" else -0.6
                ax.text(lim, ypos, f" {op} limit", color=color, fontsize=8)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("GB/s (higher is better)")
        ax.set_title(f"{biggest} MiB, {dist} tensors")
        ax.legend(loc="lower right")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 and 64 MiB, one repetition")
    ap.add_argument("--sizes", type=int, nargs="+", help="sizes in MiB (default 128 512 1024)")
    ap.add_argument(
        "--distributions", nargs="+", choices=("mixed", "large"), default=["mixed", "large"]
    )
    ap.add_argument("--peers", nargs="+", help="only these peers (names as printed)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument(
        "--slow-limit",
        type=int,
        default=None,
        help="skip the slow peers (zstd-19) above this many MiB (default 128, quick 16)",
    )
    ap.add_argument("--dir", help="work folder for the files (default: a temp folder)")
    ap.add_argument("--out", default=HERE, help="folder for results.csv/.png/.md")
    ap.add_argument(
        "--readme",
        help="also rewrite the section between the benchmark markers of this README",
    )
    args = ap.parse_args(argv)
    args.sizes = args.sizes or ([16, 64] if args.quick else [128, 512, 1024])
    args.reps = args.reps or (1 if args.quick else 3)
    if args.slow_limit is None:
        args.slow_limit = 16 if args.quick else 128
    plist = peers()
    if args.peers:
        plist = [p for p in plist if p.name in args.peers]
    workdir = args.dir or tempfile.mkdtemp(prefix="zt-compare-")
    os.makedirs(workdir, exist_ok=True)
    meta = {
        "machine": wl.machine_description(),
        "command": "python benchmark/compare.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "versions": wl.versions(
            "ztensor-array", "ztensor", "safetensors", "torch", "h5py", "gguf", "zarr"
        ),
    }
    meta["command"] = meta["command"].strip()
    print(f"peers: {', '.join(p.name for p in plist)}; files in {workdir}")
    t0 = time.perf_counter()
    results: list[Result] = []
    lims: dict = {}
    try:
        for size in args.sizes:
            for dist in args.distributions:
                res, lim = run_case(size, dist, plist, args, workdir)
                results += res
                lims[size, dist] = lim
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    stem = "results-quick" if args.quick else "results"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, stem + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(results[0])))
        w.writeheader()
        w.writerows(asdict(r) for r in results)
    md = markdown(results, lims, meta)
    png = stem + ".png"
    m = meta["machine"]
    plotted = plot(
        results, os.path.join(args.out, png), f"{m['cpu']}, {m['cores']} cores; {m['date']}"
    )
    if plotted:
        md = f"![write and read throughput]({png})\n\n" + md
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(md)
    if args.readme:
        update_readme(args.readme, results, lims, meta, args.out, stem, plotted)
    print(
        f"\nwrote {stem}.csv, {stem}.png, {stem}.md in {args.out} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
