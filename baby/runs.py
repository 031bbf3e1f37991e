"""The run store: where a GUID's files live, and the checks that keep them whole (atomic JSON writes
and strict reads live in ``jsonio``, the model and checkpoint formats in ``formats``).

Layout under a root directory (default: the current directory)::

    configs/config_<guid>[_finetuned].json        settings + runtime facts
    tokenizers/tokenizer_<guid>[_finetuned].json  vocabulary
    models/model_<guid>[_finetuned|_chck_<n>].json weights (base64 of raw little-endian bytes)
    models/checkpoint_<guid>.json                 resumable state (kept after the end: extendable)
    outputs/report_<guid>[_finetuned].json        training analysis
    outputs/completion_<guid>[_finetuned|_<yyyymmddhhmmss>].json
    outputs/chart_<guid>[_finetuned].png           training charts (when matplotlib is installed)

A GUID (``33bd6583-1b87-4469-b55e-0ccb8fd0441c``, or 32 bare hex digits) is validated before any path is
built from it; nothing here unpickles anything.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import uuid
from pathlib import Path
from typing import Any

from baby import backend, device
from baby.config import Config
from baby.formats import FormatError, load_weights, model_to_dict, model_vocab, read_checkpoint
from baby.jsonio import FileFault, orphan_temps, probe_writable, read_json, write_json
from baby.nn.model import GPT
from baby.tokenizers import Tokenizer, tokenizer_digest, tokenizer_from_dict

# New runs get the standard 8-4-4-4-12 form the original project writes; runs named with 32 bare hex
# digits (this project's earlier form) keep working. Neither holds "_", which separates file suffixes.
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
FOLDERS = {"config": "configs", "tokenizer": "tokenizers", "model": "models", "checkpoint": "models",
           "report": "outputs", "completion": "outputs", "eval": "outputs", "chart": "outputs"}
EXTENSIONS = {"chart": ".png"}  # every other kind is JSON
FINETUNED = "_finetuned"  # the suffix of a finetuned run's files
SUFFIX = re.compile(r"(|_finetuned|_\d{14}|_chck_[0-9A-Za-z.]+|_finetuned_\d{14}|_step_\d+)")
ROLLBACK = re.compile(r"checkpoint_(?P<guid>[0-9a-f-]+)_step_(?P<step>\d+)\.json")


# A GUID, run file or path that cannot be used; the message says which and why. One kind with the
# file faults of jsonio (and formats' FormatError), so callers catch one error for "this file is bad".
RunError = FileFault


def extension(kind: str) -> str:
    return EXTENSIONS.get(kind, ".json")


def new_guid() -> str:
    return str(uuid.uuid4())


def check_guid(guid: str) -> str:
    if not isinstance(guid, str) or not GUID.fullmatch(guid):
        raise RunError(f"GUID {guid!r} is not valid: expected a lowercase UUID like "
                       "33bd6583-1b87-4469-b55e-0ccb8fd0441c (or its 32 hex digits without dashes)")
    return guid


class RunStore:
    def __init__(self, root: str | Path = ".") -> None:
        self.root = Path(root)

    def path(self, kind: str, guid: str, suffix: str = "") -> Path:
        check_guid(guid)
        if kind not in FOLDERS:
            raise RunError(f"unknown run file kind {kind!r}")
        if not SUFFIX.fullmatch(suffix):
            raise RunError(f"bad run file suffix {suffix!r}")
        return self.root / FOLDERS[kind] / f"{kind}_{guid}{suffix}{extension(kind)}"

    def folders(self) -> list[Path]:
        return [self.root / f for f in sorted(set(FOLDERS.values()))]

    def files(self, guid: str) -> list[Path]:
        """Every file of this GUID (finetuned, timestamped and checkpoint ones too), nothing else."""
        check_guid(guid)
        found = []
        for kind, folder in FOLDERS.items():
            directory = self.root / folder
            if not directory.is_dir():
                continue
            prefix, ext = f"{kind}_{guid}", extension(kind)
            for p in directory.glob(f"{prefix}*{ext}"):
                rest = p.name[len(prefix):-len(ext)]
                if SUFFIX.fullmatch(rest):
                    found.append(p)
        return sorted(set(found))

    def orphans(self, guid: str, live_too: bool = False) -> list[Path]:
        """Temp files of this run left by a writer that was killed mid-write (``live_too``: all)."""
        check_guid(guid)
        return sorted({p for kind, folder in FOLDERS.items()
                       for p in orphan_temps(self.root / folder, f"{kind}_{guid}", live_too)})

    def clean_orphans(self, guid: str) -> int:
        removed = 0
        for p in self.orphans(guid):
            try:
                p.unlink()
                removed += 1
            except OSError:
                pass  # left for delete, which reports what it cannot remove
        return removed

    def exists(self, guid: str, suffix: str = "") -> bool:
        return self.path("config", guid, suffix).exists()

    def read(self, kind: str, guid: str, suffix: str = "") -> dict[str, Any]:
        return read_json(self.path(kind, guid, suffix), f"{kind} file")

    def write(self, kind: str, guid: str, data: dict[str, Any], suffix: str = "") -> Path:
        path = self.path(kind, guid, suffix)
        write_json(path, data)
        return path

    def create(self, kind: str, guid: str, data: dict[str, Any], suffix: str = "") -> bool:
        """Write a new file only if none exists under that name (concurrent writers each keep theirs)."""
        return write_json(self.path(kind, guid, suffix), data, exclusive=True)

    def check_writable(self, kinds: tuple[str, ...] = tuple(FOLDERS)) -> None:
        """Fail now, before any work, if a folder that will be written cannot be."""
        for folder in sorted({FOLDERS[k] for k in kinds}):
            probe_writable(self.root / folder)

    def check_removable(self, paths: list[Path]) -> None:
        """Every path can be unlinked: its folder is writable and not on a read-only mount."""
        for folder in sorted({p.parent for p in paths}):
            read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
            if read_only or not os.access(folder, os.W_OK | os.X_OK):
                why = "read-only file system" if read_only else "permission denied"
                raise RunError(f"{folder}: cannot remove files here ({why}); nothing was removed")

    # ---- rollback points: earlier checkpoints, kept as checkpoint_<guid>_step_<N>.json --------------

    def rollback_points(self, guid: str) -> list[int]:
        """Steps of the earlier checkpoints kept beside the latest one, oldest first."""
        folder = self.root / FOLDERS["checkpoint"]
        found = (ROLLBACK.fullmatch(p.name) for p in folder.glob(f"checkpoint_{check_guid(guid)}_step_*.json"))
        return sorted(int(m["step"]) for m in found if m and m["guid"] == guid)

    def keep_rollback_point(self, guid: str, step: int) -> None:
        """Keep the latest checkpoint (of ``step``) as a rollback point before it is replaced: a hard
        link, so it costs no copy (a copy where the file system has no links)."""
        latest, point = self.path("checkpoint", guid), self.path("checkpoint", guid, f"_step_{step}")
        if not latest.exists() or point.exists():
            return
        try:
            os.link(latest, point)
        except OSError:
            write_json(point, read_json(latest, "checkpoint file"))

    def prune_rollback_points(self, guid: str, keep: int, after: int | None = None) -> list[int]:
        """Remove all but the newest ``keep`` rollback points (and, with ``after``, every point past that
        step: a run rolled back leaves the trajectory it abandoned). Returns the steps removed."""
        steps = self.rollback_points(guid)
        drop = [s for s in steps if after is not None and s > after]
        kept = [s for s in steps if s not in drop]
        drop += kept[:max(len(kept) - keep, 0)]
        for step in drop:
            self.path("checkpoint", guid, f"_step_{step}").unlink(missing_ok=True)
        return sorted(drop)

    def guids(self) -> list[str]:
        directory = self.root / "configs"
        if not directory.is_dir():
            return []
        out = {p.stem.split("_")[1] for p in directory.glob("config_*.json")}
        return sorted(g for g in out if GUID.fullmatch(g))


# ---- a run: its files loaded and checked, where it stands, how to go on --------------------------------

def resume_command(guid: str, root: str | Path) -> str:
    where = "" if Path(root) == Path(".") else f" --root {root}"
    return f"python -m baby train --resume {guid}{where}"


class Run:
    """A GUID's saved files, loaded and checked: config, tokenizer and (lazily) the model. Every
    damaged file is refused with one line naming it."""

    def __init__(self, store: RunStore, guid: str, suffix: str = "") -> None:
        self.store, self.guid, self.suffix = store, guid, suffix
        if not store.exists(guid, suffix):
            what = "finetuned run" if suffix == FINETUNED else "run"
            raise RunError(f"no {what} {guid} under {store.root.resolve()} "
                           f"(missing {store.path('config', guid, suffix).name})")
        store.clean_orphans(guid)
        config_path = store.path("config", guid, suffix)
        self.record = store.read("config", guid, suffix)
        settings, runtime = self.record.get("settings"), self.record.get("runtime")
        if not isinstance(settings, dict) or not isinstance(runtime, dict):
            raise RunError(f"{config_path}: not a run config (needs 'settings' and 'runtime' objects)")
        self.cfg = Config(settings, source=str(config_path))
        token_path = store.path("tokenizer", guid, suffix)
        try:
            self.tokenizer = tokenizer_from_dict(store.read("tokenizer", guid, suffix))
        except (ValueError, TypeError, KeyError, IndexError) as err:
            if isinstance(err, (FileFault, RunError)):
                raise
            raise RunError(f"{token_path}: not a usable tokenizer ({err})") from None
        if self.tokenizer.kind != self.cfg.c_tokenizer:
            raise RunError(f"{token_path}: a {self.tokenizer.kind} tokenizer, but the config says "
                           f"c_tokenizer={self.cfg.c_tokenizer!r}")
        digest = runtime.get("tokenizer_sha256")
        if digest and digest != tokenizer_digest(self.tokenizer):
            raise RunError(f"{token_path}: edited since the run was trained (its sha256 differs from "
                           f"{config_path.name}); its ids would decode to wrong text")
        n_vocab = runtime.get("n_vocab")
        if isinstance(n_vocab, int) and n_vocab != self.tokenizer.n_vocab:
            raise RunError(f"{token_path}: {self.tokenizer.n_vocab} ids, but {config_path.name} records "
                           f"n_vocab {n_vocab}")

    def model(self, checkpoint: str = "", cfg: Config | None = None) -> GPT:
        """The saved weights in a model built from ``cfg`` (default: the run's own settings; finetune
        passes its overrides, e.g. c_freeze_base)."""
        cfg = cfg or self.cfg
        device.select(cfg)
        suffix = f"_chck_{checkpoint}" if checkpoint else self.suffix
        path = self.store.path("model", self.guid, suffix)
        if checkpoint and not path.exists():
            found = sorted(p.stem.split("_chck_")[1] for p in self.store.files(self.guid) if "_chck_" in p.name)
            raise RunError(f"run {self.guid} has no learning-curve checkpoint {checkpoint!r} "
                           f"(it has: {', '.join(found) or 'none'})")
        return self.model_from(self.store.read("model", self.guid, suffix), str(path), cfg)

    def model_from(self, data: Any, where: str, cfg: Config | None = None) -> GPT:
        """A model built from ``cfg`` with the weights of a model file's content, all of it checked."""
        n_vocab = model_vocab(data, where)
        if n_vocab != self.tokenizer.n_vocab:
            raise RunError(f"{where}: a model of {n_vocab} ids, but the tokenizer "
                           f"{self.store.path('tokenizer', self.guid, self.suffix).name} has {self.tokenizer.n_vocab}")
        model = GPT(cfg or self.cfg, n_vocab)
        load_weights(model, data, where)
        return model


