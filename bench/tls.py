#!/usr/bin/env python3
"""What TLS costs: a noop sweep (coordinator -> 2 workers x 256 slots ->
durable result) with the workers and the client reaching the coordinator
over TLS (--tls-cert/--tls-key, --tls-ca), against the same sweep in the
clear, in the same run. Noop runs make the most messages per second, so this
is TLS's worst case.

Certificates (a CA and a P-256 certificate for 127.0.0.1 it signed) are made
with the openssl command. Throughput is runs over the span from the first
attempt's start to the last one's end (the coordinator's records). Rounds
alternate the two arms; the median of each is reported.

Usage: python3 bench/tls.py [--runs 100000] [--rounds 3]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402

BIN = throughput.BIN


def log(message):
    print(message, file=sys.stderr, flush=True)


def make_certificates(directory):
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", "/CN=bench CA", "-keyout", directory / "ca.key",
            "-out", directory / "ca.pem")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", directory / "coordinator.key", "-out", directory / "coordinator.csr")
    openssl("x509", "-req", "-in", directory / "coordinator.csr", "-CA", directory / "ca.pem",
            "-CAkey", directory / "ca.key", "-CAcreateserial", "-days", "2",
            "-copy_extensions", "copy", "-out", directory / "coordinator.pem")


def sweep(work, label, runs, slots, certificates):
    base = work / label
    base.mkdir()
    token = base / "token"
    token.write_text("bench-token\n")
    root = base / "root"
    name = "tls"
    experiment = base / "experiment.yaml"
    experiment.write_text(throughput.experiment_yaml(name, "noop", runs, None))
    server_tls, client_tls = [], []
    if certificates:
        server_tls = ["--tls-cert", certificates / "coordinator.pem",
                      "--tls-key", certificates / "coordinator.key"]
        client_tls = ["--tls-ca", certificates / "ca.pem"]
    env = dict(os.environ, RUST_LOG="info")
    coordinator = subprocess.Popen(
        [BIN, "coordinator", "start", "--listen", "127.0.0.1:0", "--root", root,
         "--token-file", token, *server_tls],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    processes = []
    try:
        line = throughput.wait_for_line(coordinator, "coordinator listening")
        address = next(w.split("=", 1)[1] for w in line.split() if w.startswith("address="))
        subprocess.run([BIN, "submit", experiment, "--coordinator", address, "--token-file", token,
                        *client_tls], check=True, stdout=subprocess.DEVNULL)
        for number in (1, 2):
            processes.append(subprocess.Popen(
                [BIN, "worker", "join", address, "--name", f"w{number}", "--slots", str(slots),
                 "--token-file", token, "--work-dir", base / f"w{number}", *client_tls],
                stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env))
        return throughput.attempt_span_rate(root, name, runs)
    finally:
        for process in processes + [coordinator]:
            process.terminate()
        for process in processes + [coordinator]:
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: cargo build --release first")
    work = Path(tempfile.mkdtemp(prefix="flotilla-bench-tls-"))
    certificates = work / "certificates"
    certificates.mkdir()
    make_certificates(certificates)
    clear, encrypted = [], []
    try:
        for round_number in range(args.rounds):
            rate = sweep(work, f"clear-{round_number}", args.runs, 256, None)
            clear.append(rate)
            log(f"round {round_number + 1}: in the clear {rate:,.0f} runs/s")
            rate = sweep(work, f"tls-{round_number}", args.runs, 256, certificates)
            encrypted.append(rate)
            log(f"round {round_number + 1}: over TLS {rate:,.0f} runs/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    clear_median, tls_median = statistics.median(clear), statistics.median(encrypted)
    print(f"noop sweep, {args.runs} runs, 2 workers x 256 slots (median of {args.rounds}):")
    print(f"  in the clear: {clear_median:,.0f} runs/s")
    print(f"  over TLS:     {tls_median:,.0f} runs/s = {tls_median / clear_median:.2f}x")


if __name__ == "__main__":
    main()
