"""Reading and writing the project's JSON files safely: the one place that touches them on disk.

Writes are atomic (a temp file in the same folder, flushed, then renamed over the target), follow the
umask like any other file, and are standard JSON: a non-finite float is written as ``null``, never as
the ``NaN``/``Infinity`` literals that jq, JavaScript and pandas refuse. A temp file is named after
its writer's PID, so a later command can tell the orphan of a killed writer from a live write.

Reads refuse what is not a regular file (a directory, a FIFO that would block, a device), bytes that
are not UTF-8, JSON that repeats a key, nests absurdly deep or has the wrong top-level type, each
with one line naming the file.
"""
from __future__ import annotations

import json
import math
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
MAX_DEPTH = 64  # no file of ours nests deeper than a few levels


class FileFault(ValueError):
    """A file (or run) that cannot be read, written or used as asked; the message names it and says
    why. ``baby.runs.RunError`` is this class."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
FILE_MODE = 0o666 & ~_UMASK  # run files are shared like any other file (mkstemp makes 0600)


def finite_or_none(data: Any) -> Any:
    """``data`` with every non-finite float replaced by None (standard JSON has no NaN)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(v) for v in data]
    if hasattr(data, "item") and getattr(data, "ndim", None) == 0:  # NumPy scalars
        return finite_or_none(data.item())
    return data


def dumps(data: Any, indent: int | None = 1) -> str:
    return json.dumps(finite_or_none(data), indent=indent, ensure_ascii=False, allow_nan=False)


HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def temp_path_for(path: Path) -> tuple[int, str]:
    """A new temp file beside ``path`` whose name carries this host and process: on a shared file
    system only the writer's own host can tell whether the writer is gone."""
    return tempfile.mkstemp(prefix=f".{path.name}.{HOST}-{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)


def _fault(path: Path, action: str, err: OSError) -> FileFault:
    return FileFault(f"{path}: cannot {action} ({err.strerror or err})")


def write_json(path: Path, data: Any, indent: int | None = 1, exclusive: bool = False) -> bool:
    """Write JSON atomically. With ``exclusive`` the target is created only if it does not exist yet
    (returns False, writing nothing, when it does): concurrent writers never overwrite each other."""
    return write_text(path, dumps(data, indent), exclusive)  # serialised first: a bad value leaves no file


def write_text(path: Path, text: str, exclusive: bool = False) -> bool:
    """Write UTF-8 text atomically (a temp file beside it, renamed over it; see ``write_json``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_path_for(path)
    except OSError as err:
        raise _fault(path.parent, "write in this folder", err) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; run files are shared like any other
        if exclusive:
            try:
                os.link(tmp, path)  # atomic create-if-absent, with the content already in place
            except FileExistsError:
                return False
            finally:
                Path(tmp).unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
        return True
    except OSError as err:
        raise _fault(path, "write", err) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _depth(data: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, iteratively (a deep file must not blow the Python stack)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_text(path: Path, what: str = "file") -> str:
    """The UTF-8 text of a regular file, or one line saying why not."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileFault(f"{path}: no such {what}") from None
    except OSError as err:
        raise _fault(path, "read", err) from None
    if stat.S_ISDIR(mode):
        raise FileFault(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        raise FileFault(f"{path}: is not a regular file (a FIFO or device?); expected a {what}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise _fault(path, "read", err) from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise FileFault(f"{path}: is UTF-16; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FileFault(f"{path}: not UTF-8 text (byte {err.start})") from None


def read_json(path: Path, what: str = "JSON file", expect: type = dict, strict: bool = False) -> Any:
    """Parse a JSON file: no duplicate keys, bounded nesting, and a top level of type ``expect``
    (``object`` for anything). NaN/Infinity literals (written by older versions) read as None, or
    are refused when ``strict`` (settings, where None would hide what was written)."""
    text = read_text(path, what)

    def no_constant(name: str) -> Any:
        if strict:
            raise ValueError(f"{name} is not standard JSON; write a number")
        return None

    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=no_constant)
    except json.JSONDecodeError as err:
        raise FileFault(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); is the file truncated?") from None
    except RecursionError:
        raise FileFault(f"{path}: JSON nested too deeply") from None
    except ValueError as err:
        raise FileFault(f"{path}: {err}") from None
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise FileFault(f"{path}: JSON nested deeper than {MAX_DEPTH} levels")
    if expect is not object and not isinstance(data, expect):
        kind = {dict: "an object", list: "an array"}.get(expect, expect.__name__)
        raise FileFault(f"{path}: expected {kind} at the top level, found {type(data).__name__ if data is not None else 'null'}")
    return data


def orphan_temps(folder: Path, prefix: str, live_too: bool = False) -> list[Path]:
    """Temp files in ``folder`` of targets starting with ``prefix`` whose writing process is gone
    (with ``live_too``, every temp file of those targets)."""
    out = []
    if not folder.is_dir():
        return out
    for p in folder.glob(f".{prefix}*{TEMP_SUFFIX}"):
        parts = p.name[1:].rsplit(".", 3)  # target, host-pid, random part, "tmp"
        host, _, pid_text = parts[1].rpartition("-") if len(parts) == 4 else ("", "", "")
        if host and host != HOST and not live_too:
            continue  # another machine's writer: it may well be alive
        pid = int(pid_text) if pid_text.isdigit() else None
        if live_too or pid is None or not _alive(pid):
            out.append(p)
    return sorted(out)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def probe_writable(folder: Path) -> None:
    """Create and remove a temp file in ``folder`` (made if missing): the honest test that writing
    there will work (permissions, read-only mounts, a full disk's inode table)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_path_for(folder / "probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise _fault(folder, "write in this folder", err) from None
