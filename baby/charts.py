"""Charts of training runs (matplotlib, optional: ``pip install matplotlib`` or the ``charts`` extra).

Every run writes ``outputs/chart_<guid>[_finetuned].png`` at its end: loss (train and validation),
learning rate and tokens/s against tokens seen, and the training health (gradient norm and
update-to-weight ratio per parameter group, residual RMS per block). ``python -m baby plot`` overlays
several runs. Figures are drawn without pyplot (no global backend is chosen, nothing to close), and
without matplotlib every function here says so in one line instead of failing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from baby.jsonio import FILE_MODE, temp_path_for
from baby.runs import RunError, RunStore

Log = Callable[[str], None]
NO_MATPLOTLIB = "matplotlib is not installed: no chart (pip install matplotlib)"


def figure_class() -> Any:
    """matplotlib's Figure, or None when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return Figure


def subplots(fig_cls: Any, rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    fig = fig_cls(figsize=size)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a PNG atomically (a temp file beside it, then os.replace): nobody sees half a picture,
    and a killed writer leaves a temp file that ``RunStore.orphans`` finds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_path_for(path)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=80, bbox_inches="tight")
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


# ---- panels --------------------------------------------------------------------------------------

def tokens_seen(report: dict[str, Any], steps: list[int]) -> list[float]:
    return [s * report.get("tokens_per_step", 1) for s in steps]


def draw_training(axes: Any, report: dict[str, Any], label: str = "", color: Any = None) -> None:
    """Three panels: loss, learning rate and tokens/s against tokens seen."""
    c = report["curves"]
    x = tokens_seen(report, c["step"])
    val = [(t, v) for t, v in zip(x, c["val_loss"]) if v is not None]
    prefix = f"{label} " if label else ""
    line = axes[0].plot(x, c["train_loss"], "--" if label else "-", color=color, label=f"{prefix}train")[0]
    if val:
        axes[0].plot([t for t, _ in val], [v for _, v in val], "o-", color=line.get_color(), label=f"{prefix}validation")
    axes[1].plot(x, c["lr"], color=line.get_color(), label=label or None)
    axes[2].plot(x, c["tokens_per_second"], color=line.get_color(), label=label or None)
    for ax, title, unit in zip(axes, ("loss", "learning rate", "speed"), ("loss (nats/token)", "learning rate", "tokens/s")):
        ax.set_xlabel("tokens seen")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)


def draw_health(axes: Any, report: dict[str, Any]) -> None:
    """Three panels: gradient norm and update-to-weight ratio per group, residual RMS per block."""
    health = report["curves"].get("health") or []
    if not health:
        for ax in axes:
            ax.set_axis_off()
        axes[1].text(0.5, 0.5, "no health figures in this report", ha="center", transform=axes[1].transAxes)
        return
    x = tokens_seen(report, [h["step"] for h in health])
    for key, ax in (("grad_norm", axes[0]), ("update_ratio", axes[1])):
        for group in health[-1][key]:
            ax.plot(x, [h[key].get(group) for h in health], label=group)
        ax.set_yscale("log")
        ax.set_xlabel("tokens seen")
    axes[0].set_ylabel("gradient norm (before clipping)")
    axes[0].set_title(f"gradient norm per group; clipped steps: {health[-1].get('clipped_steps', 0)}", fontsize=10)
    axes[1].axhline(1e-3, color="grey", linestyle=":", linewidth=1)
    axes[1].set_ylabel("lr x |update| / |weight|")
    axes[1].set_title("update-to-weight ratio (dotted: 1e-3)", fontsize=10)
    axes[1].legend(fontsize=6, ncol=2)
    blocks = len(health[-1]["residual_rms"])
    for i in range(blocks):
        axes[2].plot(x, [h["residual_rms"][i] for h in health], label=f"after block {i}")
    axes[2].set_xlabel("tokens seen")
    axes[2].set_ylabel("RMS of the residual stream")
    axes[2].set_title("residual stream" if blocks else "residual stream (no blocks)", fontsize=10)
    if blocks:  # a model of no blocks (n_layers=0) has no residual curve to label
        axes[2].legend(fontsize=7)


def run_figure(fig_cls: Any, report: dict[str, Any], title: str = "") -> Any:
    fig, axes = subplots(fig_cls, 2, 3, (12, 6.4))
    draw_training(axes[0], report)
    draw_health(axes[1], report)
    fig.suptitle(title or f"run {report.get('guid', '')}", fontsize=11)
    fig.tight_layout()
    return fig


def health_figure(fig_cls: Any, report: dict[str, Any]) -> Any:
    fig, axes = subplots(fig_cls, 1, 3, (14, 3.8))
    draw_health(axes[0], report)
    fig.tight_layout()
    return fig


def overlay_figure(fig_cls: Any, reports: list[dict[str, Any]], labels: list[str]) -> Any:
    fig, axes = subplots(fig_cls, 1, 3, (14, 4))
    for report, label in zip(reports, labels):
        draw_training(axes[0], report, label)
    for ax in axes[0][1:]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---- files ---------------------------------------------------------------------------------------

def save_run_chart(store: RunStore, guid: str, suffix: str, report: dict[str, Any], log: Log) -> Path | None:
    """outputs/chart_<guid><suffix>.png at the end of training; a notice, never an error, otherwise:
    the run itself is already saved and a picture must not fail it."""
    fig_cls = figure_class()
    if fig_cls is None:
        log(f"notice: {NO_MATPLOTLIB}")
        return None
    try:
        path = save_figure(run_figure(fig_cls, report, f"run {guid}{suffix}"), store.path("chart", guid, suffix))
    except (OSError, ValueError, RuntimeError) as err:
        log(f"notice: the chart was not written ({err})")
        return None
    log(f"chart: {path}")
    return path


def read_report(store: RunStore, guid: str, suffix: str = "") -> dict[str, Any]:
    path = store.path("report", guid, suffix)
    if not path.exists():
        raise RunError(f"run {guid}{suffix} has no report under {store.root.resolve()} (not trained to the end?)")
    return store.read("report", guid, suffix)
