#!/usr/bin/env python3
"""Gateway benchmarks: overhead over calling flotilla's sim-server directly (streamed and not, at
500 calls/s), throughput through one worker's gateway, the share of a 600 rpm limit used over two
minutes with the 429s met, and the cost of the same calls streamed and not. All in one process on
127.0.0.1: gateway/examples/gateway_bench.rs, built here in release mode.

Usage: python3 bench/gateway.py [--limit-seconds 120]
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
subprocess.run(["cargo", "build", "--release", "-p", "flotilla-gateway", "--example", "gateway_bench"],
               cwd=ROOT, check=True)
sys.exit(subprocess.run([ROOT / "target" / "release" / "examples" / "gateway_bench", *sys.argv[1:]]).returncode)
