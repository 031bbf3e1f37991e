"""The run store: where a GUID's files live, atomic JSON writes, and lossless, fast tensor files.

Layout under a root directory (default: the current directory)::

    configs/config_<guid>[_finetuned].json        settings + runtime facts
    tokenizers/tokenizer_<guid>[_finetuned].json  vocabulary
    models/model_<guid>[_finetuned|_chck_<n>].json weights (base64 of raw little-endian bytes)
    models/checkpoint_<guid>.json                 resumable state while a run trains
    outputs/report_<guid>[_finetuned].json        training analysis
    outputs/completion_<guid>[_finetuned|_<yyyymmddhhmmss>].json

A GUID is validated before any path is built from it; nothing here unpickles anything.
"""
from __future__ import annotations

import base64
import json
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy

GUID = re.compile(r"^[0-9a-f]{32}$")
FOLDERS = {"config": "configs", "tokenizer": "tokenizers", "model": "models", "checkpoint": "models",
           "report": "outputs", "completion": "outputs", "eval": "outputs"}
SUFFIX = re.compile(r"^(|_finetuned|_\d{14}|_chck_[0-9A-Za-z.]+|_finetuned_\d{14})$")


class RunError(ValueError):
    """A GUID, run file or path that cannot be used; the message says which and why."""


def new_guid() -> str:
    return uuid.uuid4().hex


def check_guid(guid: str) -> str:
    if not isinstance(guid, str) or not GUID.match(guid):
        raise RunError(f"GUID {guid!r} is not valid: expected 32 lowercase hex characters")
    return guid


class RunStore:
    def __init__(self, root: str | Path = ".") -> None:
        self.root = Path(root)

    def path(self, kind: str, guid: str, suffix: str = "") -> Path:
        check_guid(guid)
        if kind not in FOLDERS:
            raise RunError(f"unknown run file kind {kind!r}")
        if not SUFFIX.match(suffix):
            raise RunError(f"bad run file suffix {suffix!r}")
        return self.root / FOLDERS[kind] / f"{kind}_{guid}{suffix}.json"

    def files(self, guid: str) -> list[Path]:
        """Every file of this GUID (finetuned, timestamped and checkpoint ones too), nothing else."""
        check_guid(guid)
        found = []
        for kind, folder in FOLDERS.items():
            directory = self.root / folder
            if not directory.is_dir():
                continue
            prefix = f"{kind}_{guid}"
            for p in directory.glob(f"{prefix}*.json"):
                rest = p.name[len(prefix):-len(".json")]
                if SUFFIX.match(rest):
                    found.append(p)
        return sorted(set(found))

    def exists(self, guid: str, suffix: str = "") -> bool:
        return self.path("config", guid, suffix).exists()

    def read(self, kind: str, guid: str, suffix: str = "") -> dict[str, Any]:
        return read_json(self.path(kind, guid, suffix))

    def write(self, kind: str, guid: str, data: dict[str, Any], suffix: str = "") -> Path:
        path = self.path(kind, guid, suffix)
        write_json(path, data)
        return path

    def guids(self) -> list[str]:
        directory = self.root / "configs"
        if not directory.is_dir():
            return []
        out = {p.stem.split("_")[1] for p in directory.glob("config_*.json")}
        return sorted(g for g in out if GUID.match(g))


def write_json(path: Path, data: Any, indent: int | None = 1) -> None:
    """Write JSON atomically: a temp file in the same folder, flushed, then renamed over the target,
    so a crash or a bad value never leaves a half-written or emptied file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: not a valid JSON run file ({err})") from None


# ---- tensors as JSON: dtype, shape and base64 of the raw little-endian bytes ---------------------

def encode_tensor(array: numpy.ndarray) -> dict[str, Any]:
    a = numpy.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_tensor(entry: dict[str, Any], where: str = "tensor") -> numpy.ndarray:
    try:
        dtype = numpy.dtype(entry["dtype"])
        if dtype.kind not in "fiub":
            raise ValueError(f"dtype {dtype} is not numeric")
        raw = base64.b64decode(entry["data"], validate=True)
        return numpy.frombuffer(raw, dtype=dtype).reshape(entry["shape"]).copy()
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"{where}: malformed tensor ({err})") from None
