"""The README and the pages of docs/ stay true: their generated blocks (the settings table, the measured
benchmark tables, the quoted code) are current, their links lead somewhere, their commands and configs
exist, the README's package map names every module of baby/ and baby/nn/, its variant example works,
CI runs its test command, and it stays short enough to read in ten minutes."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from baby.config import settings_table
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("update_readme", ROOT / "tools" / "update_readme.py")
update_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_readme)

PAGES = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in update_readme.pages()}
README = PAGES["README.md"]
FIX = "run: python tools/update_readme.py"


def test_the_docs_pages_exist_and_each_is_linked_from_the_readme() -> None:
    docs = [name for name in PAGES if name.startswith("docs/")]
    assert len(docs) >= 8, docs
    for name in docs:
        assert f"]({name})" in README or f"]({name}#" in README, f"README.md does not link {name}"


def test_readme_is_short() -> None:
    lines = README.count("\n")
    assert lines <= 300, f"README.md has {lines} lines: move detail into docs/"


def test_settings_table_is_current() -> None:
    blocks = [(name, block) for name, text in PAGES.items()
              for block in re.findall(r"<!-- settings:.*?-->\n(.*?)\n<!-- /settings -->", text, re.DOTALL)]
    assert blocks, "the docs lost their settings block"
    for name, block in blocks:
        assert block.strip() == settings_table().strip(), f"{name}: {FIX}"


def test_benchmark_tables_are_the_measured_ones() -> None:
    seen = 0
    for page, text in PAGES.items():
        for name in re.findall(r"<!-- bench:([\w-]+) -->", text):
            block = re.search(rf"<!-- bench:{name} -->(.*?)<!-- /bench:{name} -->", text, re.DOTALL)
            assert block, f"{page}: bench:{name} is not closed"
            measured = (ROOT / "outputs" / f"bench_{name}.md").read_text(encoding="utf-8").strip()
            assert block.group(1).strip() == measured, f"{page}: {FIX} ({name})"
            seen += 1
    assert seen >= 7  # cpu, train, dp, variants_attention, variants_network, mqar, scaling


def test_quoted_code_is_the_code() -> None:
    quotes = [(page, m) for page, text in PAGES.items() for m in update_readme.CODE.finditer(text)]
    assert any(page == "README.md" for page, _ in quotes), "the README's tour lost its quoted layer"
    assert len(quotes) == sum(text.count("<!-- code:") for text in PAGES.values()), "a code block is not closed"
    for page, m in quotes:
        assert m.group(3).strip() == update_readme.quote(m.group(2)), f"{page}: code:{m.group(2)} is stale; {FIX}"


def test_update_changes_nothing_when_current() -> None:
    for name, text in PAGES.items():
        assert update_readme.update(text) == text, f"{name}: {FIX}"


def test_a_stale_quote_is_regenerated() -> None:
    stale = "<!-- code:textwrap.dedent -->\n```python\nold\n```\n<!-- /code -->"
    fresh = update_readme.update(stale)
    assert "old" not in fresh and "def dedent(" in fresh and fresh.endswith("<!-- /code -->")
    assert update_readme.update(fresh) == fresh


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (not - and _), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # a '#' line in a code block is no heading
    found: set[str] = set()
    for heading in re.findall(r"(?m)^#{1,6} (.+)$", text):
        base, n = slug(heading), 0
        while (f"{base}-{n}" if n else base) in found:
            n += 1
        found.add(f"{base}-{n}" if n else base)
    return found


@pytest.mark.parametrize("page", sorted(PAGES))
def test_relative_links_lead_to_files_and_headings(page: str) -> None:
    text = re.sub(r"```.*?```", "", PAGES[page], flags=re.DOTALL)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (ROOT / page).parent / target if target else ROOT / page
        assert path.exists(), f"{page}: link {link!r}: no file {path.relative_to(ROOT)}"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path.read_text(encoding="utf-8")), f"{page}: link {link!r}: no such heading"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_referenced_configs_exist(page: str) -> None:
    for name in set(re.findall(r"configs/[\w.-]+\.json", PAGES[page])):
        if "<" not in name:
            assert (ROOT / name).exists(), f"{page}: {name}"


def test_readme_commands_are_commands() -> None:
    usage = subprocess.run([sys.executable, "-m", "baby", "--help"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    verbs = set(re.search(r"\{([\w,]+)\}", usage).group(1).split(","))
    for verb in re.findall(r"python -m baby ([a-z]+)", "\n".join(PAGES.values())):
        assert verb in verbs, f"python -m baby {verb}: no such command"


def test_the_package_map_names_every_module_and_nothing_else() -> None:
    block = re.search(r"## The package\n\n```\n(.*?)```", README, re.DOTALL).group(1).splitlines()[1:]
    named = set()
    for line in block:
        found = re.match(r"( *)((?:\w+(?:\.py|/)(?:, )?)+)", line)
        if found and len(found.group(1)) <= 4:  # deeper lines continue a description
            prefix = "nn/" if len(found.group(1)) == 4 else ""
            named |= {prefix + n.rstrip("/") for n in found.group(2).split(", ")}
    package = ROOT / "baby"
    present = {p.relative_to(package).as_posix().removesuffix(".py")
               for folder in (package, package / "nn") for p in folder.iterdir()
               if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and any(p.glob("*.py")))}
    named = {n.removesuffix(".py") for n in named}
    assert named - present == set(), f"the README's package map names what is not there: {sorted(named - present)}"
    assert present - named == set(), f"the README's package map misses: {sorted(present - named)}"


def test_the_readme_variant_example_registers_and_passes_the_gradient_check(tmp_path: Path) -> None:
    code = re.search(r"## Adding a variant.*?```python\n(.*?)```", README, re.DOTALL).group(1)
    (tmp_path / "mine.py").write_text(code, encoding="utf-8")
    check = ("import mine\n"
             "from baby.config import Config, settings_table\n"
             "from baby.nn import gradcheck\n"
             "errors = gradcheck.check_by_name('mine', log=None)\n"
             "assert max(errors.values()) <= gradcheck.LEARNER_TOLERANCE, errors\n"
             "assert Config({'c_network': 'mine', 'r_mine': 1.5}).r_mine == 1.5\n"
             "assert '`r_mine`' in settings_table()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_ci_runs_the_readme_test_command() -> None:
    command = 'pip install -e ".[test]" && python -m pytest'
    assert command in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest" in ci and 'pip install -e ".[test]"' in ci
