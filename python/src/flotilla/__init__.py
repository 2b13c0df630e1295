"""Flotilla from Python.

The `flotilla` command (installed with this module) runs experiment sweeps;
this module reads their results as DataFrames, drives sweeps from a
notebook, and helps scenario programs Flotilla runs.

Results::

    runs = flotilla.load("quickstart", root="experiments")   # one row per run
    calls = flotilla.calls("quickstart", root="experiments") # one row per LLM call
    report = flotilla.report("quickstart", root="experiments")
    flotilla.experiments(root="experiments")

Sweeps::

    runs = flotilla.run("experiment.yaml")      # or a dict, on this machine
    runs = flotilla.submit("experiment.yaml", coordinator="host:7700")

In a scenario program::

    params = flotilla.run_params()
    rng = random.Random(flotilla.seed())
    flotilla.log_metrics(score=3.2, agreed=True)
"""

from ._binary import FlotillaError, binary
from ._results import calls, experiments, load, report
from ._scenario import NotInARun, log_metrics, nest, output_dir, run_params, seed
from ._sweep import run, submit

__all__ = [
    "FlotillaError",
    "NotInARun",
    "binary",
    "calls",
    "experiments",
    "load",
    "log_metrics",
    "nest",
    "output_dir",
    "report",
    "run",
    "run_params",
    "seed",
    "submit",
]
