#!/usr/bin/env python3
"""Time of `flotilla report` over 1,000,000 runs x 3 metrics x 24 variations
(with a cost per run, so the cost section is included).

Builds the experiment with Flotilla itself (`flotilla run` of a noop sweep:
24 variations x 41,667 runs), then gives every run three metrics with SQL
(two numeric, one boolean, differing by variation), and times
`flotilla report` with its peak RSS (GNU time).

Usage: python3 bench/report_bench.py [--runs-per-variation 41667]
"""
import argparse
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "flotilla"


def build_big_root(work, runs_per_variation):
    """The benchmarks' big experiment under WORK/root: `flotilla run` of 24
    noop variations x RUNS_PER_VARIATION runs, then three metrics (two
    numbers and a boolean, differing by variation) and a cost per run set
    with SQL. Needs the release binary built. Returns the root."""
    experiment = work / "big.yaml"
    experiment.write_text(
        "name: big\nrun: {kind: noop}\n"
        "variations:\n  - {param: model, values: [m1, m2, m3, m4, m5, m6]}\n  - {param: temperature, values: [0.1, 0.4, 0.7, 1.0]}\n"
        f"runs_per_variation: {runs_per_variation}\nseed: 7\n"
        "metrics:\n  - {name: score, goal: maximize}\n  - {name: latency, goal: minimize}\n  - {name: success, goal: maximize}\n"
    )
    root = work / "root"
    subprocess.run([BIN, "run", experiment, "--root", root, "--workers", "2", "--slots", "256"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = sqlite3.connect(root / "flotilla.db")
    db.execute(
        "UPDATE runs SET metrics_json = json_object("
        "'score', variation * 0.1 + (abs(random()) % 1000) / 100.0, "
        "'latency', 2.0 + (abs(random()) % 500) / 100.0 - variation * 0.01, "
        "'success', json(CASE WHEN abs(random()) % 100 < 50 + variation THEN 'true' ELSE 'false' END)), "
        "cost_usd = 0.001 + variation * 0.0001 + (abs(random()) % 100) / 1000000.0"
    )
    db.commit()
    db.close()
    return root


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs-per-variation", type=int, default=41667)
    parser.add_argument("--keep", action="store_true", help="keep the generated root (printed) for profiling")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-report-bench-", dir=ROOT / "target"))
    try:
        root = build_big_root(work, args.runs_per_variation)
        db = sqlite3.connect(root / "flotilla.db")
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        db.close()
        start = time.perf_counter()
        timed = subprocess.run(["/usr/bin/time", "-f", "%M", BIN, "report", "big", "--root", root, "--format", "json"],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        peak_mib = int(timed.stderr.strip().splitlines()[-1]) / 1024
        print("| measurement | figure | target |")
        print("| --- | --- | --- |")
        print(f"| `flotilla report`, {runs:,} runs x 3 metrics x 24 variations | {elapsed:.2f} s | <= 5 s: {'met' if elapsed <= 5 else 'NOT met'} |")
        print(f"| peak RSS of that report | {peak_mib:.0f} MiB | <= 1024 MiB: {'met' if peak_mib <= 1024 else 'NOT met'} |")
    finally:
        if args.keep:
            print(f"kept {work / 'root'}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
