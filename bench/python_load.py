#!/usr/bin/env python3
"""Time and memory of `flotilla.load` over a 1,000,008-run experiment
(24 variations x 41,667 runs, two parameters, three metrics: two numbers and
a boolean), against reading the same runs' results.csv with pandas.read_csv
untyped (what a user does without the module), in the same run.

Builds the experiment as bench/report_bench.py does (`flotilla run` of a noop
sweep, metrics set with SQL), or reuses a root given with --root. Installs
the wheel (maturin, release) into a venv under target/, then times each
reader in a fresh interpreter: wall time, the interpreter's peak RSS and
that of the `flotilla export` it starts.

Usage: python3 bench/python_load.py [--root ROOT_WITH_big] [--runs-per-variation 41667]
"""
import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from report_bench import build_big_root

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "target" / "python-bench"

READER = r"""
import json, resource, sys, time
import pandas as pd
import flotilla
which, root = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if which == "load":
    frame = flotilla.load("big", root=root)
elif which == "polars":
    frame = flotilla.load("big", root=root, backend="polars")
else:
    subprocess = __import__("subprocess")
    subprocess.run([flotilla.binary(), "export", "big", "--root", root],
                   stdout=open(root + "/big-results.csv", "wb"), check=True)
    frame = pd.read_csv(root + "/big-results.csv")
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rows": len(frame),
                  "python_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "export_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def install(scratch: Path) -> Path:
    if not (VENV / "bin" / "python").exists():
        subprocess.run(["python3", "-m", "venv", VENV], check=True)
    maturin = ROOT / "target" / "python-build" / "bin" / "maturin"
    if not maturin.exists():
        subprocess.run(["python3", "-m", "venv", maturin.parent.parent], check=True)
        subprocess.run([maturin.parent / "pip", "install", "--quiet", "-r", ROOT / "python" / "requirements-build.txt"], check=True)
    wheels = scratch / "wheels"
    subprocess.run([maturin, "build", "--release", "--quiet", "--out", wheels], cwd=ROOT / "python", check=True)
    wheel = next(wheels.glob("*.whl"))
    subprocess.run([VENV / "bin" / "pip", "install", "--quiet", "--force-reinstall", wheel,
                    "-r", ROOT / "python" / "requirements-test.txt"], check=True)
    return VENV / "bin" / "python"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, help="a root holding the experiment 'big' (skips building it)")
    parser.add_argument("--runs-per-variation", type=int, default=41667)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flotilla-load-bench-", dir=ROOT / "target"))
    try:
        python = install(work)
        if args.root is None:
            subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
            root = build_big_root(work, args.runs_per_variation)
        else:
            root = args.root
        figures = {}
        for which in ["load", "polars", "read_csv"]:
            best = None
            for _ in range(args.rounds):
                out = subprocess.run([python, "-c", READER, which, str(root)], check=True, capture_output=True, text=True)
                figure = json.loads(out.stdout)
                if best is None or figure["seconds"] < best["seconds"]:
                    best = figure
            figures[which] = best
        (Path(root) / "big-results.csv").unlink(missing_ok=True)
        baseline = figures["read_csv"]
        print("| reader | rows | time | Python peak RSS | `flotilla export` peak RSS | time vs untyped read_csv |")
        print("| --- | --- | --- | --- | --- | --- |")
        for which, label in [("load", "`flotilla.load` (pandas, typed)"), ("polars", "`flotilla.load(backend=\"polars\")`"),
                             ("read_csv", "export to a file + `pandas.read_csv` untyped (baseline)")]:
            f = figures[which]
            print(f"| {label} | {f['rows']:,} | {f['seconds']:.2f} s | {f['python_mib']:.0f} MiB | {f['export_mib']:.0f} MiB "
                  f"| {f['seconds'] / baseline['seconds']:.2f}x |")
        load = figures["load"]
        met = load["seconds"] <= 5 and max(load["python_mib"], load["export_mib"]) <= 1024
        print(f"target <= 5 s and <= 1 GiB per process: {'met' if met else 'NOT met'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
