#!/usr/bin/env python3
"""Adaptive sampling against a fixed sweep (ARCHITECTURE.md, "Adaptive sampling").

Simulated scenarios, each run a `flotilla run` (2 workers x 4 slots) of
command runs that print a normal score (the variation's effect plus noise of
its own, sd 1) and cost $0.01; `runs_per_variation: 200`:

  best-8      8 variations, effects 0, 0, 0, 0, 0.2, 0.2, 0.5, 1.0 sd: question best
  tied-8      8 variations, effects 0, 0.2, 0.5, 1.0, each twice: best (two tie)
  baseline-6  6 variations against the first, effects 0, 0, 0.2, 0.5, 1.0, 1.0: baseline
  baseline-6-band  the same with min_effect: 0.3 (differences under it need not be told apart)
  precision-4 4 variations, effects 0, 0.5, 1.0, 1.5: precision, width 0.25

Each scenario runs once fixed and ROUNDS times adaptive (different noise),
and reports runs and dollars against the fixed sweep (target >= 50% fewer
runs on average) and the share of adaptive rounds with a wrong decision
(the true best eliminated, a difference declared that does not exist, an
interval missing its mean). The seeded in-process simulations
(report/src/sequential/simulations.rs, 2,000 sweeps per scenario) give the
error rates with precision; this measures the whole path.

Then examples/quickstart with `sampling: {mode: adaptive, metric: score,
question: best}` against the example as shipped (20 runs per variation), and
both with `runs_per_variation: 200`.

Usage: python3 bench/adaptive.py [--rounds 10]
"""
import argparse
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "flotilla"

# A normal score from awk: Box-Muller on a stream seeded by round, repetition and variation.
SCORE = ('BEGIN{srand(k*1000003+r*1009+v); u=rand(); w=rand(); if(u<1e-12)u=1e-12; '
         'x=e+sqrt(-2*log(u))*cos(6.283185307179586*w); '
         'printf "{\\"score\\": %.6f, \\"cost_usd\\": 0.01}\\n", x}')

SCENARIOS = {
    "best-8": ([0, 0, 0, 0, 0.2, 0.2, 0.5, 1.0], "question: best"),
    "tied-8": ([0, 0.2, 0.5, 1.0, 0, 0.2, 0.5, 1.0], "question: best"),
    "baseline-6": ([0, 0, 0.2, 0.5, 1.0, 1.0], "question: baseline"),
    "baseline-6-band": ([0, 0, 0.2, 0.5, 1.0, 1.0], "question: baseline, min_effect: 0.3"),
    "precision-4": ([0, 0.5, 1.0, 1.5], "question: precision, width: 0.25"),
}


def log(message):
    print(message, file=sys.stderr, flush=True)


def experiment(base, name, effects, sampling, round_number):
    cases = "\n".join(f"      - {{id: v{i + 1}, effect: {e}}}" for i, e in enumerate(effects))
    text = (f"name: {name}\nrun:\n  kind: command\n"
            f"  command: [awk, -v, \"k={{round}}\", -v, \"r={{repetition}}\", -v, \"v={{variation}}\", "
            f"-v, \"e={{effect}}\", {json.dumps(SCORE.replace('{', '{{').replace('}', '}}'))}]\n"
            f"params: {{round: {round_number}}}\n"
            f"variations:\n  - cases:\n{cases}\n"
            "runs_per_variation: 200\nretries: {max_attempts: 1}\nbaseline: {case: v1}\n"
            "metrics:\n  - {name: score, goal: maximize}\n")
    if sampling:
        text += f"sampling: {{mode: adaptive, metric: score, {sampling}}}\n"
    path = base / f"{name}.yaml"
    path.write_text(text)
    return path


