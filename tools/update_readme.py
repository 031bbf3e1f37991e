"""Regenerate the README's generated blocks: the settings table and the benchmark tables.

    python tools/update_readme.py

Settings come from baby.config; each ``<!-- bench:NAME -->`` block gets outputs/bench_NAME.md, the
table the benchmark wrote when it ran (tests/test_readme.py checks both stay in sync).
"""
from __future__ import annotations

import re
from pathlib import Path

from baby.config import settings_table

ROOT = Path(__file__).resolve().parents[1]


def update(text: str) -> str:
    text = re.sub(r"(<!-- settings:.*?-->\n)(.*?)(\n<!-- /settings -->)",
                  lambda m: m.group(1) + settings_table() + m.group(3), text, flags=re.S)

    def bench(m: re.Match) -> str:
        table = (ROOT / "outputs" / f"bench_{m.group(2)}.md").read_text(encoding="utf-8").strip()
        return f"{m.group(1)}\n{table}\n{m.group(4)}"

    return re.sub(r"(<!-- bench:([\w-]+) -->)(.*?)(<!-- /bench:\2 -->)", lambda m: bench(m), text, flags=re.S)


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
