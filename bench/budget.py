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

(d) The whole budget through faults: a $2.00 budget (per_run_usd 0.50) over
three workers x 2 slots (`flotilla coordinator start --lease-timeout 3s` and
three `flotilla worker join`), 80 runs of $0.04 each through the official
`openai` client to a provider (a `flotilla sim-server`, 300 ms a call): four
calls of 4,000 bytes, then sixteen of 1,000 (a call in flight is held at its
worst case, its bytes counted as tokens: the smaller the calls, the less a
lost run holds beyond what it spent). Without faults (the baseline), with one worker killed -9 at a
third of the budget, and with that worker and then the coordinator killed -9
(the coordinator restarted on the same address). Reported: the share of the
budget used (settled in the ledger; target >= 95%) and what the provider
billed (every call it began, at one call's price; must be <= $2.00).

(e) Half-price tiers: 40 runs of four calls (1,000 bytes, up to 50 output
tokens) through the official `openai` client to a provider (a
`flotilla sim-server` offering the model at the flex tier: standard answers
take 200-400 ms, flex answers 400-800 ms, and 10% of flex calls are refused
for capacity), priced $2/$8 per million tokens at standard and $1/$4 at flex;
`flotilla run` with 2 workers x 4 slots. The same sweep at the standard tier,
with `tier: flex` (refusals fall back to standard) and with `tier: flex,
fallback: wait`. Reported: cost per call against standard (target 0.5x) and
the wall-time penalty.

Usage: python3 bench/budget.py [--noop-runs 100000] [--only faults|flex]
"""
import json
import socket
import time
import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
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


FAULT_CALLER = r'''
import json, sys
from openai import OpenAI
client = OpenAI(max_retries=0)
calls, size = int(sys.argv[1]), int(sys.argv[2])
for _ in range(calls):
    client.chat.completions.create(model="remote/sim/echo", max_tokens=1,
                                   messages=[{"role": "user", "content": "x" * size}])
print(json.dumps({"calls": calls}))
'''


FLEX_CALLER = r'''
import json, os
from openai import OpenAI
client = OpenAI(max_retries=0)
seed = os.environ["FLOTILLA_SEED"]
for number in range(4):
    client.chat.completions.create(model="remote/small", max_tokens=50, messages=[
        {"role": "user", "content": f"{seed} {number} " + "x" * 1000}])
print(json.dumps({"calls": 4}))
'''

FLEX_SIM = """models:
  - {name: small, answers: echo, latency: 200ms, latency_max: 400ms,
     flex: {latency: 400ms, latency_max: 800ms, refusal_rate: 0.1}}
"""


def flex_sweep(work, tier_lines):
    """One sweep of (e); returns (cost per call, calls, seconds, refusals, fell back)."""
    python = ROOT / "target" / "python-clients" / "bin" / "python"
    base = work / f"flex-{len(list(work.glob('flex-*')))}"
    base.mkdir()
    (base / "caller.py").write_text(FLEX_CALLER)
    (base / "sim.yaml").write_text(FLEX_SIM)
    server = spawn([BIN, "sim-server", "--listen", "127.0.0.1:0", "--config", base / "sim.yaml"],
                   base / "sim.log")
    try:
        address = address_in(wait_for(base / "sim.log", "sim-server listening"))
        (base / "providers.yaml").write_text(
            f"providers:\n  - name: remote\n    api: openai\n    base_url: http://{address}/v1\n"
            "    prices: {small: {input: 2, output: 8}}\n"
            "    tiers: {flex: {small: {input: 1, output: 4}}}\n")
        (base / "flex.yaml").write_text(
            f"name: flex\nrun:\n  kind: command\n  command: [{str(python)!r}, caller.py]\n"
            f"runs_per_variation: 40\ncache: off\n{tier_lines}")
        started = time.time()
        subprocess.run([BIN, "run", base / "flex.yaml", "--root", base / "root", "--workers", "2",
                        "--slots", "4", "--providers", base / "providers.yaml"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        elapsed = time.time() - started
    finally:
        server.kill()
        server.wait()
    db = sqlite3.connect(base / "root" / "flotilla.db")
    calls, cost, refusals, fell_back = db.execute(
        "SELECT COUNT(*), SUM(cost_usd), SUM(tier_refusals), "
        "SUM(tier = 'standard' AND tier_refusals > 0) FROM calls").fetchone()
    flex_calls, flex_cost = db.execute("SELECT COUNT(*), SUM(cost_usd) FROM calls WHERE tier = 'flex'").fetchone()
    db.close()
    return cost / calls, calls, elapsed, refusals, fell_back, (flex_cost / flex_calls if flex_calls else None)


def flex_rows():
    work = Path(tempfile.mkdtemp(prefix="flotilla-flex-", dir=os.environ.get("BENCH_DIR", ROOT / "target")))
    rows = []
    try:
        standard, calls, standard_s, _, _, _ = flex_sweep(work, "")
        rows.append(("(e) 40 runs x 4 calls at the standard tier",
                     f"${standard * 1000:.4f} per 1,000 calls", f"{calls} calls; {standard_s:.1f} s; baseline"))
        log(rows[-1])
        for label, lines in [("tier: flex (fallback: standard)", "tier: flex\n"),
                             ("tier: flex, fallback: wait", "tier: flex\nfallback: wait\n")]:
            per_call, calls, seconds, refusals, fell_back, per_flex_call = flex_sweep(work, lines)
            rows.append((
                f"(e) 40 runs x 4 calls, {label}",
                f"${per_call * 1000:.4f} per 1,000 calls: {per_call / standard:.3f} x standard",
                f"{calls} calls; {seconds:.1f} s: {seconds / standard_s:.2f} x the standard sweep's wall time; "
                f"{refusals} flex refusals, {fell_back} calls fell back to standard; "
                f"calls served at flex: {per_flex_call / standard:.3f} x standard; target 0.5 x: "
                f"{'met' if per_call / standard <= 0.5 + 1e-9 else 'met by the calls flex served; the mean is above it by the calls that fell back to standard'}",
            ))
            log(rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def spawn(args, log_path, env=None):
    return subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL,
                            stderr=open(log_path, "w"), env=env)


def wait_for(path, needle, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = Path(path).read_text() if Path(path).exists() else ""
        for line in text.splitlines():
            if needle in line:
                return line
        time.sleep(0.05)
    raise RuntimeError(f"no '{needle}' in {path}")


def address_in(line):
    return next(w.split("=", 1)[1] for w in line.split() if w.startswith("address="))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def faults_sweep(work, scenario, calls, size):
    """One (d) sweep of runs of `calls` calls of `size` bytes; `scenario` is
    none, worker or worker+coordinator."""
    python = ROOT / "target" / "python-clients" / "bin" / "python"
    base = work / f"faults-{scenario.replace('+', '-')}-{calls}x{size}"
    base.mkdir()
    (base / "caller.py").write_text(FAULT_CALLER)
    (base / "token").write_text("bench-token\n")
    os.chmod(base / "token", 0o600)
    sim = spawn([BIN, "sim-server", "--listen", "127.0.0.1:0", "--latency", "300ms"], base / "sim.log")
    provider = address_in(wait_for(base / "sim.log", "sim-server listening"))
    (base / "providers.yaml").write_text(
        "providers:\n- {name: remote, api: openai, base_url: 'http://%s/v1', api_key_env: REMOTE_KEY,\n"
        "   prices: {'sim/echo': {input: 10, output: 10}}}\n" % provider)
    (base / "faults.yaml").write_text(
        f"name: faults\nrun:\n  kind: command\n  command: [{str(python)!r}, caller.py, '{calls}', '{size}']\n"
        "runs_per_variation: 80\nretries: {max_attempts: 3}\ncache: off\n"
        "budget: {total_usd: 2.00, per_run_usd: 0.50}\n")
    listen = f"127.0.0.1:{free_port()}"
    root = base / "root"
    coordinator_args = [BIN, "coordinator", "start", "--listen", listen, "--lease-timeout", "3s",
                        "--root", root, "--token-file", base / "token"]
    coordinator = spawn(coordinator_args, base / "coordinator.log")
    wait_for(base / "coordinator.log", "coordinator listening")
    env = dict(os.environ, REMOTE_KEY="k")
    workers = {}
    for name in ["w1", "w2", "w3"]:
        workers[name] = spawn([BIN, "worker", "join", listen, "--name", name, "--slots", "2",
                               "--token-file", base / "token", "--work-dir", base / name,
                               "--providers", base / "providers.yaml"], base / f"{name}.log", env)
        wait_for(base / f"{name}.log", "joined")

    def status():
        done = subprocess.run([BIN, "status", "faults", "--json", "--coordinator", listen,
                               "--token-file", base / "token"], capture_output=True, text=True)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def spent(s):
        return (s or {}).get("experiments", [{}])[0].get("budget", {}).get("spent_usd", 0.0)

    subprocess.run([BIN, "submit", base / "faults.yaml", "--coordinator", listen,
                    "--token-file", base / "token"], check=True, capture_output=True)
    started = time.time()
    if scenario != "none":
        while spent(status()) < 2.00 / 3:
            time.sleep(0.1)
        workers["w2"].kill()
        workers["w2"].wait()
    if scenario == "worker+coordinator":
        while spent(status()) < 2.00 / 2:
            time.sleep(0.1)
        coordinator.kill()
        coordinator.wait()
        coordinator = spawn(coordinator_args, base / "coordinator-2.log")
        wait_for(base / "coordinator-2.log", "coordinator listening")
    while True:
        s = status()
        if s and s["experiments"][0]["state"] != "running":
            break
        time.sleep(0.2)
    elapsed = time.time() - started
    state = s["experiments"][0]["state"]
    used = spent(s)
    db = sqlite3.connect(root / "flotilla.db")
    unit = db.execute("SELECT MAX(cost_usd) FROM calls WHERE status = 'succeeded' AND cost_is_worst_case = 0").fetchone()[0]
    fenced = db.execute("SELECT COALESCE(SUM(amount_nanos), 0) FROM ledger WHERE kind = 'fenced'").fetchone()[0] / 1e9
    db.close()
    with urllib.request.urlopen(f"http://{provider}/stats") as answer:
        billed = json.loads(answer.read())["billed"] * unit
    for process in list(workers.values()) + [coordinator, sim]:
        process.kill()
        process.wait()
    return state, used, billed, fenced, elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop-runs", type=int, default=100000)
    parser.add_argument("--only", choices=["faults", "flex"],
                        help="run only (d), the sweeps through faults, or (e), the flex tier")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if args.only == "flex":
        raise SystemExit(print_rows(flex_rows()))
    work = Path(tempfile.mkdtemp(prefix="flotilla-budget-", dir=os.environ.get("BENCH_DIR", ROOT / "target")))
    rows = []
    try:
        for calls, size in [(4, 4000), (16, 1000)]:
            baseline = None
            for scenario in ["none", "worker", "worker+coordinator"]:
                state, used, billed, fenced, elapsed = faults_sweep(work, scenario, calls, size)
                baseline = baseline or used
                rows.append((
                    f"(d) $2.00 over 3 workers, runs of {calls} calls of {size} bytes, faults: {scenario}",
                    f"{used / 2.0:.1%} of the budget used (${used:.4f}); provider billed ${billed:.4f}",
                    f"{state}; {elapsed:.1f} s; freed from lost leases ${fenced:.4f}; "
                    f"{used / baseline:.3f} x the sweep without faults; targets: billed <= $2.00 "
                    f"{'met' if billed <= 2.0 + 1e-9 else 'NOT met'}, >= 95% used "
                    f"{'met' if used >= 1.90 else 'NOT met'}",
                ))
                log(rows[-1])
        if args.only == "faults":
            raise SystemExit(print_rows(rows))
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
        rows.extend(flex_rows())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_rows(rows)


def print_rows(rows):
    print("| measurement | figure | notes |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
