"""Finding and running the `flotilla` binary this package installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]

EXE = "flotilla.exe" if os.name == "nt" else "flotilla"


class FlotillaError(RuntimeError):
    """A `flotilla` command failed; the message is what it said on stderr."""

    def __init__(self, message: str, *, exit_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def binary() -> str:
    """The path of the `flotilla` binary.

    `$FLOTILLA_BIN` if set; else the one installed beside this module (the
    scripts directory of its environment, then the user scheme's); else the
    first on `$PATH`.
    """
    chosen = os.environ.get("FLOTILLA_BIN")
    if chosen:
        if not Path(chosen).is_file():
            raise FlotillaError(f"$FLOTILLA_BIN names {chosen}, which is not a file")
        return chosen
    # `pip install --user` puts scripts under the user scheme.
    schemes = [sysconfig.get_default_scheme(), f"{os.name}_user"]
    for scheme in (s for s in schemes if s in sysconfig.get_scheme_names()):
        candidate = Path(sysconfig.get_path("scripts", scheme)) / EXE
        if candidate.is_file():
            return str(candidate)
    # The interpreter's own directory: a venv used without activating it.
    beside = Path(sys.executable).parent / EXE
    if beside.is_file():
        return str(beside)
    found = shutil.which(EXE)
    if found:
        return found
    raise FlotillaError(
        "the flotilla binary is not installed beside this module nor on $PATH; "
        "reinstall with `pip install flotilla`, or set $FLOTILLA_BIN to its path"
    )


def call(arguments: Sequence[str]) -> bytes:
    """Runs `flotilla ARGUMENTS...` and returns its stdout; raises
    `FlotillaError` with its stderr when it fails."""
    completed = subprocess.run(
        [binary(), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    if completed.returncode != 0:
        said = completed.stderr.decode(errors="replace").strip()
        raise FlotillaError(
            said or f"`flotilla {' '.join(arguments)}` exited with {completed.returncode}",
            exit_code=completed.returncode,
        )
    return completed.stdout


def where(
    root: Optional[PathLike],
    coordinator: Optional[str],
    token_file: Optional[PathLike],
) -> list[str]:
    """The arguments that say where an experiment is: a coordinator (given,
    or `$FLOTILLA_COORDINATOR`) or else a root on this machine (given, or
    `$FLOTILLA_ROOT`, or `./experiments`)."""
    if root is not None and coordinator is not None:
        raise ValueError("give root= (a root on this machine) or coordinator= (HOST:PORT), not both")
    arguments: list[str] = []
    coordinator = coordinator if root is not None or coordinator is not None else os.environ.get("FLOTILLA_COORDINATOR")
    if coordinator:
        arguments += ["--coordinator", coordinator]
    elif root is not None:
        arguments += ["--root", os.fspath(root)]
    if token_file is not None:
        arguments += ["--token-file", os.fspath(token_file)]
    return arguments
