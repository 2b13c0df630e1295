"""Running sweeps from Python: `flotilla.run` on this machine and
`flotilla.submit` to a coordinator, each returning the runs' DataFrame."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

from ._binary import FlotillaError, PathLike, binary, call
from ._results import Backend, load

Experiment = Union[PathLike, Mapping[str, Any]]

# `flotilla run`'s exit codes (the README's "Exit codes").
_BUDGET_EXHAUSTED = 8


def run(
    experiment: Experiment,
    *,
    root: Optional[PathLike] = None,
    workers: Optional[int] = None,
    slots: Optional[int] = None,
    providers: Optional[PathLike] = None,
    retry_failed: bool = False,
    directory: Optional[PathLike] = None,
    backend: Backend = "pandas",
) -> Any:
    """Runs an experiment on this machine (`flotilla run`) and returns its
    runs as `load` does.

    `experiment` is the path of an experiment file, its YAML text, or a dict
    of the same fields. A dict or text is written to a file in `directory`
    (default: the current one) for the run, so that relative paths in it
    (`run.workdir`, cases files) mean what they would in a file there.
    Running the same experiment again runs only what has not finished.

    Progress goes to stderr. An experiment that used up its budget returns
    its partial results with a warning; one that failed or was cancelled
    raises `FlotillaError` (its results are still in the root)."""
    with _experiment_file(experiment, directory) as (path, name):
        arguments = ["run", str(path)]
        if root is not None:
            arguments += ["--root", os.fspath(root)]
        if workers is not None:
            arguments += ["--workers", str(workers)]
        if slots is not None:
            arguments += ["--slots", str(slots)]
        if providers is not None:
            arguments += ["--providers", os.fspath(providers)]
        if retry_failed:
            arguments.append("--retry-failed")
        if not _stderr_is_terminal():
            arguments.append("--no-progress")
        _follow(arguments, name)
    # Where `flotilla run` kept it: the same default root as the binary's.
    used_root = root if root is not None else os.environ.get("FLOTILLA_ROOT", "experiments")
    return load(name, root=used_root, backend=backend)


def submit(
    experiment: Experiment,
    *,
    coordinator: Optional[str] = None,
    token_file: Optional[PathLike] = None,
    wait: bool = True,
    retry_failed: bool = False,
    directory: Optional[PathLike] = None,
    backend: Backend = "pandas",
) -> Any:
    """Submits an experiment to a coordinator (`flotilla submit`;
    `coordinator="HOST:PORT"`, else `$FLOTILLA_COORDINATOR`, else
    127.0.0.1:7700) and returns its runs as `load` does: once it ended with
    `wait=True`, as they stand now without."""
    with _experiment_file(experiment, directory) as (path, name):
        arguments = ["submit", str(path)]
        if coordinator is not None:
            arguments += ["--coordinator", coordinator]
        if token_file is not None:
            arguments += ["--token-file", os.fspath(token_file)]
        if retry_failed:
            arguments.append("--retry-failed")
        if wait:
            arguments += ["--wait", "--no-progress"]
        _follow(arguments, name)
    address = coordinator or os.environ.get("FLOTILLA_COORDINATOR") or "127.0.0.1:7700"
    return load(name, coordinator=address, token_file=token_file, backend=backend)


@contextmanager
def _experiment_file(experiment: Experiment, directory: Optional[PathLike]) -> Iterator[tuple[Path, str]]:
    """The experiment as a file, and its name (from `flotilla validate`, so
    that a bad file is reported with its line and field)."""
    if isinstance(experiment, Mapping) or (isinstance(experiment, str) and "\n" in experiment):
        text = to_yaml(experiment) if isinstance(experiment, Mapping) else experiment
        folder = Path(directory) if directory is not None else Path.cwd()
        descriptor, written = tempfile.mkstemp(dir=folder, prefix=".flotilla-", suffix=".yaml")
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        path = Path(written)
        try:
            yield path, _name_of(path)
        finally:
            path.unlink(missing_ok=True)
        return
    path = Path(os.fspath(experiment))
    if not path.is_file():
        raise FileNotFoundError(f"no experiment file {path}; pass a path, YAML text or a dict")
    yield path, _name_of(path)


def to_yaml(experiment: Mapping[str, Any]) -> str:
    """An experiment dict as block YAML, one field per line, so that an
    error in it is reported with its field and line (scalars are written
    as JSON, which YAML reads as they are)."""

    def scalar(value: Any) -> str:
        if isinstance(value, Path):
            value = str(value)
        return json.dumps(value)

    def key(name: Any) -> str:
        # Plain keys bare: errors name the field as it is written.
        name = str(name)
        return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) else json.dumps(name)

    def block(value: Any, indent: int) -> list[str]:
        pad = " " * indent
        if isinstance(value, Mapping) and value:
            lines = []
            for name, item in value.items():
                if isinstance(item, (Mapping, list, tuple)) and item and not _all_scalars(item):
                    lines.append(f"{pad}{key(name)}:")
                    lines.extend(block(item, indent + 2))
                else:
                    lines.append(f"{pad}{key(name)}: {inline(item)}")
            return lines
        if isinstance(value, (list, tuple)) and value:
            lines = []
            for item in value:
                nested = block(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines.extend(nested[1:])
            return lines
        return [pad + inline(value)]

    def inline(value: Any) -> str:
        if isinstance(value, Mapping):
            return "{" + ", ".join(f"{key(k)}: {inline(v)}" for k, v in value.items()) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(inline(v) for v in value) + "]"
        return scalar(value)

    return "\n".join(block(experiment, 0)) + "\n"


def _all_scalars(value: Any) -> bool:
    items = value.values() if isinstance(value, Mapping) else value
    return all(not isinstance(item, (Mapping, list, tuple)) for item in items) and not isinstance(value, Mapping)


def _name_of(path: Path) -> str:
    return json.loads(call(["validate", str(path), "--json"]))["name"]


def _follow(arguments: list[str], name: str) -> None:
    """Runs a command that follows an experiment, passing its output on to
    this process's stderr (line by line, so notebooks show it), and raises
    with its last lines if it fails."""
    command = [binary(), *arguments]
    if _stderr_is_terminal():
        # The live display needs the terminal itself.
        code = subprocess.run(command, stdin=subprocess.DEVNULL).returncode
        tail: collections.deque[str] = collections.deque()
    else:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        tail = collections.deque(maxlen=30)
        assert process.stdout is not None

        def forward() -> None:
            for line in process.stdout:  # type: ignore[union-attr]
                tail.append(line.rstrip("\n"))
                sys.stderr.write(line)
                sys.stderr.flush()

        reader = threading.Thread(target=forward, daemon=True)
        reader.start()
        code = process.wait()
        reader.join()
    if code == 0:
        return
    if code == _BUDGET_EXHAUSTED:
        warnings.warn(f"experiment {name!r} used up its budget: the results are partial", stacklevel=3)
        return
    said = "\n".join(tail)
    raise FlotillaError(
        f"`flotilla {' '.join(arguments)}` exited with {code}"
        + (f":\n{said}" if said else "")
        + f"\n(what finished is kept: flotilla.load({name!r}) reads it)",
        exit_code=code,
    )


def _stderr_is_terminal() -> bool:
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False


__all__ = ["run", "submit"]