def run(base, file):
    root = base / "root"
    started = time.time()
    subprocess.run([BIN, "run", file, "--root", root, "--workers", "2", "--slots", "4", "--no-progress"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.time() - started


def outcome(base, name):
    """(runs that ran, dollars, per-variation (runs, mean), the report's standings)."""
    rows = list(csv.DictReader(open(base / "root" / name / "results.csv")))
    ran = [r for r in rows if r["status"] not in ("decided", "pending")]
    dollars = sum(float(r["cost_usd"] or 0) for r in ran)
    report = (base / "root" / name / "analysis" / "analysis-report.md").read_text()
    standings = {}
    for line in report.splitlines():
        if line.startswith("| var-") and ("eliminated" in line or "best" in line or "baseline" in line
                                          or "open" in line or "width" in line or "live" in line):
            cells = [c.strip() for c in line.strip("|").split("|")]
            standings[cells[0]] = cells[1:]
    return len(ran), dollars, standings


def wrong(effects, question, standings):
    best = max(effects)
    for index, effect in enumerate(effects):
        cells = standings.get(f"var-{index + 1:03d}")
        if not cells:
            continue
        standing = cells[0]
        if question.startswith("question: best") and effect == best and standing.startswith("eliminated"):
            return True
        if question.startswith("question: baseline"):
            if standing.startswith("better") and effect <= effects[0]:
                return True
            if standing.startswith("worse") and effect >= effects[0]:
                return True
            if standing.startswith("within") and abs(effect - effects[0]) >= 0.3:
                return True
        if question.startswith("question: precision") and cells[3] != "—":
            low, high = (float(x) for x in cells[3].strip("[]").split(","))
            if not low <= effect <= high:
                return True
    return False


def quickstart(base, runs_per_variation):
    copy = base / f"quickstart-{runs_per_variation}"
    shutil.copytree(ROOT / "examples" / "quickstart", copy)
    original = (copy / "experiment.yaml").read_text().replace(
        "runs_per_variation: 20", f"runs_per_variation: {runs_per_variation}")
    (copy / "experiment.yaml").write_text(original)
    (copy / "adaptive.yaml").write_text(
        original.replace("name: quickstart", "name: quickstart-adaptive")
        + "sampling: {mode: adaptive, metric: score, question: best}\n")
    rows = []
    for file, name in [(copy / "experiment.yaml", "quickstart"), (copy / "adaptive.yaml", "quickstart-adaptive")]:
        subprocess.run([BIN, "run", file, "--root", copy / "root", "--workers", "2", "--no-progress"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=copy)
        runs = list(csv.DictReader(open(copy / "root" / name / "results.csv")))
        rows.append(sum(1 for r in runs if r["status"] not in ("decided", "pending")))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="adaptive sweeps per scenario")
    parser.add_argument("--only", choices=["quickstart"], help="run only the quickstart comparison")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-adaptive-", dir=os.environ.get("BENCH_DIR", ROOT / "target")))
    table = []
    savings = []
    try:
        for name, (effects, question) in ({} if args.only else SCENARIOS).items():
            base = work / name
            base.mkdir()
            fixed_s = run(base, experiment(base, f"{name}-fixed", effects, None, 0))
            fixed_runs, fixed_usd, _ = outcome(base, f"{name}-fixed")
            runs, dollars, errors, seconds = [], [], 0, []
            for round_number in range(1, args.rounds + 1):
                label = f"{name}-adaptive-{round_number}"
                seconds.append(run(base, experiment(base, label, effects, question, round_number)))
                ran, usd, standings = outcome(base, label)
                runs.append(ran)
                dollars.append(usd)
                errors += wrong(effects, question, standings)
            mean_runs = sum(runs) / len(runs)
            saved = 1 - mean_runs / fixed_runs
            savings.append(saved)
            table.append((
                f"{name} ({question.split(': ', 1)[1]})",
                f"{mean_runs:.0f} runs (${sum(dollars) / len(dollars):.2f}) against {fixed_runs} (${fixed_usd:.2f}) fixed",
                f"{saved:.1%} fewer runs (range {min(runs)}-{max(runs)} over {args.rounds} sweeps); "
                f"wrong decisions in {errors} of {args.rounds}; {sum(seconds) / len(seconds):.1f} s against {fixed_s:.1f} s",
            ))
            log(table[-1])
        if savings:
            average = sum(savings) / len(savings)
            table.append(("average over the scenarios", f"{average:.1%} fewer runs",
                          f"target >= 50%: {'met' if average >= 0.5 else 'NOT met'}"))
        for runs_per_variation in [20, 200]:
            fixed, adaptive = quickstart(work, runs_per_variation)
            table.append((f"examples/quickstart (12 variations x {runs_per_variation}), question: best on score",
                          f"{adaptive} runs against {fixed}", f"{1 - adaptive / fixed:.1%} fewer runs"))
            log(table[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| scenario | adaptive | notes |")
    print("| --- | --- | --- |")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
