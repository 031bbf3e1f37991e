"""The shape of the package a learner walks: no import cycle anywhere in ``baby/`` (imports inside
functions included), ``baby.nn`` imports nothing above it, the variants import only the registry's
core, ``plans.py`` is the table of plans and each command lives in a module named after its verb."""
from __future__ import annotations

import ast
from pathlib import Path

from baby import plans
from tests.conftest import ROOT

PACKAGE = ROOT / "baby"
# shipped with every remote-code export and run by transformers, never imported by baby (see baby/hf/)
REMOTE_CODE = PACKAGE / "hf" / "remote_code"


def runtime_imports(tree: ast.AST) -> list[str]:
    """Modules (or module.name) imported by a file anywhere in it, skipping ``if TYPE_CHECKING:``
    blocks (hints only, never executed)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            found.append(str(node.module))  # ``from pkg import mod`` runs pkg's __init__ too
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it imports (``from baby.x import y``
    counts as baby.x, and as baby.x.y too when that is a module)."""
    files = {module_name(p): p for p in sorted(root.rglob("*.py")) if REMOTE_CODE not in p.parents}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        imported = (resolve(i) for i in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))))
        graph[name] = {i for i in imported if i and i != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scan_sees_imports_inside_functions_but_not_type_hints() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from baby.config import Config\n"
                     "def f():\n    from baby.config import ConfigError\n")
    assert runtime_imports(tree) == ["typing", "typing.TYPE_CHECKING", "baby.config", "baby.config.ConfigError"]


def test_the_cycle_finder_finds_a_cycle_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_anywhere_in_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 60 and "baby.nn.core" in graph["baby.nn.mixers.mha"]
    assert cycles(graph) == []


def test_nn_imports_nothing_above_it() -> None:
    for name, imported in import_graph().items():
        if name.startswith("baby.nn."):
            above = sorted(i for i in imported if i not in ("baby", "baby.nn")  # packages, not modules above
                           and not i.startswith(("baby.nn.", "baby.backend", "baby.ops", "baby.pool")))
            assert not above, f"{name} imports {above}"


def test_the_variants_import_the_registry_core_never_the_list_of_variants() -> None:
    graph = import_graph()
    for name, imported in graph.items():
        if name.startswith(("baby.nn.mixers.", "baby.nn.network.")):
            assert "baby.nn.variants" not in imported, name
    assert "baby.nn.variants" not in graph["baby.nn.core"]


def test_plans_is_the_table_and_each_command_lives_in_a_module_named_after_its_verb() -> None:
    assert len((PACKAGE / "plans.py").read_text(encoding="utf-8").splitlines()) <= 150
    verbs = {"train": "train", "resume": "train", "finetune": "finetune", "inference": "inference",
             "eval": "eval", "delete": "delete", "info": "info", "export": "export", "import": "import_",
             "runs": "runs", "inspect": "inspect", "plot": "plot"}
    assert set(plans.PLANS) == set(verbs)
    for verb, plan in plans.PLANS.items():
        assert plan.__module__ == f"baby.commands.{verbs[verb]}", (verb, plan.__module__)


def test_only_the_backend_imports_cupy() -> None:
    for name, path in ((module_name(p), p) for p in PACKAGE.rglob("*.py") if REMOTE_CODE not in p.parents):
        if name != "baby.backend":
            imported = runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
            assert not any(i == "cupy" or i.startswith(("cupy.", "cupyx")) for i in imported), name


def test_the_remote_code_shipped_with_exports_imports_nothing_of_baby() -> None:
    for path in sorted(REMOTE_CODE.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert "import baby" not in source and "from baby" not in source, path.name
    for name, imported in import_graph().items():
        assert not any(i.startswith("baby.hf.remote_code") for i in imported), name
