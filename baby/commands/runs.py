"""``python -m baby runs``: one line per run of a root folder, read from its files (nothing loaded
into a model), with its finetuned run and learning-curve checkpoints beneath it. A damaged file
makes its run's line say so; it never stops the listing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baby.jsonio import FileFault
from baby.progress import Log, say
from baby.runs import FINETUNED, RunStore, state_of


def _read(store: RunStore, kind: str, guid: str, suffix: str = "") -> dict[str, Any] | None:
    path = store.path(kind, guid, suffix)
    if not path.exists():
        return None
    try:
        return store.read(kind, guid, suffix)
    except FileFault:
        return None


def _results(store: RunStore, guid: str) -> dict[str, float]:
    """``{key: accuracy or perplexity}`` of the run's eval file (BLiMP, Zorro, perplexity ...)."""
    saved = _read(store, "eval", guid) or {}
    out = {}
    for key, r in (saved.get("results") or {}).items():
        if isinstance(r, dict):
            value = r.get("accuracy", r.get("perplexity"))
            if isinstance(value, (int, float)):
                out[key] = value
    return out


def _diverged(runtime: dict[str, Any], steps: Any) -> bool:
    """The run stopped on a divergence (recorded in its config) and was not resumed past it since."""
    mark = runtime.get("diverged")
    return isinstance(mark, dict) and isinstance(mark.get("step"), int) and isinstance(steps, int) and steps <= mark["step"]


def run_row(store: RunStore, guid: str, suffix: str = "") -> dict[str, Any]:
    record = _read(store, "config", guid, suffix)
    if record is None or not isinstance(record.get("settings"), dict):
        return {"guid": guid + suffix, "state": f"damaged ({store.path('config', guid, suffix).name} unreadable)"}
    settings, runtime = record["settings"], record.get("runtime") or {}
    report = _read(store, "report", guid, suffix) or {}
    if suffix:
        state = {"state": "finished" if store.path("model", guid, suffix).exists() else "not finished"}
    else:
        state = state_of(store, guid)
        if state["state"].startswith("interrupted") and _diverged(runtime, state.get("steps")):
            state["state"] = "diverged, resumable with a lower r_learn"
    total = report.get("total_steps") or settings.get("n_steps") or None
    steps = report.get("steps", state.get("steps"))
    return {"guid": guid + suffix, "created": runtime.get("created"), "tokenizer": settings.get("c_tokenizer"),
            "model": f"{settings.get('c_attention')} + {settings.get('c_network') or '-'}",
            "n_params": runtime.get("n_params"), "steps": steps, "total_steps": total, "state": state["state"],
            "best_val_loss": report.get("best_val_loss"), "imported_from": runtime.get("imported_from"),
            "results": _results(store, guid) if not suffix else {},
            "checkpoints": sorted(p.stem.split("_chck_")[1] for p in store.files(guid) if "_chck_" in p.name)
            if not suffix else [],
            "rollback_points": store.rollback_points(guid) if not suffix else []}


def runs(root: str | Path = ".") -> list[dict[str, Any]]:
    store = RunStore(root)
    rows = []
    for guid in store.guids():
        row = run_row(store, guid)
        if store.exists(guid, FINETUNED):
            row["finetuned"] = run_row(store, guid, FINETUNED)
        rows.append(row)
    return sorted(rows, key=lambda r: (r.get("created") or "", r["guid"]))


def _line(row: dict[str, Any], indent: str = "") -> str:
    if "created" not in row:
        return f"{indent}{row['guid']}  {row['state']}"
    steps = f"{row['steps'] if row['steps'] is not None else '?'}/{row['total_steps'] or '?'}"
    params = f"{row['n_params']:,}" if isinstance(row["n_params"], int) else "?"
    best = f"val {row['best_val_loss']:.4f}" if isinstance(row["best_val_loss"], (int, float)) else "val -"
    results = "".join(f"  {k} {v:.4g}" for k, v in row["results"].items())
    origin = "  imported" if row.get("imported_from") else ""
    return (f"{indent}{row['guid']}  {row['created'] or '?':19}  {row['tokenizer']:<4}  {row['model']:<16}  "
            f"{params:>11}  steps {steps:<11}  {row['state']:<24}  {best}{results}{origin}")


def format_runs(rows: list[dict[str, Any]], root: str | Path) -> str:
    if not rows:
        return f"no runs under {Path(root).resolve()}"
    lines = []
    for row in rows:
        lines.append(_line(row))
        if row.get("finetuned"):
            lines.append(_line(row["finetuned"], "  finetuned "))
        if row.get("checkpoints"):
            lines.append(f"  checkpoints {', '.join(row['checkpoints'])}")
        if row.get("rollback_points"):
            lines.append(f"  rollback points (train --resume G --from-step S): steps "
                         f"{', '.join(map(str, row['rollback_points']))} and the latest checkpoint")
    return "\n".join(lines)


def runs_plan(root: str | Path = ".", as_json: bool = False, log: Log = say) -> list[dict[str, Any]]:
    """One line per run under ``root`` (finetuned runs and checkpoints beneath), or JSON."""
    rows = runs(root)
    log(json.dumps(rows, indent=1) if as_json else format_runs(rows, root))
    return rows
