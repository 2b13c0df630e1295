#!/usr/bin/env python3
"""Response cache benchmarks (bench/README.md).

(a)-(c): a hit's added latency over the gateway's own path, hits per second through one gateway,
and the cache's size on disk, with a cache of 1,000,000 answers: coordinator/examples/
cache_bench.rs, built here in release mode.

(d): examples/chat-eval run as a user would, its models served by a provider (a sim-server with
500 ms per answer, like a hosted model): the first run, then the same file with only its `score:`
changed under a new name. Wall time of `flotilla run`, dollars spent, and calls that reached the
provider, for each; the second should make no upstream call and be at least 20x faster.

Usage: python3 bench/cache.py [--entries 1000000] [--skip-engine] [--skip-chat-eval]
"""
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "flotilla"


def engine(extra):
    subprocess.run(["cargo", "build", "--release", "-p", "flotilla-coordinator", "--example", "cache_bench"],
                   cwd=ROOT, check=True)
    subprocess.run([ROOT / "target" / "release" / "examples" / "cache_bench", *extra], check=True)


def served(address):
    with urllib.request.urlopen(f"http://{address}/stats") as answer:
        return json.load(answer)["served"]


def timed_run(experiment, root, providers):
    started = time.monotonic()
    subprocess.run([BINARY, "run", experiment, "--root", root, "--providers", providers, "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def chat_eval():
    subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="flotilla-cache-bench-"))
    server = subprocess.Popen([BINARY, "sim-server", "--listen", "127.0.0.1:0", "--latency", "500ms"],
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        while "sim-server listening" not in line:
            line = server.stderr.readline()
        address = re.search(r"address=(\S+)", line).group(1)
        models = ["echo", "always-cooperate", "random", "judge"]
        prices = ", ".join(f"'sim/{m}': {{input: 2.5, output: 10}}" for m in models)
        providers = work / "providers.yaml"
        providers.write_text(
            f"providers:\n  - {{name: hosted, api: openai, base_url: 'http://{address}/v1', prices: {{{prices}}}}}\n")
        copy = work / "chat-eval"
        shutil.copytree(ROOT / "examples" / "chat-eval", copy)
        text = (copy / "experiment.yaml").read_text()
        text = re.sub(r"\bsim/", "hosted/sim/", text)
        (copy / "experiment.yaml").write_text(text)
        rescored = text.replace("name: chat-eval", "name: chat-eval-rescored").replace(
            '{metric: correct, regex: "\\\\b{word}\\\\b"}', '{metric: correct, contains: "{word}"}')
        assert rescored != text.replace("name: chat-eval", "name: chat-eval-rescored"), "the score changed"
        (copy / "rescored.yaml").write_text(rescored)
        root = work / "experiments"
        first_wall = timed_run(copy / "experiment.yaml", root, providers)
        first_calls = served(address)
        second_wall = timed_run(copy / "rescored.yaml", root, providers)
        second_calls = served(address) - first_calls
        cost = lambda name: json.loads((root / name / "batch-costs.json").read_text())
        first, second = cost("chat-eval"), cost("chat-eval-rescored")
        print("| measurement | figure | baseline (same run) | ratio |")
        print("| --- | --- | --- | --- |")
        print(f"| examples/chat-eval with its score changed: wall time | {second_wall:.2f} s | the first run: "
              f"{first_wall:.2f} s | {first_wall / second_wall:.1f} x faster |")
        print(f"| the same: dollars | ${second['cost_usd']:.6f} (saved ${second['cache']['saved_usd']:.6f}) | "
              f"the first run: ${first['cost_usd']:.6f} | {second['cache']['hits']} of {second['cache']['calls']} calls from the cache |")
        print(f"| the same: calls that reached the provider | {second_calls} | the first run: {first_calls} | |")
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--skip-engine" not in arguments:
        engine([a for a in arguments if a not in ("--skip-engine", "--skip-chat-eval")])
    if "--skip-chat-eval" not in arguments:
        chat_eval()
