#!/usr/bin/env python3
"""Command runs side by side with HyperQueue: the same /bin/true tasks, the
same two workers, alternated round by round on the same machine.

HyperQueue is the baseline an HPC user compares a task runner with. Its
`hq` binary is built from the public source (It4innovations/hyperqueue):

    apt-get install cmake clang libclang-dev
    cargo build --release -p hyperqueue --no-default-features --features jemalloc,highs

and passed to this script by path; it is never committed.

Each round runs, in alternating order:

  * Flotilla: `flotilla coordinator start` and two `flotilla worker join
    --slots 2`, then `flotilla submit --wait` of N /bin/true command runs
    (one attempt each: /bin/true prints no metrics, so every run is
    recorded as failed, the same work as a success). Every run's result.json
    and its SQLite rows are durable before the run counts; the script checks
    the database holds all N afterwards.
  * HyperQueue: `hq server start` and two `hq worker start --cpus 2` (what
    `hq` detects on a 2-core machine: 2 tasks at a time per worker, as
    Flotilla's 2 slots), then `hq submit --array 1-N --wait /bin/true` with
    HyperQueue's defaults (a stdout and a stderr file per task, no journal:
    nothing of the server's state survives a crash).

Throughput is N divided by the wall clock of the submitting command, with
the workers already connected, for both. Single rounds on a 2-core VM vary
by +-30%, so the figure is the median over rounds, and the ratio is the
median of the rounds' ratios.

Usage: python3 bench/vs_hyperqueue.py --hq PATH/TO/hq [--runs 10000] [--rounds 5]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (the Flotilla side is the same as bench/throughput.py's)

READY_DEADLINE_S = 60


def log(message):
    print(message, file=sys.stderr, flush=True)


def hq_json(hq, server_dir, *args):
    out = subprocess.run(
        [hq, "--server-dir", server_dir, "--output-mode", "json", *args],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return json.loads(out)


def hq_sweep(hq, runs, work, round_number):
    """One HyperQueue sweep on a fresh server and two fresh workers; runs/s by
    the wall clock of `hq submit --wait`."""
    base = work / f"hq-{round_number}"
    server_dir = base / "server"
    submit_dir = base / "submit"
    submit_dir.mkdir(parents=True)
    processes = []
    try:
        server = subprocess.Popen(
            [hq, "--server-dir", server_dir, "server", "start", "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(server)
        subprocess.run(
            [hq, "--server-dir", server_dir, "server", "wait", "--timeout", f"{READY_DEADLINE_S}s"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=READY_DEADLINE_S + 5,
        )
        for number in (1, 2):
            processes.append(subprocess.Popen(
                [hq, "--server-dir", server_dir, "worker", "start", "--cpus", "2", "--manager", "none",
                 "--hostname", f"w{number}", "--work-dir", base / f"w{number}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        deadline = time.monotonic() + READY_DEADLINE_S
        while len(hq_json(hq, server_dir, "worker", "list")) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("HyperQueue workers did not connect")
            time.sleep(0.1)
        start = time.perf_counter()
        subprocess.run(
            [hq, "--server-dir", server_dir, "submit", "--array", f"1-{runs}", "--wait", "/bin/true"],
            check=True, cwd=submit_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=throughput.DEADLINE_S,
        )
        wall = time.perf_counter() - start
        finished = hq_json(hq, server_dir, "job", "info", "1")[0]["info"]["task_stats"]["finished"]
        if finished != runs:
            raise RuntimeError(f"HyperQueue finished {finished} of {runs} tasks")
        return runs / wall
    finally:
        subprocess.run([hq, "--server-dir", server_dir, "server", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


def flotilla_sweep(runs, work):
    """One Flotilla sweep: (runs/s by the wall clock of `submit --wait`,
    runs/s by the coordinator's durable clock)."""
    work.mkdir(parents=True, exist_ok=True)
    durable, wall, _ = throughput.flotilla_sweep("command", runs, 2, work)
    return wall, durable


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hq", type=Path, required=True, help="HyperQueue's `hq` binary, built from source")
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not os.access(args.hq, os.X_OK):
        sys.exit(f"--hq {args.hq}: not an executable file")

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=throughput.ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-vs-hq-", dir=os.environ.get("BENCH_DIR", throughput.ROOT / "target")))
    rounds = []
    try:
        for number in range(args.rounds):
            # Alternate which goes first, so neither always meets a warmer machine.
            order = ("flotilla", "hq") if number % 2 == 0 else ("hq", "flotilla")
            figures = {}
            for which in order:
                if which == "hq":
                    figures["hq"] = hq_sweep(args.hq, args.runs, work, number)
                else:
                    figures["flotilla"], figures["durable"] = flotilla_sweep(args.runs, work / f"f-{number}")
            figures["ratio"] = figures["flotilla"] / figures["hq"]
            rounds.append(figures)
            log(f"round {number + 1}: Flotilla {figures['flotilla']:,.0f} runs/s "
                f"(durable clock {figures['durable']:,.0f}), HyperQueue {figures['hq']:,.0f} tasks/s, "
                f"ratio {figures['ratio']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(key):
        return statistics.median(r[key] for r in rounds)

    ratio = median("ratio")
    print(f"| measurement ({args.runs:,} /bin/true, 2 workers x 2, {args.rounds} rounds) | median | range |")
    print("| --- | --- | --- |")
    for key, label in (("hq", "HyperQueue `hq submit --array --wait`"),
                       ("flotilla", "Flotilla `submit --wait`"),
                       ("durable", "Flotilla, coordinator's durable clock")):
        values = [r[key] for r in rounds]
        print(f"| {label} | {median(key):,.0f} runs/s | {min(values):,.0f}-{max(values):,.0f} |")
    ratios = [r["ratio"] for r in rounds]
    print(f"| Flotilla / HyperQueue | {ratio:.2f} x | {min(ratios):.2f}-{max(ratios):.2f}; "
          f"target >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'} |")


if __name__ == "__main__":
    main()
