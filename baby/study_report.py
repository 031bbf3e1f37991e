"""The tables and the plot of a study, from its cell records (``study.write_summary`` calls these)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy

METRICS = (("ppl_token", "ppl/token", "{:.1f}"), ("ppl_word", "ppl/word", "{:.0f}"),
           ("blimp", "BLiMP %", "{:.2f}"), ("zorro", "Zorro %", "{:.2f}"))


def by_cell(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in data["cells"]:
        groups.setdefault(record["cell"], []).append(record)
    return groups


def spread(values: list[float], fmt: str, scale: float = 1.0) -> str:
    """mean, and ± half the range when there are several seeds."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return ""
    text = fmt.format(float(numpy.mean(values)))
    return text + (f" ± {fmt.format((max(values) - min(values)) / 2)}" if len(values) > 1 else "")


def markdown(data: dict[str, Any]) -> str:
    groups = by_cell(data)
    labels = data["checkpoints"]
    final_limits = {r["results"]["final"].get("limit", 0) for r in data["cells"] if "final" in r.get("results", {})}
    at_end = ("the end scores every pair" if final_limits <= {0} else
              f"the end scores the first {', '.join(str(n) for n in sorted(final_limits))} pairs too (a sweep)")
    lines = [f"Study `{data['name']}` ({data.get('updated', '')}): {data.get('about', '')}".rstrip(": "), "",
             "Mean over seeds ± half the range between seeds. Checkpoints before the end score BLiMP/Zorro on "
             f"the first pairs of each paradigm (`limit`); {at_end}.", "",
             "| cell | seeds | params | train min | tok/s | induction matches | ppl/token | ppl/word | BLiMP % | Zorro % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, records in groups.items():
        done = [r for r in records if "final" in r.get("results", {})]
        train = [r.get("training") or {} for r in records]
        finals = [r["results"]["final"] for r in done]
        share = [r.get("induction_match_share") for r in records if r.get("induction_match_share") is not None]
        lines.append(
            f"| {name} | {len(done)}/{len(records)} | {records[0]['params']:,} | "
            f"{spread([t.get('train_seconds') for t in train if t.get('train_seconds')], '{:.1f}', 1 / 60)} | "
            f"{spread([t.get('tokens_per_second') for t in train if t.get('tokens_per_second')], '{:,.0f}')} | "
            f"{spread(share, '{:.1f}', 100) + ' %' if share else ''} | "
            + " | ".join(spread([f.get(k) for f in finals], fmt, 100 if k in ('blimp', 'zorro') else 1)
                         for k, _, fmt in METRICS) + " |")
    lines += ["", "Learning curves (words seen):", "",
              "| cell | metric | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for name, records in groups.items():
        for key, title, fmt in METRICS:
            row = [spread([r.get("results", {}).get(lb, {}).get(key) for r in records], fmt,
                          100 if key in ("blimp", "zorro") else 1) for lb in labels]
            if any(row):
                lines.append(f"| {name} | {title} | " + " | ".join(row) + " |")
    phenomena = sorted({ph for r in data["cells"] for ph in r.get("results", {}).get("final", {}).get("blimp_phenomena", {})})
    if phenomena:
        lines += ["", "BLiMP-filtered per phenomenon at the end (%):", "",
                  "| phenomenon | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
        for ph in phenomena:
            cells = [spread([r["results"]["final"]["blimp_phenomena"].get(ph) for r in records
                             if "final" in r.get("results", {})], "{:.1f}", 100) for records in groups.values()]
            lines.append(f"| {ph} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def loss_curve(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(words seen, validation loss) averaged over the seeds, at the steps every seed logged."""
    curves = [r for r in records if r.get("curves")]
    if not curves:
        return []
    per_seed = [{s: v for s, v in zip(r["curves"]["step"], r["curves"]["val_loss"]) if v is not None} for r in curves]
    steps = sorted(set.intersection(*(set(c) for c in per_seed)))
    words_per_step = curves[0]["words_per_step"]
    return [(s * words_per_step, float(numpy.mean([c[s] for c in per_seed]))) for s in steps]


def checkpoint_curve(records: list[dict[str, Any]], labels: list[str], metric: str) -> list[tuple[float, float]]:
    """(words seen, metric in %) averaged over the seeds that reached each checkpoint."""
    points = []
    for label in labels:
        reached = [r for r in records if r.get("results", {}).get(label, {}).get(metric) is not None]
        if reached:
            words = reached[0]["results"][label].get("words") or reached[0].get("training", {}).get("words_seen")
            if words:
                points.append((words, 100 * float(numpy.mean([r["results"][label][metric] for r in reached]))))
    return points


def plot_title(data: dict[str, Any]) -> str:
    """What the curves are: the mean over seeds, and how many pairs the checkpoints and the end score."""
    early = {res.get("limit") for r in data["cells"] for label, res in r.get("results", {}).items()
             if label != "final"} - {None, 0}
    end = {r["results"]["final"].get("limit", 0) for r in data["cells"] if "final" in r.get("results", {})}
    title = f"study {data['name']}: mean over seeds"
    if early:
        title += f"; before the end BLiMP and Zorro score the first {min(early)} pairs of each paradigm"
        title += ", the end every pair" if end <= {0} else f", the end the first {min(end)}"
    return title


def plot(data: dict[str, Any], path: Path) -> bool:
    """Validation loss, BLiMP and Zorro against words seen, one line per cell (mean over its seeds;
    cells of one seed dashed). Returns False (and writes nothing) without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - an optional extra
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    fig, (ax_loss, ax_blimp, ax_zorro) = plt.subplots(1, 3, figsize=(16, 4.8))
    for name, records in by_cell(data).items():
        style = {"linestyle": "--" if len(records) == 1 else "-",
                 "label": name + (" (1 seed)" if len(records) == 1 else f" ({len(records)} seeds)")}
        lines = [(ax_loss, loss_curve(records), "."), (ax_blimp, checkpoint_curve(records, data["checkpoints"], "blimp"), "o"),
                 (ax_zorro, checkpoint_curve(records, data["checkpoints"], "zorro"), "o")]
        colour = None
        for ax, points, marker in lines:
            if points:
                drawn = ax.plot(*zip(*points), marker=marker, color=colour, **style)
                colour = drawn[0].get_color()  # one colour per cell across the panels
    ax_loss.set(xlabel="words seen", ylabel="validation loss (nats/token)", title="validation loss")
    ax_blimp.set(xlabel="words seen", ylabel="accuracy (%)", title="BLiMP-filtered")
    ax_zorro.set(xlabel="words seen", ylabel="accuracy (%)", title="Zorro")
    for ax in (ax_loss, ax_blimp, ax_zorro):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    fig.suptitle(plot_title(data))
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return True
