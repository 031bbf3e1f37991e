"""info: what a run, a model file or a config (before training) holds: sizes, FLOPs, memory, status."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baby import describe, device
from baby.config import ConfigError, as_config
from baby.formats import architecture
from baby.nn.model import GPT
from baby.progress import Log, say
from baby.runs import Run, RunError, RunStore, state_of


def check_recorded_architecture(store: RunStore, run: Run) -> None:
    """The model file records the architecture it was built with: a config that says otherwise (an
    edited n_emb, say) is refused here as inference refuses it, not described as if it were true."""
    path = store.path("model", run.guid, run.suffix)
    if not path.exists():
        return
    recorded = store.read("model", run.guid, run.suffix).get("architecture")
    recorded = recorded.get("settings") if isinstance(recorded, dict) else None
    if not isinstance(recorded, dict):
        return  # a model file of an older format: nothing recorded to compare
    ours = architecture(run.cfg)["settings"]
    for key in sorted(set(recorded) & set(ours)):
        if recorded[key] != ours[key]:
            raise RunError(f"{path}: built with {key}={recorded[key]!r}, but "
                           f"{store.path('config', run.guid, run.suffix).name} says {key}={ours[key]!r}")


def run_info(guid: str, root: str | Path = ".") -> dict[str, Any]:
    store = RunStore(root)
    run = Run(store, guid)
    device.select(run.cfg, fallback=True)
    check_recorded_architecture(store, run)
    model = GPT(run.cfg, run.tokenizer.n_vocab)  # sizes and FLOPs need only the shapes
    flops = model.flops_per_token()
    out: dict[str, Any] = {
        "guid": guid, "settings": run.cfg.to_dict(), "runtime": run.record.get("runtime", {}),
        "n_params": model.n_params(), "n_bytes": model.n_bytes(), "n_vocab": run.tokenizer.n_vocab,
        "flops_per_token": {"training": flops["training"], "inference": flops["forward"]},
        "files": {p.name: p.stat().st_size for p in store.files(guid)},
        "status": state_of(store, guid),
    }
    report_path = store.path("report", guid)
    if report_path.exists():
        r = store.read("report", guid)
        out["training"] = {k: r.get(k) for k in ("steps", "epochs", "tokens_trained", "train_seconds",
                                                 "tokens_per_second", "achieved_gflops", "final_train_loss",
                                                 "final_val_loss", "best_val_loss", "unigram_entropy")}
    out["checkpoints"] = sorted(p.stem.split("_chck_")[1] for p in store.files(guid) if "_chck_" in p.name)
    out["rollback_points"] = store.rollback_points(guid)
    diverged = out["runtime"].get("diverged")
    if isinstance(diverged, dict) and out["status"].get("state", "").startswith("interrupted"):
        out["status"]["state"] = f"stopped on a divergence at step {diverged.get('step')}, resumable"
    return out


def format_info(data: dict[str, Any]) -> str:
    status = data.get("status", {})
    lines = [f"run {data['guid']}",
             f"  status            {status.get('state', '?')}"
             + "".join(f"; {k} {v}" for k, v in status.items() if k != "state" and v is not None),
             f"  parameters        {data['n_params']:,} ({data['n_bytes'] / 2**20:.2f} MiB)",
             f"  vocabulary        {data['n_vocab']}",
             f"  FLOPs per token   training {data['flops_per_token']['training']:,.0f}, "
             f"inference {data['flops_per_token']['inference']:,.0f}"]
    for key, value in (data.get("training") or {}).items():
        if value is not None:
            lines.append(f"  {key:<17} {value:,.4f}" if isinstance(value, float) else f"  {key:<17} {value}")
    lines.append("  settings")
    lines += [f"    {k:<20} {v!r}" for k, v in data["settings"].items()]
    lines.append("  files")
    lines += [f"    {name:<60} {size:,} bytes" for name, size in data["files"].items()]
    if data.get("checkpoints"):
        lines.append("  learning-curve checkpoints: " + ", ".join(data["checkpoints"]))
    if data.get("rollback_points"):
        lines.append("  rollback points   steps " + ", ".join(map(str, data["rollback_points"]))
                     + " and the latest checkpoint (train --resume G --from-step S)")
    return "\n".join(lines)


def info(guid: str | None = None, root: str | Path = ".", as_json: bool = False, log: Log = say,
              model: str | None = None, config: str | None = None, overrides: dict[str, Any] | None = None,
              probe: bool = True) -> dict[str, Any]:
    """Describe a run (``guid``), a model file alone (``model``) or a config before training (``config``)."""
    if sum(x is not None for x in (guid, model, config)) != 1:
        raise ConfigError("info needs exactly one of --guid, --model or --config")
    if model is not None:
        data = describe.model_file_info(model)
        text = describe.format_model_info(data)
    elif config is not None:
        data = describe.config_info(as_config(config, overrides), probe=probe)
        text = describe.format_config_info(data, str(config))
    else:
        data = run_info(guid, root=root)
        text = format_info(data)
    log(json.dumps(data, indent=1) if as_json else text)
    return data
