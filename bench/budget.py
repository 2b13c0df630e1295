#!/usr/bin/env python3
"""A budget that binds (ARCHITECTURE.md, invariant 1).

(b) 200 runs, each four calls through the official `openai` client to
`sim/echo` priced by the experiment at $100 per million tokens, so that a run
costs between $0.01 and $0.10 (its size drawn from its seed); per-run cap
$0.25, budget $5.00; `flotilla run` with 4 workers x 2 slots. Reported: the
final metered spend in flotilla.db (must be <= $5.00), the share of the
budget used (target >= 97%), and how many runs ran.

(c) noop throughput with a budget against the same sweep without one, in the
same run (coordinator -> 2 workers -> durable result, from bench/throughput.py);
target: a budget does not cut it below 50,000 runs/s.

Usage: python3 bench/budget.py [--noop-runs 100000]
"""
import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "flotilla"

SPENDER = r'''
import json, os, random
from openai import OpenAI

rng = random.Random(int(os.environ["FLOTILLA_SEED"]))
run_cost = rng.uniform(0.01, 0.10)
# $100 per million tokens, four bytes a token: a call of B bytes costs B / 40,000 dollars.
size = int(run_cost / 4 * 40_000)
client = OpenAI(max_retries=0)
for _ in range(4):
    client.chat.completions.create(model="sim/echo", max_tokens=1,
                                   messages=[{"role": "user", "content": "x" * size}])
print(json.dumps({"planned_cost": run_cost}))
'''


def log(message):
    print(message, file=sys.stderr, flush=True)


def binding_budget(work):
    python = ROOT / "target" / "python-clients" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", python.parent.parent], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "-r", ROOT / "tests" / "python-clients.txt"], check=True)
    base = work / "binding"
    base.mkdir()
    (base / "spender.py").write_text(SPENDER)
    experiment = base / "budget.yaml"
    experiment.write_text(
        f"name: binding\nrun:\n  kind: command\n  command: [{str(python)!r}, spender.py]\n"
        "runs_per_variation: 200\nretries: {max_attempts: 1}\n"
        "prices:\n  sim/echo: {input: 100, output: 100}\n"
        "budget: {total_usd: 5.00, per_run_usd: 0.25}\n")
    root = base / "root"
    done = subprocess.run([BIN, "run", experiment, "--root", root, "--workers", "4", "--slots", "2"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    db = sqlite3.connect(root / "flotilla.db")
    spent = db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM calls").fetchone()[0]
    runs = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    db.close()
    return done.returncode, spent, runs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop-runs", type=int, default=100000)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-budget-", dir=os.environ.get("BENCH_DIR", ROOT / "target")))
    rows = []
    try:
        code, spent, runs = binding_budget(work)
        rows.append((
            "(b) 200 runs of $0.01-$0.10, per-run cap $0.25, budget $5.00",
            f"${spent:.4f} spent ({spent / 5.0:.1%} of the budget)",
            f"exit code {code}; runs {runs}; targets: <= $5.00 {'met' if spent <= 5.0 else 'NOT met'}, "
            f">= 97% used {'met' if spent >= 4.85 else 'NOT met'}",
        ))
        log(rows[-1])
        plain, _, _ = throughput.flotilla_sweep("noop", args.noop_runs, 256, work)
        budgeted, _, rss = throughput.flotilla_sweep("noop", args.noop_runs, 256, work,
                                                     budget="{total_usd: 1000.0, per_run_usd: 0.01}")
        rows.append((f"(c) noop runs without a budget, 2 workers x 256 slots, {args.noop_runs} runs",
                     f"{plain:,.0f} runs/s", "baseline"))
        rows.append((
            f"(c) noop runs with a budget, 2 workers x 256 slots, {args.noop_runs} runs",
            f"{budgeted:,.0f} runs/s",
            f"{budgeted / plain:.2f} x without; coordinator peak RSS {rss:.0f} MiB; "
            f"target >= 50,000 runs/s: {'met' if budgeted >= 50000 else 'NOT met'}",
        ))
        log(rows[-2])
        log(rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| measurement | figure | notes |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
