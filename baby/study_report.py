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
    lines = [f"Study `{data['name']}` ({data.get('updated', '')}): {data.get('about', '')}".rstrip(": "), "",
             "Mean over seeds ± half the range between seeds. Checkpoints before the end score BLiMP/Zorro on "
             "the first pairs of each paradigm (`limit`); the end scores every pair.", "",
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


def plot(data: dict[str, Any], path: Path) -> bool:
    """Validation loss and BLiMP against words seen, one line per cell (mean over seeds). Returns
    False (and writes nothing) without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - an optional extra
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    fig, (ax_loss, ax_blimp) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, records in by_cell(data).items():
        curves = [r for r in records if r.get("curves")]
        if curves:
            r = curves[0]
            points = [(s * r["words_per_step"], v) for s, v in zip(r["curves"]["step"], r["curves"]["val_loss"])
                      if v is not None]
            if points:
                ax_loss.plot(*zip(*points), marker=".", label=name)
        marks = []
        for label in data["checkpoints"]:
            values = [rec["results"][label].get("blimp") for rec in records if label in rec.get("results", {})]
            words = [rec["results"][label].get("words") or rec.get("training", {}).get("words_seen")
                     for rec in records if label in rec.get("results", {})]
            values = [v for v in values if v is not None]
            if values and words[0]:
                marks.append((words[0], 100 * float(numpy.mean(values))))
        if marks:
            ax_blimp.plot(*zip(*marks), marker="o", label=name)
    ax_loss.set(xlabel="words seen", ylabel="validation loss (nats/token)", title="validation loss")
    ax_blimp.set(xlabel="words seen", ylabel="BLiMP-filtered accuracy (%)", title="BLiMP")
    for ax in (ax_loss, ax_blimp):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"study {data['name']}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return True
