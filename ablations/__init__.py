"""Experiment specs and their execution on Ray Tune: `python -m ablations.run NAME`, or from Python (a notebook):

    import ablations
    exp = ablations.run_experiment("msm_mtm", seeds=2, epochs=4)   # or ablations.open_experiment("runs/msm_mtm")
    exp.results(), exp.table(), exp.report()

`import ablations` stays light: the notebook API (ablations.notebook) is imported on first use, Ray only when an
experiment runs.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Experiment", "open_experiment", "run_experiment"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
