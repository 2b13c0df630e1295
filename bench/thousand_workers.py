#!/usr/bin/env python3
"""What one coordinator holds: a thousand workers on one coordinator.

`bench/loadgen` (Rust, `flotilla-loadgen`) opens N worker sessions against
one `flotilla coordinator start`, each on its own connection, heartbeating at
the interval the coordinator gives and running noop runs (ARCHITECTURE.md,
"Scale"). The script measures:

  * joining: time until all N sessions are connected;
  * idle: the coordinator's CPU (utime + stime from /proc) over --idle-seconds
    with N idle workers, as a share of one core; target <= 5%;
  * memory per connected worker: the coordinator's RSS with N workers minus
    its RSS before any joined, over N;
  * assignment throughput: a noop sweep of --runs runs over N workers x
    --slots slots, runs per second by the coordinator's durable clock
    (batch-summary.json) and by the wall clock of `flotilla submit --wait`;
  * restart: the coordinator stopped (SIGTERM) and started again on the same
    address and root; time from its "coordinator listening" line until all N
    sessions are connected again; target <= 10 s.

Usage: python3 bench/thousand_workers.py [--workers 1000] [--slots 4] [--runs 200000]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "flotilla"
LOADGEN = ROOT / "target" / "release" / "flotilla-loadgen"
DEADLINE_S = 600


def log(message):
    print(message, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid, field="VmRSS:"):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_coordinator(listen, root, token):
    coordinator = subprocess.Popen(
        [BIN, "coordinator", "start", "--listen", listen, "--root", root, "--token-file", token],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ, RUST_LOG="warn,flotilla=info"),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = coordinator.stderr.readline()
        if not line:
            raise RuntimeError("the coordinator exited before it listened")
        if "coordinator listening" in line:
            address = next(w.split("=", 1)[1] for w in line.split() if w.startswith("address="))
            # Keep reading its log, so that a full pipe never blocks it.
            threading.Thread(target=lambda: [None for _ in coordinator.stderr], daemon=True).start()
            return coordinator, address, time.monotonic()
    raise RuntimeError("the coordinator did not listen within 60 s")


class Loadgen:
    """The load generator's process and its latest counters."""

    def __init__(self, address, token, workers, slots):
        self.process = subprocess.Popen(
            [LOADGEN, address, "--token-file", token, "--workers", str(workers), "--slots", str(slots)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.latest = {"connected": 0, "joins": 0, "runs": 0, "heartbeats": 0}
        self.condition = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: [log("loadgen: " + l.rstrip()) for l in self.process.stderr], daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            figures = json.loads(line)
            figures["seen_at"] = time.monotonic()
            with self.condition:
                self.latest = figures
                self.condition.notify_all()

    def wait_for(self, predicate, what):
        deadline = time.monotonic() + DEADLINE_S
        with self.condition:
            while not predicate(self.latest):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"loadgen: no {what} (last: {self.latest})")
                self.condition.wait(timeout=1)
            return dict(self.latest)

    def stop(self):
        self.process.kill()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--runs", type=int, default=200000)
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "flotilla", "-p", "flotilla-loadgen"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-1000-", dir=os.environ.get("BENCH_DIR", ROOT / "target")))
    rows = []
    coordinator = loadgen = None
    try:
        token = work / "token"
        token.write_text("bench-token\n")
        root = work / "root"
        coordinator, address, _ = start_coordinator("127.0.0.1:0", root, token)
        time.sleep(1)
        rss_before = rss_mib(coordinator.pid)

        started = time.monotonic()
        loadgen = Loadgen(address, token, args.workers, args.slots)
        loadgen.wait_for(lambda f: f["connected"] >= args.workers, f"{args.workers} connected")
        joined_s = time.monotonic() - started
        rows.append((f"{args.workers} workers join (paced at 500/s by the generator)", f"{joined_s:.1f} s", ""))
        log(rows[-1])

        time.sleep(5)
        cpu_before, at_before = cpu_seconds(coordinator.pid), time.monotonic()
        beats_before = loadgen.latest["heartbeats"]
        time.sleep(args.idle_seconds)
        share = (cpu_seconds(coordinator.pid) - cpu_before) / (time.monotonic() - at_before)
        beats = (loadgen.latest["heartbeats"] - beats_before) / args.idle_seconds
        rows.append((f"coordinator CPU, {args.workers} idle workers", f"{share * 100:.2f}% of a core",
                     f"{beats:,.0f} heartbeats/s; target <= 5%: {'met' if share <= 0.05 else 'NOT met'}"))
        log(rows[-1])
        rss_with = rss_mib(coordinator.pid)
        per_worker_kib = (rss_with - rss_before) * 1024 / args.workers
        rows.append(("coordinator memory per connected worker", f"{per_worker_kib:,.1f} KiB",
                     f"RSS {rss_before:.0f} MiB before, {rss_with:.0f} MiB with {args.workers} workers"))
        log(rows[-1])

        experiment = work / "noop.yaml"
        experiment.write_text(
            "name: sweep\nrun: {kind: noop}\nvariations:\n  - param: i\n    values: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
            f"runs_per_variation: {args.runs // 10}\n"
        )
        wall_start = time.perf_counter()
        subprocess.run([BIN, "submit", experiment, "--wait", "--coordinator", address, "--token-file", token],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=DEADLINE_S)
        wall = time.perf_counter() - wall_start
        summary = json.loads((root / "sweep" / "batch-summary.json").read_text())
        if summary["succeeded"] != args.runs:
            raise RuntimeError(f"{summary['succeeded']} of {args.runs} runs succeeded")
        rows.append((f"noop runs, {args.workers} workers x {args.slots} slots, {args.runs:,} runs",
                     f"{args.runs / summary['duration_s']:,.0f} runs/s",
                     f"durable clock; {args.runs / wall:,.0f} runs/s by the wall clock of `submit --wait`; "
                     f"coordinator peak RSS {rss_mib(coordinator.pid, 'VmHWM:'):.0f} MiB"))
        log(rows[-1])

        joins_before = loadgen.latest["joins"]
        coordinator.terminate()
        coordinator.wait()
        stopped = time.monotonic()
        loadgen.wait_for(lambda f: f["connected"] == 0, "disconnect")
        coordinator, _, listening = start_coordinator(address, root, token)
        figures = loadgen.wait_for(
            lambda f: f["connected"] >= args.workers and f["joins"] >= joins_before + args.workers,
            f"{args.workers} reconnected")
        back = figures["seen_at"] - listening
        rows.append((f"all {args.workers} reconnected after a coordinator restart", f"{back:.1f} s",
                     f"from its 'listening' line ({figures['seen_at'] - stopped:.1f} s from the stop; "
                     f"the worker's backoff doubles to 2 s); target <= 10 s: {'met' if back <= 10 else 'NOT met'}"))
        log(rows[-1])
    finally:
        if loadgen:
            loadgen.stop()
        if coordinator and coordinator.poll() is None:
            coordinator.terminate()
            coordinator.wait()
        shutil.rmtree(work, ignore_errors=True)

    print("| measurement | figure | notes |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
