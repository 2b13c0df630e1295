#!/usr/bin/env python3
"""What watching costs: a 100,000-run noop sweep (coordinator -> 2 workers x
256 slots -> durable result) with 50 `flotilla watch` clients and 5 open
dashboard event streams, against the same sweep unwatched, in the same run.
Target: at most 10% less throughput.

Each sweep is submitted before its workers join, so that the watchers are
connected before the first run starts; throughput is runs over the span from
the first attempt's start to the last one's end (the coordinator's records).
Rounds alternate unwatched and watched; the median of each is reported.

Usage: python3 bench/watchers.py [--runs 100000] [--watchers 50] [--streams 5] [--rounds 3]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402

BIN = throughput.BIN


def log(message):
    print(message, file=sys.stderr, flush=True)


def read_stream(url, stop):
    """Keeps one dashboard event stream open and reads it until told to stop."""
    try:
        with urllib.request.urlopen(url, timeout=600) as response:
            while not stop.is_set():
                if not response.read1(65536):
                    break
    except Exception as error:  # a stream that fails is reported, not fatal
        log(f"event stream {url}: {error}")


def sweep(work, label, runs, slots, watchers, streams):
    base = work / label
    base.mkdir()
    token = base / "token"
    token.write_text("bench-token\n")
    root = base / "root"
    name = "watched"
    experiment = base / "experiment.yaml"
    experiment.write_text(throughput.experiment_yaml(name, "noop", runs, None))
    env = dict(os.environ, RUST_LOG="info")
    coordinator = subprocess.Popen(
        [BIN, "coordinator", "start", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--root", root, "--token-file", token],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    processes, threads, stop = [], [], threading.Event()
    try:
        http_line = throughput.wait_for_line(coordinator, "HTTP listening")
        http = http_line.split("http://", 1)[1].split("/", 1)[0]
        line = throughput.wait_for_line(coordinator, "coordinator listening")
        address = next(w.split("=", 1)[1] for w in line.split() if w.startswith("address="))
        subprocess.run([BIN, "submit", experiment, "--coordinator", address, "--token-file", token],
                       check=True, stdout=subprocess.DEVNULL)
        for _ in range(watchers):
            processes.append(subprocess.Popen(
                [BIN, "watch", name, "--coordinator", address, "--token-file", token],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(streams):
            thread = threading.Thread(target=read_stream,
                                      args=(f"http://{http}/experiments/{name}/events", stop), daemon=True)
            thread.start()
            threads.append(thread)
        # The same wait in both arms: watchers connect meanwhile.
        time.sleep(3)
        alive = sum(p.poll() is None for p in processes)
        if alive != watchers:
            raise RuntimeError(f"only {alive} of {watchers} watchers are running")
        workers = []
        for number in (1, 2):
            worker = subprocess.Popen(
                [BIN, "worker", "join", address, "--name", f"w{number}", "--slots", str(slots),
                 "--token-file", token, "--work-dir", base / f"w{number}"],
                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
            processes.append(worker)
        rate = throughput.attempt_span_rate(root, name, runs)
        watchers_left = sum(p.poll() is None for p in processes[:watchers])
        return rate, watchers_left
    finally:
        stop.set()
        for process in processes + [coordinator]:
            process.terminate()
        for process in processes + [coordinator]:
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100000)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: cargo build --release first")
    work = Path(tempfile.mkdtemp(prefix="flotilla-bench-watchers-"))
    plain, watched = [], []
    try:
        for round_number in range(args.rounds):
            rate, _ = sweep(work, f"plain-{round_number}", args.runs, 256, 0, 0)
            plain.append(rate)
            log(f"round {round_number + 1}: unwatched {rate:,.0f} runs/s")
            rate, left = sweep(work, f"watched-{round_number}", args.runs, 256, args.watchers, args.streams)
            watched.append(rate)
            log(f"round {round_number + 1}: watched {rate:,.0f} runs/s ({left} watchers had not ended yet)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plain_median, watched_median = statistics.median(plain), statistics.median(watched)
    print(f"noop sweep, {args.runs} runs, 2 workers x 256 slots (median of {args.rounds}):")
    print(f"  unwatched: {plain_median:,.0f} runs/s")
    print(f"  with {args.watchers} flotilla watch clients and {args.streams} dashboard event streams: "
          f"{watched_median:,.0f} runs/s = {watched_median / plain_median:.2f}x (target >= 0.90x)")


if __name__ == "__main__":
    main()