def state_of(store: RunStore, guid: str, cfg: Config | None = None) -> dict[str, Any]:
    """Where a run stands: finished (extendable), interrupted (resumable) or not resumable."""
    checkpoint, model = store.path("checkpoint", guid), store.path("model", guid)
    step = None
    if checkpoint.exists():
        try:
            _, trainer = read_checkpoint(store.read("checkpoint", guid), str(checkpoint))
            step = trainer["step"]
        except (RunError, FormatError, FileFault) as err:
            return {"state": "checkpoint damaged", "detail": str(err)}
    resume = resume_command(guid, store.root)
    if model.exists():
        out = {"state": "finished", "steps": step}
        if step is not None:
            out["extend"] = f"{resume} --set n_steps=N (N > {step})"
        return out
    if step is not None:
        return {"state": "interrupted, resumable", "steps": step, "resume": resume}
    return {"state": "not resumable; delete it", "detail": "killed before its first checkpoint"}


def write_imported_run(store: RunStore, cfg: Config, tokenizer: Tokenizer, model: GPT, origin: dict[str, Any]) -> str:
    """A new run of a model brought in from elsewhere (a Hugging Face directory, the original's files):
    tokenizer, model, then the config (a run exists once its config does). ``origin``: the runtime
    facts of where it came from. Returns the new GUID."""
    store.check_writable(("config", "tokenizer", "model"))
    guid = new_guid()
    record = {"guid": guid, "settings": cfg.to_dict(), "runtime": {
        **origin, "n_vocab": tokenizer.n_vocab, "tokenizer_sha256": tokenizer_digest(tokenizer),
        "n_params": model.n_params(), "n_bytes": model.n_bytes(), "device": backend.device_name,
        "versions": backend.versions(), "created": _dt.datetime.now().isoformat(timespec="seconds")}}
    store.write("tokenizer", guid, tokenizer.to_dict())
    store.write("model", guid, model_to_dict(model))
    store.write("config", guid, record)
    return guid
