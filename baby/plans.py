"""The table of plans: every command by name, shared by the CLI (``python -m baby VERB``) and the
notebook (``plans.train(...)``, ``run_plan("inference", guid=g, prompt="A")``).

Each command lives in ``baby/commands/<verb>.py``; what several commands need about a run (its
files, where it stands, its resume command) lives with the run store in ``baby/runs.py``. Every
command validates what it was given before it writes anything, and writes every file atomically, so
a bad request never damages an existing run.
"""
from __future__ import annotations

from typing import Any, Callable

from baby.commands import delete as _delete
from baby.commands import eval as _eval
from baby.commands import export as _export
from baby.commands import finetune as _finetune
from baby.commands import import_ as _import
from baby.commands import inference as _inference
from baby.commands import info as _info
from baby.commands import inspect as _inspect
from baby.commands import plot as _plot
from baby.commands import runs as _runs
from baby.commands import train as _train
from baby.config import ConfigError
from baby.guard import guarded

# Each plan runs guarded (baby/guard.py): NumPy's floating-point warnings gathered into one notice or
# into the divergence line, running out of memory said in one line.
train, resume = guarded(_train.train), guarded(_train.resume)
finetune = guarded(_finetune.finetune)
inference = guarded(_inference.inference)
evaluate = guarded(_eval.evaluate)
delete = guarded(_delete.delete)
info = guarded(_info.info)
export = guarded(_export.export)
import_hf = guarded(_import.import_run)
runs_plan = guarded(_runs.runs_plan)
inspect = guarded(_inspect.inspect)
plot_runs = guarded(_plot.plot)

__all__ = ["PLANS", "delete", "evaluate", "export", "finetune", "import_hf", "inference", "info", "inspect",
           "plot_runs", "resume", "run_plan", "runs_plan", "train"]


PLANS: dict[str, Callable[..., Any]] = {
    "train": train, "resume": resume, "finetune": finetune, "inference": inference,
    "eval": evaluate, "delete": delete, "info": info, "export": export, "import": import_hf,
    "runs": runs_plan, "inspect": inspect, "plot": plot_runs,
}


def run_plan(plan: str, **arguments: Any) -> Any:
    """Run one plan by name with its keyword arguments: ``run_plan("inference", guid=g, prompt="A")``."""
    if plan not in PLANS:
        raise ConfigError(f"plan={plan!r}: allowed {', '.join(PLANS)}")
    return PLANS[plan](**arguments)
