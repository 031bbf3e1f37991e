"""The notebook executes headless, top to bottom, on a tiny config (train, one layer by hand and the lab,
then info and inference without those two chapters). Pictures go to files: the lab draws with matplotlib's
Figure (Agg), no GUI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from baby.runs import GUID
from tests.conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def run_notebook(tmp_path: Path, overrides: str, lab: bool = True) -> None:
    nb = nbformat.read(ROOT / "littlebaby.ipynb", as_version=4)
    if not lab:  # the lab trains models of its own and the layer chapter needs no run: once is enough
        nb.cells = [c for c in nb.cells if not {"lab", "layer"} & set(c.get("metadata", {}).get("tags", []))]
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(overrides))  # as papermill injects parameters
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def test_notebook_trains_then_describes_and_samples(tmp_path: Path) -> None:
    tiny = {"n_ctx": 16, "n_emb": 16, "head_size": 16, "n_heads": 2, "n_layers": 1, "n_steps": 6,
            "batch_size": 4, "n_sample_tokens": 10}
    text = tmp_path / "tiny.txt"
    text.write_text((ROOT / "inputs" / "shakespeare.txt").read_text()[:5000])
    nb = run_notebook(tmp_path, f"settings.update({json.dumps(tiny)})\nroot = {str(tmp_path)!r}\n"
                                f"inputs = [{str(text)!r}]\nlab_steps = 12")
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "validation loss" in outputs
    guids = sorted(p.stem.split("_")[1] for p in (tmp_path / "configs").glob("config_*.json"))
    assert len(guids) == 3  # the plan's run and the lab's two
    # one layer by hand: the formulas matched (the cells assert it), the code that ran was shown, the check passed
    layer = outputs.split("gradient check of the attention above")
    assert len(layer) == 2 and "WRONG" not in layer[1].split("mha (mixer)")[0]
    assert layer[0].count("largest difference from the formula") == 4
    for shown in ("def forward(", "def backward(", "# baby/nn/"):
        assert shown in layer[0], shown
    # the lab: its gradient check passes on mha and catches the flipped sign
    assert "mha (mixer)" in outputs and "WRONG" in outputs.split("BrokenAFT")[1]
    assert "WRONG" not in outputs.split("BrokenAFT")[0]
    lab = tmp_path / "outputs" / "lab"
    assert (lab / "attention" / "views.json").exists() and (lab / "induction" / "views.json").exists()
    if (lab / "health.png").exists():  # with matplotlib
        pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(pngs) >= 5  # chart, attention maps, induction, conv, health
    first = next(line for line in outputs.splitlines() if GUID.fullmatch(line))
    for plan in ("info", "inference"):
        nb = run_notebook(tmp_path, f"root = {str(tmp_path)!r}\nplan = {plan!r}\nguid = {first!r}\nmax_tokens = 5",
                          lab=False)
    assert list((tmp_path / "outputs").glob(f"completion_{first}_*.json"))
