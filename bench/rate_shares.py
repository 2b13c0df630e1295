#!/usr/bin/env python3
"""Four workers sharing one provider limit (ARCHITECTURE.md, invariant 6).

Real processes on 127.0.0.1: a `flotilla sim-server --rpm 600` stands in for
the provider (it answers over-limit calls with 429); a coordinator and four
`flotilla worker join`, each with 2 slots and the same providers file
declaring `rpm: 600`. Eight runs (the official `openai` client, no retries of
its own) call the provider as fast as they are let through until a common
deadline. Measured over the last 120 s of each scenario, from the calls
recorded in flotilla.db:

  * even demand: every run keeps 4 calls going;
  * skewed demand: the runs of one worker keep 10 calls going, the others 1;
  * for comparison, even demand with `scope: worker` limits, so that each
    worker paces itself at the whole 600 a minute (what a per-process limiter does).

Reported: the share of the limit used (calls answered / 600 per minute) and
the share of requests the provider answered 429.

Usage: python3 bench/rate_shares.py [--window 120]
"""
import argparse
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
LIMIT_RPM = 600
WARM_UP_S = 10

CALLER = r'''
import json, os, sys, threading, time
from openai import OpenAI

deadline = float(sys.argv[1])
parallel = int(os.environ.get("BENCH_PARALLEL_CALLS", "1"))
client = OpenAI(max_retries=0)
answered, refused = [0], [0]

def keep_calling():
    while time.time() < deadline:
        try:
            client.chat.completions.create(model="remote/sim/echo", max_tokens=4,
                                           messages=[{"role": "user", "content": "hi"}])
            answered[0] += 1
        except Exception:
            refused[0] += 1

threads = [threading.Thread(target=keep_calling) for _ in range(parallel)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"answered": answered[0], "refused": refused[0]}))
'''


def log(message):
    print(message, file=sys.stderr, flush=True)


def wait_for_line(process, needle):
    start = time.monotonic()
    while time.monotonic() - start < 60:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError(f"process exited before '{needle}'")
        if needle in line:
            return line
    raise RuntimeError(f"no '{needle}' within 60 s")


def address_of(line):
    return next(w.split("=", 1)[1] for w in line.split() if w.startswith("address="))


def python_with_openai(work):
    venv = ROOT / "target" / "python-clients"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "-r", ROOT / "tests" / "python-clients.txt"], check=True)
    return python


def scenario(work, name, parallel_per_worker, scope, window_s, python):
    base = work / name
    base.mkdir()
    server = subprocess.Popen([BIN, "sim-server", "--listen", "127.0.0.1:0", "--rpm", str(LIMIT_RPM)],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              env=dict(os.environ, RUST_LOG="info"))
    processes = [server]
    try:
        provider = address_of(wait_for_line(server, "sim-server listening"))
        providers = base / "providers.yaml"
        providers.write_text(
            "providers:\n"
            f"  - {{name: remote, api: openai, base_url: 'http://{provider}/v1', limits: {{rpm: {LIMIT_RPM}, scope: {scope}}},\n"
            "     prices: {'sim/echo': {input: 1, output: 1}}}\n")
        token = base / "token"
        token.write_text("bench-token\n")
        root = base / "root"
        coordinator = subprocess.Popen(
            [BIN, "coordinator", "start", "--listen", "127.0.0.1:0", "--root", root, "--token-file", token],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ, RUST_LOG="info"))
        processes.append(coordinator)
        address = address_of(wait_for_line(coordinator, "coordinator listening"))
        for number, parallel in enumerate(parallel_per_worker, 1):
            worker = subprocess.Popen(
                [BIN, "worker", "join", address, "--name", f"w{number}", "--slots", "2", "--token-file", token,
                 "--work-dir", base / f"w{number}", "--providers", providers],
                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                env=dict(os.environ, RUST_LOG="info", BENCH_PARALLEL_CALLS=str(parallel)))
            processes.append(worker)
            wait_for_line(worker, "joined")
        (base / "caller.py").write_text(CALLER)
        start = time.time()
        deadline = start + WARM_UP_S + window_s
        experiment = base / "experiment.yaml"
        experiment.write_text(
            f"name: {name}\nrun:\n  kind: command\n  command: [{str(python)!r}, caller.py, '{deadline}']\n"
            f"  timeout: 10m\nruns_per_variation: {2 * len(parallel_per_worker)}\nretries: {{max_attempts: 1}}\n")
        subprocess.run([BIN, "submit", experiment, "--wait", "--coordinator", address, "--token-file", token],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=window_s + 300)
        db = sqlite3.connect(root / "flotilla.db")
        window = (int((start + WARM_UP_S) * 1000), int(deadline * 1000))
        rows = db.execute(
            "SELECT status, retries, started_at_ms + latency_ms FROM calls WHERE started_at_ms + latency_ms BETWEEN ? AND ?",
            window).fetchall()
        runs_per_worker = db.execute("SELECT worker, COUNT(*) FROM attempts GROUP BY worker").fetchall()
        db.close()
        answered = sum(1 for status, _, _ in rows if status == "succeeded")
        # Each retry follows a 429 (the sim-server answers nothing else that is retried);
        # a call that failed for good met one more.
        too_many = sum(retries for _, retries, _ in rows) + sum(1 for status, _, _ in rows if status != "succeeded")
        used = answered / (LIMIT_RPM / 60 * window_s)
        share_429 = too_many / max(answered + too_many, 1)
        return used, share_429, answered, too_many, dict(runs_per_worker)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=int, default=120, help="seconds measured per scenario")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-rate-", dir=os.environ.get("BENCH_DIR", ROOT / "target")))
    python = python_with_openai(work)
    rows = []
    try:
        for name, parallel, scope, target in (
            ("even", [4, 4, 4, 4], "cluster", "used >= 98%, 429s <= 0.5%"),
            ("skewed", [10, 1, 1, 1], "cluster", "used >= 95%"),
            ("per-worker", [4, 4, 4, 4], "worker", "comparison: each worker paces at the whole limit"),
        ):
            used, share_429, answered, too_many, per_worker = scenario(work, name, parallel, scope, args.window, python)
            rows.append((
                f"{name} demand ({'/'.join(map(str, parallel))} calls in flight per run), limits scope {scope}",
                f"{used:.1%} of {LIMIT_RPM} rpm used",
                f"{share_429:.2%} of requests answered 429 ({answered} answered, {too_many} 429s in {args.window} s); target: {target}",
            ))
            log(rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| scenario | limit used | 429s |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
