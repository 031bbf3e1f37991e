"""plot: the training curves of several runs overlaid in one PNG (a variant comparison)."""
from __future__ import annotations

from pathlib import Path

from baby import charts
from baby.config import ConfigError
from baby.progress import Log
from baby.runs import FINETUNED, RunStore


def plot(guids: list[str], out: str | Path, root: str | Path = ".", finetuned: bool = False,
         log: Log = print) -> Path:
    """Overlay the training curves of several runs in one PNG (a variant comparison)."""
    fig_cls = charts.figure_class()
    if fig_cls is None:
        raise ConfigError(f"plot: {charts.NO_MATPLOTLIB}")
    if not guids:
        raise ConfigError("plot needs at least one --guid")
    store = RunStore(root)
    suffix = FINETUNED if finetuned else ""
    reports = [charts.read_report(store, g, suffix) for g in guids]
    labels = [f"{g[:8]} {store.read('config', g, suffix)['settings'].get('c_attention', '')}" for g in guids]
    path = charts.save_figure(charts.overlay_figure(fig_cls, reports, labels), out)
    log(f"chart: {path}")
    return path
