"""Regenerate the generated blocks of README.md and docs/*.md.

    python tools/update_readme.py            # rewrite the pages whose blocks are stale
    python tools/update_readme.py --check    # only say which are stale (exit 1 if any)

Three kinds of block, each between an opening and a closing HTML comment:

- ``<!-- settings: ... -->`` ... ``<!-- /settings -->``: the table of ``baby.config.settings_table()``;
- ``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->``: outputs/bench_NAME.md, the table the benchmark
  wrote when it ran;
- ``<!-- code:dotted.name -->`` ... ``<!-- /code -->``: the source of a function, method or class
  (``inspect.getsource``), e.g. ``<!-- code:baby.nn.layers.LayerNorm -->``, so a page quotes the code
  as it is today.

tests/test_readme.py fails when a block is stale.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, installed or not
    sys.path.insert(0, str(ROOT))
settings_table = importlib.import_module("baby.config").settings_table

SETTINGS = re.compile(r"(<!-- settings:.*?-->\n)(.*?)(\n<!-- /settings -->)", re.DOTALL)
BENCH = re.compile(r"(<!-- bench:([\w-]+) -->)(.*?)(<!-- /bench:\2 -->)", re.DOTALL)
CODE = re.compile(r"(<!-- code:([\w.]+) -->)(.*?)(<!-- /code -->)", re.DOTALL)


def pages() -> list[Path]:
    """Every page that may hold generated blocks: README.md and docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def resolve(dotted: str) -> Any:
    """The object a dotted name names: the longest importable module prefix, then attributes
    (``baby.nn.layers.LayerNorm.backward``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"code:{dotted}: no module to import")


def quote(dotted: str) -> str:
    """The fenced Python source of a function, method or class, dedented."""
    source = textwrap.dedent(inspect.getsource(resolve(dotted))).rstrip()
    return f"```python\n{source}\n```"


def bench_table(name: str) -> str:
    return (ROOT / "outputs" / f"bench_{name}.md").read_text(encoding="utf-8").strip()


def update(text: str) -> str:
    text = SETTINGS.sub(lambda m: m.group(1) + settings_table() + m.group(3), text)
    text = BENCH.sub(lambda m: f"{m.group(1)}\n{bench_table(m.group(2))}\n{m.group(4)}", text)
    return CODE.sub(lambda m: f"{m.group(1)}\n{quote(m.group(2))}\n{m.group(4)}", text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path in pages():
        text = path.read_text(encoding="utf-8")
        new = update(text)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.write_text(new, encoding="utf-8")
    verb = "stale" if check else "updated"
    print("\n".join(f"{verb}: {p}" for p in stale) or "every generated block is current")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
