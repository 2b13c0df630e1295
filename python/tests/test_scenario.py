"""The helpers for scenario programs, outside a run and with a run's
environment made by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import flotilla


def test_helpers_outside_a_run_say_where_they_work(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("FLOTILLA_PARAMS", "FLOTILLA_SEED", "FLOTILLA_OUTPUT_DIR", "FLOTILLA_METRICS"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(flotilla.NotInARun, match=r"\$FLOTILLA_SEED, which is not set"):
        flotilla.seed()
    with pytest.raises(flotilla.NotInARun, match=r"run_params\(\) reads \$FLOTILLA_PARAMS"):
        flotilla.run_params()
    with pytest.raises(flotilla.NotInARun):
        flotilla.log_metrics(score=1)


def test_run_params_nest_dotted_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"actors.buyer.model": "sim/echo", "actors.seller.model": "sim/grim", "rounds": 4}))
    monkeypatch.setenv("FLOTILLA_PARAMS", str(params))
    assert flotilla.run_params() == {
        "actors": {"buyer": {"model": "sim/echo"}, "seller": {"model": "sim/grim"}},
        "rounds": 4,
    }
    with pytest.raises(ValueError, match="'a' has a value and also nested names"):
        flotilla.nest({"a": 1, "a.b": 2})


def test_log_metrics_adds_to_the_file_and_replaces_it_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = tmp_path / "out" / "metrics.json"
    monkeypatch.setenv("FLOTILLA_METRICS", str(metrics))
    assert flotilla.log_metrics(score=1.5) == {"score": 1.5}
    assert flotilla.log_metrics({"agreed": True}, score=2) == {"score": 2, "agreed": True}
    assert json.loads(metrics.read_text()) == {"score": 2, "agreed": True}
    # Nothing but the metrics file is left in its directory.
    assert [p.name for p in metrics.parent.iterdir()] == ["metrics.json"]
    with pytest.raises(ValueError, match="not a finite number"):
        flotilla.log_metrics(score=float("nan"))
    with pytest.raises(TypeError, match="cannot be written as JSON"):
        flotilla.log_metrics(score=object())
    with pytest.raises(ValueError, match="no metrics"):
        flotilla.log_metrics()
    # A failed call leaves what was recorded.
    assert json.loads(metrics.read_text()) == {"score": 2, "agreed": True}

    numpy = pytest.importorskip("numpy")
    flotilla.log_metrics(count=numpy.int64(3), mean=numpy.float64(0.25), flag=numpy.bool_(True))
    assert json.loads(metrics.read_text())["count"] == 3
    assert json.loads(metrics.read_text())["flag"] is True


def test_seed_and_output_dir_read_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_SEED", "12345678901234")
    monkeypatch.setenv("FLOTILLA_OUTPUT_DIR", str(tmp_path / "artifacts"))
    assert flotilla.seed() == 12345678901234
    assert flotilla.output_dir() == tmp_path / "artifacts"
    assert (tmp_path / "artifacts").is_dir()
