"""The table of plans: every command by name, shared by the CLI (``python -m baby VERB``) and the
notebook (``plans.train(...)``, ``run_plan("inference", guid=g, prompt="A")``).

Each command lives in ``baby/commands/<verb>.py``; what several commands need about a run (its
files, where it stands, its resume command) lives with the run store in ``baby/runs.py``. Every
command validates what it was given before it writes anything, and writes every file atomically, so
a bad request never damages an existing run.
"""
from __future__ import annotations

from typing import Any, Callable

from baby.commands.delete import delete
from baby.commands.eval import evaluate
from baby.commands.export import export
from baby.commands.finetune import finetune
from baby.commands.import_ import import_run as import_hf
from baby.commands.inference import inference
from baby.commands.info import info
from baby.commands.inspect import inspect
from baby.commands.plot import plot as plot_runs
from baby.commands.runs import runs_plan
from baby.commands.train import resume, train
from baby.config import ConfigError

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
