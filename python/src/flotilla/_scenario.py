"""Helpers for scenario programs Flotilla runs: the run's parameters, seed
and output directory, and its metrics written where the worker reads them.

They read the environment a worker gives every command run (the README's
"The run contract"); outside a run they say so."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional


class NotInARun(RuntimeError):
    """A run helper was called in a process Flotilla did not start."""


def _environment(variable: str, helper: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise NotInARun(
            f"flotilla.{helper}() reads ${variable}, which is not set: it works in a program "
            "that Flotilla runs (run.kind: command), where the worker sets it"
        )
    return value


def run_params() -> dict[str, Any]:
    """The run's parameters, nested by their dotted names:
    `actors.buyer.model: gpt-4o` reads as `{"actors": {"buyer": {"model": "gpt-4o"}}}`."""
    path = Path(_environment("FLOTILLA_PARAMS", "run_params"))
    flat = json.loads(path.read_text())
    return nest(flat)


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Nests dotted names: `{"a.b": 1, "a.c": 2}` becomes `{"a": {"b": 1, "c": 2}}`.

    A name that is both a value and a prefix of others (`a` and `a.b`) cannot
    be nested; that raises `ValueError` naming both."""
    nested: dict[str, Any] = {}
    for name in sorted(flat):
        *parents, leaf = name.split(".")
        level = nested
        for depth, part in enumerate(parents):
            child = level.setdefault(part, {})
            if not isinstance(child, dict) or ".".join(parents[: depth + 1]) in flat:
                raise ValueError(
                    f"parameter {'.'.join(parents[: depth + 1])!r} has a value and also "
                    f"nested names ({name!r}); read the flat names from $FLOTILLA_PARAMS instead"
                )
            level = child
        level[leaf] = flat[name]
    return nested


def seed() -> int:
    """The run's seed: the same for a repetition in every variation, so that
    variations are compared on the same draws."""
    return int(_environment("FLOTILLA_SEED", "seed"))


def output_dir() -> Path:
    """A directory for the run's files (transcripts, plots): what is written
    there is kept as the run's `artifacts/`."""
    path = Path(_environment("FLOTILLA_OUTPUT_DIR", "output_dir"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value: Any) -> Any:
    """Numbers of numpy and the like as Python numbers, for JSON."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"metric value {value} is not a finite number")
        return value
    item = getattr(value, "item", None)
    if callable(item):
        return _plain(item())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"metric value {value!r} of type {type(value).__name__} cannot be written as JSON")


def log_metrics(metrics: Optional[Mapping[str, Any]] = None, /, **more: Any) -> dict[str, Any]:
    """Records the run's metrics: `log_metrics(score=3.2, agreed=True)`.

    Calls add to what earlier calls recorded (a later value of a name
    replaces the earlier one). The file the worker reads ($FLOTILLA_METRICS)
    is replaced atomically, so a run killed mid-write leaves the previous
    metrics, never half a file. Returns every metric recorded so far.
    `cost_usd` is the run's own spending beyond metered LLM calls."""
    path = Path(_environment("FLOTILLA_METRICS", "log_metrics"))
    new = {**(metrics or {}), **more}
    if not new:
        raise ValueError("log_metrics() was given no metrics: log_metrics(score=0.8, agreed=True)")
    recorded: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
            if isinstance(existing, dict):
                recorded = existing
        except ValueError:
            pass
    recorded.update({str(name): _plain(value) for name, value in new.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".metrics-", suffix=".json")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(recorded, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return dict(recorded)
