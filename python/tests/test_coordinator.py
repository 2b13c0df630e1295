"""`flotilla.submit` to a coordinator and reading from it."""

from __future__ import annotations

from pathlib import Path

import flotilla
from conftest import Coordinator, sweep


def test_submit_waits_and_returns_the_frame_from_the_coordinator(workspace: Path, coordinator: Coordinator) -> None:
    runs = flotilla.submit(sweep("py-remote", runs=2), coordinator=coordinator.address, token_file=coordinator.token_file)
    assert len(runs) == 8
    assert (runs["status"] == "succeeded").all()
    assert str(runs["won"].dtype) == "boolean"

    # The coordinator's root read here gives the same rows.
    here = flotilla.load("py-remote", root=coordinator.root)
    assert here["score"].tolist() == runs["score"].tolist()

    calls = flotilla.calls("py-remote", coordinator=coordinator.address, token_file=coordinator.token_file)
    assert len(calls) == 8
    listed = flotilla.experiments(coordinator=coordinator.address, token_file=coordinator.token_file)
    assert [e["name"] for e in listed] == ["py-remote"]
    assert listed[0]["counts"]["succeeded"] == 8
    report = flotilla.report("py-remote", coordinator=coordinator.address, token_file=coordinator.token_file)
    assert report["total_runs"] == 8


def test_a_wrong_token_is_refused_with_its_exit_code(workspace: Path, coordinator: Coordinator) -> None:
    wrong = workspace / "wrong-token"
    wrong.write_text("not-the-token\n")
    try:
        flotilla.experiments(coordinator=coordinator.address, token_file=wrong)
    except flotilla.FlotillaError as refused:
        assert refused.exit_code == 5, refused
    else:
        raise AssertionError("a wrong token was accepted")
