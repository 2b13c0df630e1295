#!/usr/bin/env python3
"""End-to-end throughput of Flotilla: coordinator -> 2 workers -> durable result.

Real processes on 127.0.0.1: one `flotilla coordinator start` and two
`flotilla worker join`, the sweep submitted with `flotilla submit --wait`.
Throughput = runs / (the coordinator's own started_at..finished_at of the
experiment, from batch-summary.json: submission to results.csv written).

  * noop runs (in-process, no program): Flotilla's own overhead; coordinator peak RSS.
  * command runs of /bin/true, against the same number of bare fork+exec of
    /bin/true on 2 parallel lanes (bench/fork_exec.c), measured in this script.
  * Ray Tune running 200 trivial trials (venv made here), against Flotilla
    running 200 runs.

Usage: python3 bench/throughput.py [--runs 10000 100000] [--skip-ray] [--skip-command]
"""
import argparse
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
BENCH = ROOT / "bench"
DEADLINE_S = 1800


def log(message):
    print(message, file=sys.stderr, flush=True)


def wait_for_line(process, needle):
    start = time.monotonic()
    lines = []
    while time.monotonic() - start < 60:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError(f"process exited before '{needle}':\n" + "".join(lines))
        lines.append(line)
        if needle in line:
            return line
    raise RuntimeError(f"no '{needle}' within 60 s")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def experiment_yaml(name, kind, runs, budget=None):
    variations = 10 if runs >= 10 else 1
    run = '{kind: noop}' if kind == "noop" else '{kind: command, command: ["/bin/true"], timeout: 1m}'
    return (
        f"name: {name}\nrun: {run}\n"
        f"variations:\n  - param: i\n    values: [{', '.join(str(i) for i in range(variations))}]\n"
        f"runs_per_variation: {runs // variations}\n"
        # /bin/true prints no metrics, so its runs are recorded as failed: one attempt each.
        "retries: {max_attempts: 1}\n"
        + (f"budget: {budget}\n" if budget else "")
    )


def attempt_span_rate(root, name, runs):
    """Waits until every run of `name` under `root` succeeded and is durable,
    then returns runs per second over the span from the first attempt's start
    to the last one's end (the coordinator's records): a clock that excludes
    the wait before workers join."""
    deadline = time.time() + DEADLINE_S
    db_path = root / "flotilla.db"
    while True:
        if time.time() > deadline:
            raise RuntimeError(f"{name} did not finish")
        if (root / name / "batch-summary.json").exists():
            db = sqlite3.connect(db_path)
            done = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").fetchone()[0]
            db.close()
            if done == runs:
                break
        time.sleep(0.2)
    db = sqlite3.connect(db_path)
    first, last = db.execute("SELECT MIN(started_at_ms), MAX(finished_at_ms) FROM attempts").fetchone()
    db.close()
    return runs / max((last - first) / 1000, 0.001)


def flotilla_sweep(kind, runs, slots, work, budget=None):
    """Runs one sweep on a fresh cluster. Returns (runs per second by the
    coordinator's clock, runs per second by the wall clock of `submit --wait`,
    coordinator peak RSS MiB). The coordinator's timestamps have millisecond
    resolution, so small sweeps use the wall clock."""
    name = f"{kind}-{runs}-{slots}" + ("-budget" if budget else "")
    base = work / name
    base.mkdir()
    token = base / "token"
    token.write_text("bench-token\n")
    root = base / "root"
    experiment = base / "experiment.yaml"
    experiment.write_text(experiment_yaml(name, kind, runs, budget))
    env = dict(os.environ, RUST_LOG="warn,flotilla=info")
    coordinator = subprocess.Popen(
        [BIN, "coordinator", "start", "--listen", "127.0.0.1:0", "--root", root, "--token-file", token],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ, RUST_LOG="info"),
    )
    workers = []
    try:
        line = wait_for_line(coordinator, "coordinator listening")
        address = next(w.split("=", 1)[1] for w in line.split() if w.startswith("address="))
        for number in (1, 2):
            worker = subprocess.Popen(
                [BIN, "worker", "join", address, "--name", f"w{number}", "--slots", str(slots),
                 "--token-file", token, "--work-dir", base / f"w{number}"],
                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ, RUST_LOG="info"),
            )
            workers.append(worker)
            wait_for_line(worker, "joined")
        wall_start = time.perf_counter()
        subprocess.run(
            [BIN, "submit", experiment, "--wait", "--coordinator", address, "--token-file", token],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=DEADLINE_S, env=env,
        )
        wall = time.perf_counter() - wall_start
        rss = peak_rss_mib(coordinator.pid)
        summary = json.loads((root / name / "batch-summary.json").read_text())
        db = sqlite3.connect(root / "flotilla.db")
        durable = db.execute("SELECT COUNT(*) FROM runs WHERE status IN ('succeeded', 'failed')").fetchone()[0]
        db.close()
        if durable != runs or summary["state"] != "completed":
            raise RuntimeError(f"{name}: {durable} durable results of {runs}, state {summary['state']}")
        return runs / max(summary["duration_s"], 0.001), runs / wall, rss
    finally:
        for process in workers + [coordinator]:
            process.terminate()
        for process in workers + [coordinator]:
            process.wait()


