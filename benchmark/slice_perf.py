"""``safe_open(...).get_slice(name)[rows]``: the cost of reading a few rows (issue 17).

Two questions, each a ratio within one run (candidates interleaved, minimum over the
repetitions, page cache warm, files opened once before timing, as a loader keeps its handle):

* raw data: ``get_slice(name)[:10]`` of ours against ``safetensors.safe_open`` on the same
  tensor, for numpy and torch (target <= 1.0x);
* zstd data: the first 1% of the rows against decoding the whole tensor (target <= 0.1x),
  and, for the record, the last 1% (which needs the frame decoded from its start, so it
  costs about the whole decode).

    python benchmark/slice_perf.py              # a 16 MiB float32 tensor
    python benchmark/slice_perf.py --quick      # fewer repetitions

Writes benchmark/results/slice_perf.{json,md} (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads as wl  # noqa: E402

import ztensor_array as zt  # noqa: E402


def _calls(fn, n: int):
    """One timed candidate: ``n`` calls of ``fn`` (microsecond cases need a batch)."""

    def run():
        for _ in range(n):
            fn()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=16, help="tensor size in MiB")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    )
    args = parser.parse_args(argv)
    try:
        from safetensors import safe_open as st_open
        from safetensors.numpy import save_file as st_save
    except ImportError:
        print("safetensors is not installed (pip install -e '.[test]')")
        return 1
    try:
        import torch  # noqa: F401 - the torch cases run only where it is installed

        frameworks = ("np", "pt")
    except ImportError:
        frameworks = ("np",)

    cols = 1024
    rows = args.mib * wl.MiB // (4 * cols)
    data = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    folder = tempfile.mkdtemp(prefix="zt-slice-")
    raw, packed, st_path = (os.path.join(folder, n) for n in ("raw.zt", "zstd.zt", "w.st"))
    zt.save_file({"w": data}, raw)
    zt.save_file({"w": data}, packed, compress=3)
    st_save({"w": data}, st_path)
    for p in (raw, packed, st_path):
        wl.readinto_seconds(p)
    reps, batch = (7, 200) if args.quick else (21, 1000)
    results = []

    def report(case, ours, theirs, t_ours, t_theirs, target):
        o, b = t_ours.min, t_theirs.min
        ratio, median = o / b, t_ours.median / t_theirs.median
        holds = ratio <= target
        results.append(
            {
                "case": case,
                "ours": ours,
                "baseline": theirs,
                "ours_s": o,
                "baseline_s": b,
                "ratio": ratio,
                "median_ratio": median,
                "target": f"<= {target:g}x",
                "holds": holds,
            }
        )
        print(
            f"  {case:<34} {o * 1e6:10.1f} us vs {b * 1e6:10.1f} us -> {ratio:6.3f}x "
            f"(median {median:6.3f}x) <= {target:g}x {'ok' if holds else 'MISS'}",
            flush=True,
        )

    print(f"raw float32 ({rows}, {cols}), {args.mib} MiB: get_slice(name)[:10], per call")
    for fw in frameworks:
        with zt.safe_open(raw, fw) as ours, st_open(st_path, framework=fw) as theirs:
            np.testing.assert_array_equal(
                np.asarray(ours.get_slice("w")[:10]), np.asarray(theirs.get_slice("w")[:10])
            )
            t = wl.interleaved(
                {
                    "ztensor_array": _calls(lambda: ours.get_slice("w")[:10], batch),
                    "safetensors": _calls(lambda: theirs.get_slice("w")[:10], batch),
                },
                reps,
                collect=False,
            )
        for v in t.values():
            v.times = [s / batch for s in v.times]
        report(f"raw [:10], {fw}", "ztensor_array", "safetensors", *t.values(), 1.0)

    head = max(1, rows // 100)
    print(f"zstd-3 float32 ({rows}, {cols}): the first and the last 1% ({head} rows)")
    with zt.safe_open(packed, "np") as f:
        full = f.get_tensor("w")
        np.testing.assert_array_equal(f.get_slice("w")[:head], full[:head])
        np.testing.assert_array_equal(f.get_slice("w")[-head:], full[-head:])
        t = wl.interleaved(
            {
                "first 1%": lambda: f.get_slice("w")[:head],
                "last 1%": lambda: f.get_slice("w")[-head:],
                "full decode": lambda: f.get_tensor("w"),
            },
            reps,
        )
    report("zstd first 1% of rows", "first 1%", "full decode", t["first 1%"], t["full decode"], 0.1)
    last = t["last 1%"].min / t["full decode"].min
    print(f"  zstd last 1% of rows (no target)   {last:6.3f}x of the full decode")
    results.append(
        {
            "case": "zstd last 1% of rows",
            "ours": "last 1%",
            "baseline": "full decode",
            "ours_s": t["last 1%"].min,
            "baseline_s": t["full decode"].min,
            "ratio": last,
            "median_ratio": t["last 1%"].median / t["full decode"].median,
            "target": "",
            "holds": None,
        }
    )
    for p in (raw, packed, st_path):
        os.unlink(p)
    os.rmdir(folder)

    os.makedirs(args.out, exist_ok=True)
    meta = {
        "machine": wl.machine_description(),
        "versions": wl.versions("ztensor-array", "safetensors", "torch", "zstandard"),
        "command": "python benchmark/slice_perf.py" + (" --quick" if args.quick else ""),
        "mib": args.mib,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with open(os.path.join(args.out, "slice_perf.json"), "w") as f:
        json.dump({**meta, "rows": results}, f, indent=1)
    lines = [
        f"Measured {meta['time']} with `{meta['command']}`.",
        "",
        "| case | ours | baseline | ours | baseline | ratio | median | target |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ok = {True: " ok", False: " MISS", None: ""}[r["holds"]]
        lines.append(
            f"| {r['case']} | {r['ours']} | {r['baseline']} | {r['ours_s'] * 1e6:.1f} us "
            f"| {r['baseline_s'] * 1e6:.1f} us | {r['ratio']:.3f}x | {r['median_ratio']:.3f}x "
            f"| {r['target']}{ok} |"
        )
    with open(os.path.join(args.out, "slice_perf.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0 if all(r["holds"] is not False for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
