"""The README stays true: its settings table is the generated one, its commands exist, CI runs its
test command."""
from __future__ import annotations

import re

from baby.config import settings_table
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_settings_table_is_current() -> None:
    block = re.search(r"<!-- settings:.*?-->\n(.*?)\n<!-- /settings -->", README, re.S)
    assert block, "README lost its settings block"
    assert block.group(1).strip() == settings_table().strip(), "run: python -m baby settings"


def test_benchmark_tables_are_the_measured_ones() -> None:
    for name in re.findall(r"<!-- bench:([\w-]+) -->", README):
        block = re.search(rf"<!-- bench:{name} -->(.*?)<!-- /bench:{name} -->", README, re.S).group(1)
        measured = (ROOT / "outputs" / f"bench_{name}.md").read_text(encoding="utf-8").strip()
        assert block.strip() == measured, f"run: python tools/update_readme.py ({name})"


def test_ci_runs_the_readme_test_command() -> None:
    command = 'pip install -e ".[test]" && python -m pytest'
    assert command in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest" in ci and 'pip install -e ".[test]"' in ci


def test_referenced_configs_exist() -> None:
    for name in set(re.findall(r"configs/[\w.-]+\.json", README)):
        assert (ROOT / name).exists(), name
