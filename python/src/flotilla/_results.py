"""An experiment's results as DataFrames, read through `flotilla export`
from a root on this machine or from a coordinator — while it runs, too."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any, Literal, Optional

from ._binary import PathLike, call, where

Backend = Literal["pandas", "polars"]

# Run columns few distinct values fill: categories keep a million rows small.
_CATEGORICAL_RUN_COLUMNS = {"status", "worker"}


def load(
    name: str,
    *,
    root: Optional[PathLike] = None,
    coordinator: Optional[str] = None,
    token_file: Optional[PathLike] = None,
    backend: Backend = "pandas",
) -> Any:
    """Experiment `name`'s runs, one row per run.

    Columns: `run_id`, `variation`, `repetition`, `seed`, `attempt`,
    `status`, `worker`, `duration_s`, `cost_usd`, then one per parameter
    (dotted names kept: `actors.buyer.model`) and one per metric. Integers
    are `Int64`, decimals `float64`, booleans `boolean`, missing values NA;
    status, worker and text parameters are categories.

    Reads the root on this machine (`root=`, else `$FLOTILLA_ROOT`, else
    `./experiments`) or asks a coordinator (`coordinator="HOST:PORT"` or
    `$FLOTILLA_COORDINATOR`, with `token_file=`). Runs not finished yet are
    there with their status and no metrics. `backend="polars"` returns a
    polars DataFrame instead.
    """
    return _table(name, "runs", root, coordinator, token_file, backend)


def calls(
    name: str,
    *,
    root: Optional[PathLike] = None,
    coordinator: Optional[str] = None,
    token_file: Optional[PathLike] = None,
    backend: Backend = "pandas",
) -> Any:
    """Experiment `name`'s LLM calls, one row per call of every attempt:
    `run_id`, `variation`, `repetition`, `attempt`, `call`, provider, model,
    API, tokens, `cost_usd`, latency, retries, status and error, how the
    response cache served it and its tier. Arguments as for `load`."""
    return _table(name, "calls", root, coordinator, token_file, backend)


def report(
    name: str,
    *,
    root: Optional[PathLike] = None,
    coordinator: Optional[str] = None,
    token_file: Optional[PathLike] = None,
) -> dict[str, Any]:
    """Experiment `name`'s report as dicts: per-variation statistics with
    their intervals, comparisons, main effects, failure modes and cost (the
    JSON `flotilla report --format json` prints). Writing it also refreshes
    `<root>/<name>/analysis/`."""
    printed = call(["report", name, "--format", "json", *where(root, coordinator, token_file)])
    return json.loads(printed)


def experiments(
    *,
    root: Optional[PathLike] = None,
    coordinator: Optional[str] = None,
    token_file: Optional[PathLike] = None,
) -> list[dict[str, Any]]:
    """The experiments of a root on this machine or of a coordinator: name,
    description, state, `total_runs`, `counts` by status, `cost_usd`,
    `started_at`, `finished_at`, `directory`."""
    arguments = where(root, coordinator, token_file)
    if "--coordinator" not in arguments:
        arguments.append("--from-root")
    return json.loads(call(["ls", "--json", *arguments]))


def _table(
    name: str,
    table: str,
    root: Optional[PathLike],
    coordinator: Optional[str],
    token_file: Optional[PathLike],
    backend: Backend,
) -> Any:
    if backend not in ("pandas", "polars"):
        raise ValueError(f"backend={backend!r}: expected 'pandas' or 'polars'")
    with tempfile.TemporaryDirectory(prefix="flotilla-") as scratch:
        schema_path = Path(scratch) / "columns.json"
        content = call(
            [
                "export",
                name,
                "--table",
                table,
                "--format",
                "csv",
                "--schema",
                str(schema_path),
                *where(root, coordinator, token_file),
            ]
        )
        columns = json.loads(schema_path.read_text())
    if backend == "polars":
        return _polars_frame(content, columns)
    return _pandas_frame(content, columns)


def _is_categorical(column: dict[str, str]) -> bool:
    """Text parameters, status and worker: few distinct values in many rows."""
    return column["part"] == "param" or (column["part"] == "run" and column["name"] in _CATEGORICAL_RUN_COLUMNS)


def _pandas_dtype(column: dict[str, str]) -> str:
    kind = column["kind"]
    if kind == "int":
        return "Int64"
    if kind == "float":
        return "float64"
    if kind == "bool":
        return "boolean"
    if _is_categorical(column):
        return "category"
    return "string"


def _pandas_frame(content: bytes, columns: list[dict[str, str]]) -> Any:
    import pandas as pd

    names = [c["name"] for c in columns]
    dtypes = {c["name"]: _pandas_dtype(c) for c in columns}
    if not content.strip():
        return pd.DataFrame({n: pd.Series(dtype=dtypes[n]) for n in names})
    return pd.read_csv(
        io.BytesIO(content),
        dtype=dtypes,
        # Text stays text: "NA" or "null" are values a program may report.
        keep_default_na=False,
        na_values=[""],
        true_values=["true"],
        false_values=["false"],
    )


def _polars_frame(content: bytes, columns: list[dict[str, str]]) -> Any:
    try:
        import polars as pl
    except ImportError as missing:
        raise ImportError("backend='polars' needs polars: pip install 'flotilla[polars]'") from missing

    def dtype(column: dict[str, str]) -> Any:
        kind = column["kind"]
        if kind == "int":
            return pl.Int64
        if kind == "float":
            return pl.Float64
        if kind == "bool":
            return pl.Boolean
        if _is_categorical(column):
            return pl.Categorical
        return pl.String

    schema = {c["name"]: dtype(c) for c in columns}
    if not content.strip():
        return pl.DataFrame(schema=schema)
    return pl.read_csv(io.BytesIO(content), schema=schema)


__all__ = ["load", "calls", "report", "experiments"]
