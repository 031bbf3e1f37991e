"""The CPU speed suite compares like with like: its PyTorch twins hold baby's weights and give baby's
scores, and its table renders every row it measured."""
from __future__ import annotations

import numpy
import pytest

from baby import device
from baby.config import Config
from baby.nn.model import GPT

pytest.importorskip("torch")
pytest.importorskip("transformers")

from baby.bench import suite

SHAPES = {"gpt": {}, "llama": {"c_norm": "rms", "c_position": "rope", "c_network": "swi", "c_bias": False}}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_transformers_twin_scores_sentences_as_baby_does(shape: str) -> None:
    from baby.evaluate.scoring import sequence_logprobs
    cfg = Config({"n_layers": 2, "n_emb": 32, "n_heads": 4, "n_ctx": 24, "r_dropout": 0.0, **SHAPES[shape]})
    device.select(cfg)
    model = GPT(cfg, 50)
    rng = numpy.random.default_rng(0)
    sequences = [rng.integers(4, 50, n) for n in (5, 9, 17, 3)]
    mine = sequence_logprobs(model, sequences, 64, pad_id=0)
    theirs = suite.torch_logprobs(suite.hf_twin(model), sequences)
    numpy.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)


def test_the_suite_table_has_a_line_for_every_measured_row() -> None:
    train = {"row": "nanoGPT CPU", "threads": 2, "ours": 15000.0, "torch": 16000.0, "ratio": 0.9375,
             "ours_peak_share": 0.41, "torch_peak_share": 0.44}
    alone = {**train, "row": "conv + induction 4M", "torch": None, "ratio": None, "torch_peak_share": None}
    gen = {"row": "BabyLM GPT 5M", "threads": 1, "ours": 300.0, "torch": 150.0, "ratio": 2.0}
    result = {"machine": {"cpu": "X", "cores": 2, "date": "2026-12-02"}, "train": [train, alone],
              "generation": [gen], "scoring": [{**gen, "ours": 170.0, "torch": 85.0}],
              "busy": {"config": "configs/cpu.json", "1 thread": 7000.0, "2 threads": 1400.0, "default": 6900.0,
                       "default_threads": 1}}
    table = suite.markdown(result)
    assert "| nanoGPT CPU | 2 | 15,000 | 16,000 | **0.94** | 41% / 44% |" in table
    assert "| conv + induction 4M | 2 | 15,000 | no PyTorch version | - | 41% / - |" in table
    assert "| BabyLM GPT 5M | 1 | 300.0 | 150.0 | **2.00** |" in table and "| BabyLM GPT 5M | 1 | 170.0 | 85.0 |" in table
    assert "1 thread 7,000 tokens/s, 2 threads 1,400" in table and "1 used) 6,900" in table


def test_the_suite_names_its_machine() -> None:
    from baby.bench import common
    assert common.isa({"avx2", "avx512f", "avx512bw", "avx512_vnni"}) == "AVX-512 (bw, vnni)"
    assert common.isa({"avx", "avx2", "fma"}) == "AVX2"
    assert common.isa(set()) == "unknown"
    m = common.machine()
    assert {"cpu", "isa", "cores", "l2_cache_kib", "blas", "numpy", "date"} <= set(m)
    line = common.machine_line({**m, "cpu": "Some CPU", "isa": "AVX2", "blas": "OpenBLAS 0.3 (Haswell kernels)"})
    assert line.startswith("Some CPU, AVX2, ") and "on OpenBLAS 0.3 (Haswell kernels)" in line
