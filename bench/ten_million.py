#!/usr/bin/env python3
"""Ten million runs in one experiment (ARCHITECTURE.md, "Scale").

  * acceptance: `flotilla submit` of a 10,000,000-run noop experiment (24
    variations x 416,667 runs) to a coordinator with no workers, timed by
    the wall clock of the command (it returns once the experiment's rows are
    committed); target <= 20 s;
  * memory: the coordinator's peak RSS (VmHWM) once it holds the pending
    runs and has written results.csv and results.jsonl of them (streaming),
    minus its RSS before the submission, per run; target <= 150 bytes;
  * the report: every run then given three metrics and a cost with SQL and
    marked succeeded (running ten million noop runs through workers would
    measure something else), the experiment marked completed, and
    `flotilla report` timed with its peak RSS (GNU time); target <= 60 s and
    <= 2 GiB.

Usage: python3 bench/ten_million.py [--runs-per-variation 416667]
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


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-per-variation", type=int, default=416667)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-10m-", dir=os.environ.get("BENCH_DIR", ROOT / "target")))
    rows = []
    try:
        token = work / "token"
        token.write_text("bench-token\n")
        root = work / "root"
        experiment = work / "huge.yaml"
        experiment.write_text(
            "name: huge\nrun: {kind: noop}\n"
            "variations:\n  - {param: model, values: [m1, m2, m3, m4, m5, m6]}\n  - {param: temperature, values: [0.1, 0.4, 0.7, 1.0]}\n"
            f"runs_per_variation: {args.runs_per_variation}\nseed: 7\n"
            "metrics:\n  - {name: score, goal: maximize}\n  - {name: latency, goal: minimize}\n  - {name: success, goal: maximize}\n"
        )
        runs = 24 * args.runs_per_variation
        coordinator = subprocess.Popen(
            [BIN, "coordinator", "start", "--listen", "127.0.0.1:0", "--root", root, "--token-file", token],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        try:
            while True:
                line = coordinator.stderr.readline()
                if not line:
                    raise RuntimeError("the coordinator exited")
                if "coordinator listening" in line:
                    address = next(w.split("=", 1)[1] for w in line.split() if w.startswith("address="))
                    break
            time.sleep(1)
            before_kib = status_kib(coordinator.pid, "VmRSS:")
            start = time.perf_counter()
            subprocess.run([BIN, "submit", experiment, "--coordinator", address, "--token-file", token],
                           check=True, stdout=subprocess.DEVNULL)
            accepted = time.perf_counter() - start
            rows.append((f"`flotilla submit` of {runs:,} runs, until committed", f"{accepted:.1f} s",
                         f"<= 20 s: {'met' if accepted <= 20 else 'NOT met'}"))
            print(rows[-1], flush=True)
            # The first results.csv of a running experiment is written within a few seconds.
            csv = root / "huge" / "results.csv"
            deadline = time.monotonic() + 600
            while not csv.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("results.csv was not written")
                time.sleep(0.5)
            written = time.perf_counter() - start
            peak_kib = status_kib(coordinator.pid, "VmHWM:")
            per_run = (peak_kib - before_kib) * 1024 / runs
            rows.append(("coordinator memory per pending run (peak, results files written)", f"{per_run:.0f} bytes",
                         f"peak RSS {peak_kib / 1024:.0f} MiB; <= 150 bytes: {'met' if per_run <= 150 else 'NOT met'}"))
            print(rows[-1], flush=True)
            rows.append(("results.csv and results.jsonl of every pending run, streamed",
                         f"{written - accepted:.1f} s after acceptance",
                         f"{csv.stat().st_size / 2**20:,.0f} MiB and {(root / 'huge' / 'results.jsonl').stat().st_size / 2**20:,.0f} MiB"))
            print(rows[-1], flush=True)
        finally:
            coordinator.terminate()
            coordinator.wait()

        db = sqlite3.connect(root / "flotilla.db")
        db.execute(
            "UPDATE runs SET status = 'succeeded', attempts = 1, worker = 'w1', duration_s = 0.01, "
            "finished_at_ms = 0, metrics_json = json_object("
            "'score', variation * 0.1 + (abs(random()) % 1000) / 100.0, "
            "'latency', 2.0 + (abs(random()) % 500) / 100.0 - variation * 0.01, "
            "'success', json(CASE WHEN abs(random()) % 100 < 50 + variation THEN 'true' ELSE 'false' END)), "
            "cost_usd = 0.001 + variation * 0.0001 + (abs(random()) % 100) / 1000000.0"
        )
        db.execute("UPDATE experiments SET state = 'completed', finished_at_ms = started_at_ms + 1000")
        db.commit()
        db.close()

        start = time.perf_counter()
        timed = subprocess.run(["/usr/bin/time", "-f", "%M", BIN, "report", "huge", "--root", root, "--format", "json"],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        peak_mib = int(timed.stderr.strip().splitlines()[-1]) / 1024
        rows.append((f"`flotilla report`, {runs:,} runs x 3 metrics x 24 variations", f"{elapsed:.1f} s",
                     f"<= 60 s: {'met' if elapsed <= 60 else 'NOT met'}"))
        rows.append(("peak RSS of that report", f"{peak_mib:,.0f} MiB",
                     f"<= 2,048 MiB: {'met' if peak_mib <= 2048 else 'NOT met'}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("| measurement | figure | target |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
