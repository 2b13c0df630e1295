"""Fixtures: the installed `flotilla` command, scenario programs that use the
module's helpers, and coordinators started (and killed) by the tests.

The tests drive the package as a user has it: `pip install` of the wheel into
a fresh environment (tests/python_package.rs makes it), the binary it put on
that environment's scripts path, the official `flotilla` module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import flotilla

DEADLINE_S = 120

# Uses every helper: nested parameters, the seed, the output directory, an
# LLM call through the worker's gateway (a sim model), and metrics in two
# calls. The quiet style reports no remark, so that column has gaps.
SCENARIO = textwrap.dedent(
    """
    import json, os, random, time, urllib.request
    import flotilla

    params = flotilla.run_params()
    agent = params["agent"]
    rng = random.Random(flotilla.seed())
    time.sleep(float(os.environ.get("SCENARIO_SLEEP", "0")))
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions",
        data=json.dumps({"model": "sim/echo", "messages": [{"role": "user", "content": "hello"}]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"},
    )
    answer = json.load(urllib.request.urlopen(request))["choices"][0]["message"]["content"]
    (flotilla.output_dir() / "note.txt").write_text(f"skill {agent['skill']}: {answer}")
    score = agent["skill"] * 10 + rng.random()
    flotilla.log_metrics(score=score)
    extra = {"won": score > 5, "seed_seen": flotilla.seed(), "rounds_seen": params["rounds"]}
    if agent["style"] != "quiet":
        extra["remark"] = "hello, world"
    flotilla.log_metrics(**extra)
    """
)


def sweep(name: str, runs: int = 3) -> dict:
    """A 4-variation sweep of SCENARIO with dotted parameter names."""
    return {
        "name": name,
        "run": {"kind": "command", "command": [sys.executable, "scenario.py"], "workdir": ".", "timeout": "60s"},
        "params": {"rounds": 3},
        "variations": [
            {"param": "agent.skill", "values": [0.2, 0.8]},
            {"param": "agent.style", "values": ["quiet", "loud"]},
        ],
        "runs_per_variation": runs,
        "seed": 5,
        "metrics": [{"name": "score", "goal": "maximize"}, {"name": "won", "goal": "maximize"}],
    }


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with the scenario program, the current directory of the test."""
    (tmp_path / "scenario.py").write_text(SCENARIO)
    monkeypatch.chdir(tmp_path)
    for variable in ("FLOTILLA_ROOT", "FLOTILLA_COORDINATOR", "FLOTILLA_TOKEN_FILE"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


class Coordinator:
    """`flotilla coordinator start` on an ephemeral loopback port with one
    worker joined; both killed by process id at the end."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.token_file = work / "token"
        self.token_file.write_text("python-tests-token\n")
        self.processes: list[subprocess.Popen] = []
        coordinator = self._spawn(
            ["coordinator", "start", "--listen", "127.0.0.1:0", "--root", str(root), "--token-file", str(self.token_file)]
        )
        line = self._wait_for(coordinator, "coordinator listening")
        self.address = re.search(r"address=(\S+)", line).group(1)
        worker = self._spawn(
            ["worker", "join", self.address, "--slots", "2", "--token-file", str(self.token_file), "--work-dir", str(work / "worker")]
        )
        self._wait_for(worker, "joined")

    def _spawn(self, arguments: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(
            [flotilla.binary(), *arguments], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.processes.append(process)
        return process

    @staticmethod
    def _wait_for(process: subprocess.Popen, needle: str) -> str:
        found: list[str] = []
        done = threading.Event()

        def read() -> None:
            for line in process.stderr:
                if needle in line and not found:
                    found.append(line)
                    done.set()
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(DEADLINE_S) or not found:
            raise AssertionError(f"no {needle!r} line from {process.args}")
        return found[0]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.kill()
            process.wait()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    started = Coordinator(tmp_path / "coordinator-root", tmp_path)
    try:
        yield started
    finally:
        started.stop()


def wait_until(what: str, condition) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < DEADLINE_S, f"timed out waiting for {what}"
        time.sleep(0.1)


__all__ = ["Coordinator", "sweep", "wait_until", "os"]
