"""Every preset in configs/ and every study in studies/ validates; the LLaMA preset has the
BabyLM-LLaMA-26M shape; the BabyLM-hour study runs its preset as it is."""
from __future__ import annotations

import pytest

from baby import study
from baby.config import Config
from baby.nn.model import GPT
from tests.conftest import ROOT

PRESETS = sorted((ROOT / "configs").glob("*.json"))
STUDIES = sorted((ROOT / "studies").glob("*.json"))
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_validates(path) -> None:
    Config.load(path)


def test_llama_26m_parameter_count() -> None:
    cfg = Config.load(ROOT / "configs" / "babylm-llama-26m.json")
    d, v, layers, ff = 384, 16000, 6, 1536
    # untied embedding and head, per layer: q k v o + SwiGLU's three matrices + two RMSNorm gains; final RMSNorm
    expected = 2 * v * d + layers * (4 * d * d + 3 * d * ff + 2 * d) + d
    assert GPT(cfg, v).n_params() == expected == 26_448_768


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data (the studies' text and test sets)")
@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_validates(path, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(ROOT)  # a study's paths are relative to the repository root
    assert study.load_study(path, tmp_path).cells


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data (the study's text and test sets)")
def test_the_babylm_hour_study_trains_its_preset_unchanged(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(ROOT)
    preset = Config.load(ROOT / "configs" / "babylm-1h.json").to_dict()
    cells = study.load_study(ROOT / "studies" / "babylm-1h.json", tmp_path).cells
    assert [c.seed for c in cells] == [1337, 1338]
    for cell in cells:
        assert Config({**cell.settings}).to_dict() == {**preset, "seed": cell.seed}
