"""Every preset in configs/ validates; the LLaMA preset has the BabyLM-LLaMA-26M shape."""
from __future__ import annotations

import pytest

from baby.config import Config
from baby.nn.model import GPT
from tests.conftest import ROOT

PRESETS = sorted((ROOT / "configs").glob("*.json"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_validates(path) -> None:
    Config.load(path)


def test_llama_26m_parameter_count() -> None:
    cfg = Config.load(ROOT / "configs" / "babylm-llama-26m.json")
    d, v, layers, ff = 384, 16000, 6, 1536
    # untied embedding and head, per layer: q k v o + SwiGLU's three matrices + two RMSNorm gains; final RMSNorm
    expected = 2 * v * d + layers * (4 * d * d + 3 * d * ff + 2 * d) + d
    assert GPT(cfg, v).n_params() == expected == 26_448_768
