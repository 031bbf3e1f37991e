"""delete: remove every file of a run, or nothing at all."""
from __future__ import annotations

from pathlib import Path

from baby.progress import Log, say
from baby.runs import RunError, RunStore


def delete(guid: str, root: str | Path = ".", log: Log = say) -> list[Path]:
    """Remove every file of a run (and the temp files of killed writes); checks first that each can
    be removed, so a failure never leaves a half-deleted run."""
    store = RunStore(root)
    files = store.files(guid) + store.orphans(guid, live_too=True)
    if not files:
        raise RunError(f"no files of run {guid} under {store.root.resolve()}")
    store.check_removable(files)
    for p in files:
        try:
            p.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile (a concurrent delete)
        log(f"removed {p}")
    return files
