"""`flotilla.run`, `load`, `calls`, `report` and `experiments` on this
machine: typed DataFrames from a sweep whose program uses the helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

import flotilla
from conftest import sweep, wait_until


def test_the_wheel_installed_the_command_beside_the_module() -> None:
    path = Path(flotilla.binary())
    assert path.parent == Path(sysconfig.get_path("scripts")), path
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("flotilla ") and "(commit " in version, version


def test_run_returns_one_typed_row_per_run(workspace: Path) -> None:
    runs = flotilla.run(sweep("py-sweep"), root="roots", workers=1, slots=2)

    assert len(runs) == 12
    assert (runs["status"] == "succeeded").all()
    assert list(runs.columns[:9]) == [
        "run_id", "variation", "repetition", "seed", "attempt", "status", "worker", "duration_s", "cost_usd",
    ]
    assert str(runs["variation"].dtype) == "Int64"
    assert str(runs["seed"].dtype) == "Int64"
    assert str(runs["status"].dtype) == "category"
    # Dotted parameter names are kept as columns; text parameters are categories.
    assert runs["agent.skill"].dtype == "float64"
    assert str(runs["agent.style"].dtype) == "category"
    assert str(runs["rounds"].dtype) == "Int64"
    assert str(runs["won"].dtype) == "boolean"
    assert runs["score"].dtype == "float64"
    # The program saw its own seed and nested parameters.
    assert (runs["seed_seen"] == runs["seed"]).all()
    assert (runs["rounds_seen"] == 3).all()
    assert (runs["won"] == (runs["score"] > 5)).all()
    # Repetitions share a seed across variations.
    assert runs.groupby("repetition")["seed"].nunique().eq(1).all()
    # A metric only some runs report is NA elsewhere, not an empty string.
    quiet = runs["agent.style"] == "quiet"
    assert runs.loc[quiet, "remark"].isna().all()
    assert (runs.loc[~quiet, "remark"] == "hello, world").all()
    # Each run's LLM call was metered; runs of a repetition ask the same
    # question with the same seed, so the response cache answers all but the
    # first of them for nothing.
    assert (runs["cost_usd"] > 0).sum() == 3
    # What the program wrote to output_dir() is the run's artifact.
    note = workspace / "roots" / "py-sweep" / "runs" / "var-004-run-001" / "artifacts" / "note.txt"
    assert note.read_text().startswith("skill 0.8: ")

    # The same numbers as results.csv, read without types.
    plain = pd.read_csv(workspace / "roots" / "py-sweep" / "results.csv")
    assert plain["score"].tolist() == pytest.approx(runs["score"].tolist())

    calls = flotilla.calls("py-sweep", root="roots")
    assert len(calls) == 12
    assert calls["cache"].value_counts().to_dict() == {"hit": 9, "miss": 3}
    assert set(calls["provider"] + "/" + calls["model"]) == {"sim/echo"}
    assert str(calls["streamed"].dtype) == "boolean"
    assert not calls["streamed"].any()
    assert str(calls["input_tokens"].dtype) == "Int64"
    assert calls.groupby("run_id")["cost_usd"].sum().sort_index().tolist() == pytest.approx(
        runs.set_index("run_id")["cost_usd"].sort_index().tolist()
    )

    report = flotilla.report("py-sweep", root="roots")
    assert report["total_runs"] == 12
    assert {m["name"] for m in report["metrics"]} >= {"score", "won"}

    listed = flotilla.experiments(root="roots")
    assert [e["name"] for e in listed] == ["py-sweep"]
    assert listed[0]["state"] == "completed"
    assert listed[0]["counts"]["succeeded"] == 12


def test_polars_backend_has_the_same_rows_and_types(workspace: Path) -> None:
    pl = pytest.importorskip("polars")
    flotilla.run(sweep("py-polars", runs=1), root="roots", workers=1)
    frame = flotilla.load("py-polars", root="roots", backend="polars")
    assert isinstance(frame, pl.DataFrame)
    assert frame.height == 4
    assert frame.schema["won"] == pl.Boolean
    assert frame.schema["seed"] == pl.Int64
    assert frame.schema["agent.style"] == pl.Categorical
    assert frame["remark"].null_count() == 2
    with pytest.raises(ValueError, match="expected 'pandas' or 'polars'"):
        flotilla.load("py-polars", root="roots", backend="arrow")  # type: ignore[arg-type]


def test_load_reads_an_experiment_while_it_runs(workspace: Path) -> None:
    experiment = sweep("py-live", runs=3)
    (workspace / "live.yaml").write_text(json.dumps(experiment))
    running = subprocess.Popen(
        [flotilla.binary(), "run", "live.yaml", "--root", "roots", "--workers", "1", "--slots", "1", "--no-progress"],
        env={**os.environ, "SCENARIO_SLEEP": "0.4"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        seen: list[pd.DataFrame] = []

        def part_done() -> bool:
            try:
                frame = flotilla.load("py-live", root="roots")
            except flotilla.FlotillaError:
                return False  # not submitted yet
            seen.append(frame)
            done = (frame["status"] == "succeeded").sum()
            return 0 < done < len(frame)

        wait_until("some runs finished and some not", part_done)
        frame = seen[-1]
        assert len(frame) == 12
        unfinished = frame[frame["status"] != "succeeded"]
        assert unfinished["score"].isna().all()
        assert set(unfinished["status"]) <= {"pending", "running"}
        assert running.wait(timeout=120) == 0
    finally:
        running.kill()
        running.wait()
    assert (flotilla.load("py-live", root="roots")["status"] == "succeeded").all()


def test_errors_say_what_was_wrong(workspace: Path) -> None:
    with pytest.raises(flotilla.FlotillaError, match="no flotilla.db under .*; pass --root") as missing:
        flotilla.load("absent", root=workspace)
    assert missing.value.exit_code == 7

    bad = sweep("py-bad")
    bad["runs_per_variation"] = "many"
    with pytest.raises(flotilla.FlotillaError, match=r"\.yaml:\d+:\d+: runs_per_variation: expected a whole number"):
        flotilla.run(bad, root="roots")
    # The file written for the run is gone again.
    assert not list(workspace.glob(".flotilla-*.yaml"))

    with pytest.raises(ValueError, match="not both"):
        flotilla.load("x", root="roots", coordinator="127.0.0.1:1")
    with pytest.raises(FileNotFoundError, match="no experiment file"):
        flotilla.run("missing.yaml")


def test_a_failed_experiment_raises_with_its_last_lines(workspace: Path) -> None:
    failing = sweep("py-fail", runs=1)
    failing["run"]["command"] = [sys.executable, "-c", "import sys; sys.exit(3)"]
    failing["continue_on_error"] = False
    with pytest.raises(flotilla.FlotillaError) as failed:
        flotilla.run(failing, root="roots", workers=1)
    assert failed.value.exit_code == 3
    assert "flotilla.load('py-fail')" in str(failed.value)
    frame = flotilla.load("py-fail", root="roots")
    assert (frame["status"] == "failed").any()