def fork_exec_baseline(runs, work):
    binary = work / "fork_exec"
    subprocess.run(["gcc", "-O2", "-o", binary, BENCH / "fork_exec.c"], check=True)
    out = subprocess.run([binary, str(runs), "2", "/bin/true"], check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]) / float(out[1])


def ray_tune(trials):
    venv = BENCH / ".venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    probe = subprocess.run([python, "-c", "import ray.tune"], capture_output=True)
    if probe.returncode != 0:
        log("installing ray[tune] into bench/.venv ...")
        subprocess.run([python, "-m", "pip", "install", "-q", "ray[tune]"], check=True)
    out = subprocess.run(
        [python, BENCH / "ray_tune_trivial.py", "--trials", str(trials)],
        check=True, capture_output=True, text=True, env=dict(os.environ, RAY_DEDUP_LOGS="0"),
    ).stdout.strip().splitlines()[-1].split()
    return int(out[0]) / float(out[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--skip-command", action="store_true")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-bench-", dir=os.environ.get("BENCH_DIR", ROOT / "target")))
    rows = []
    try:
        for runs in args.runs:
            rate, _, rss = flotilla_sweep("noop", runs, 256, work)
            rows.append((f"noop runs, 2 workers x 256 slots, {runs} runs", f"{rate:,.0f} runs/s", f"coordinator peak RSS {rss:.0f} MiB; target >= 20,000 runs/s: {'met' if rate >= 20000 else 'NOT met'}"))
            log(rows[-1])
        if not args.skip_command:
            for runs in args.runs:
                baseline = fork_exec_baseline(runs, work)
                rows.append((f"bare fork+exec /bin/true, 2 lanes, {runs} runs", f"{baseline:,.0f} runs/s", "baseline"))
                log(rows[-1])
                for slots in (1, 2):
                    rate, _, rss = flotilla_sweep("command", runs, slots, work)
                    ratio = rate / baseline
                    rows.append((
                        f"/bin/true command runs, 2 workers x {slots} slot(s), {runs} runs",
                        f"{rate:,.0f} runs/s",
                        f"{ratio:.2f} x baseline; target >= 0.85: {'met' if ratio >= 0.85 else 'NOT met'}; coordinator peak RSS {rss:.0f} MiB",
                    ))
                    log(rows[-1])
        if not args.skip_ray:
            trials = 200
            ray_rate = ray_tune(trials)
            rows.append((f"Ray Tune, {trials} trivial trials (grid_search), num_cpus=2", f"{ray_rate:,.1f} trials/s", "tuner.fit() wall time"))
            log(rows[-1])
            for kind, slots in (("noop", 256), ("command", 1)):
                _, rate, _ = flotilla_sweep(kind, trials, slots, work)
                label = "noop runs" if kind == "noop" else "/bin/true command runs"
                rows.append((
                    f"Flotilla, {trials} {label}, 2 workers x {slots} slot(s)",
                    f"{rate:,.1f} runs/s",
                    f"{rate / ray_rate:.0f} x Ray Tune (wall clock of `flotilla submit --wait`, which polls progress every 250 ms)",
                ))
                log(rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("| measurement | throughput | notes |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
