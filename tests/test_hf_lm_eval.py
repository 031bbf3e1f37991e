"""The BabyLM harness: lm-evaluation-harness (PyPI ``lm-eval``), scoring an exported model on a local
multiple-choice task over BLiMP-filtered pairs, gives the per-paradigm accuracies of
``python -m baby eval --task blimp`` on the same pairs, for a native export (GPT2LMHeadModel) and a
remote-code one (conv + induction + swi).

The task is BabyLM's BLiMP task: an empty context, which lm-eval replaces by the BOS token, and the two
sentences as the choices with ``target_delimiter: ""``, so each sentence is scored as
log p(sentence | <bos>), exactly as ``baby eval`` does; lm-eval's accuracy is an argmax, which counts
a tie as right: ``accuracy_babylm`` here. Skipped cleanly without lm-eval (the test extra has it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy
import pytest

from baby import plans, runs
from baby.commands.export import export
from baby.evaluate.scoring import sentence_logprobs
from baby.formats import model_to_dict
from baby.runs import RunStore
from tests.conftest import ROOT, SHARED_DATA

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")  # lm-eval's "hf" model needs it (lm-eval[hf])
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

BLIMP = SHARED_DATA / "blimp_filtered_babylm"
PARADIGMS = ("anaphor_gender_agreement", "determiner_noun_agreement_2", "irregular_past_participle_adjectives",
             "regular_plural_subject_verb_agreement_1")
LIMIT = 20  # pairs per paradigm
TEXT = (ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:6000]
BASE = {"c_tokenizer": "bpe", "n_vocab": 300, "n_ctx": 64, "n_emb": 32, "n_heads": 2, "n_layers": 2,
        "batch_size": 4, "n_steps": 4, "n_eval_batches": 1, "n_sample_tokens": 0, "seed": 3}
SHAPES = {"GPT2LMHeadModel": {},
          "BabyForCausalLM": {"c_attention": "conv+induction", "c_network": "swi", "n_conv_groups": 4,
                              "n_induction_heads": 2}}
TASK = """task: baby_{name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: ""
doc_to_target: 0
doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""

pytestmark = pytest.mark.skipif(not BLIMP.is_dir(), reason=f"no BLiMP data at {BLIMP}")


def quiet(_: str) -> None:
    pass


def pairs_that_fit(tokenizer: Any, n_ctx: int) -> dict[str, list[str]]:
    """The first LIMIT lines of each paradigm whose sentences fit one window (<bos> + n_ctx tokens), so
    that neither side slides or truncates."""
    out = {}
    for name in PARADIGMS:
        lines = [line for line in (BLIMP / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        fits = [line for line in lines if all(len(tokenizer.encode(json.loads(line)[k])) <= n_ctx
                                              for k in ("sentence_good", "sentence_bad"))]
        out[name] = fits[:LIMIT]
    return out


@pytest.mark.parametrize("kind", SHAPES)
def test_lm_eval_scores_an_export_as_baby_eval_does(tmp_path: Path, kind: str) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    guid = plans.train({**BASE, **SHAPES[kind]}, [str(corpus)], root=tmp_path, log=quiet)
    store = RunStore(tmp_path)
    run = runs.Run(store, guid)
    model = run.model()  # shaken off its init, so that good and bad sentences are far from ties
    rng = numpy.random.default_rng(5)
    for _, p in model.named_parameters():
        p.data += rng.normal(0.0, 0.3, p.shape).astype(p.data.dtype)
    store.write("model", guid, model_to_dict(model))
    folder = export(guid, tmp_path / "hf", root=tmp_path, log=quiet)
    assert json.loads((folder / "config.json").read_text())["architectures"] == [kind]

    data, tasks = tmp_path / "blimp", tmp_path / "tasks"
    data.mkdir()
    tasks.mkdir()
    for name, lines in pairs_that_fit(run.tokenizer, BASE["n_ctx"]).items():
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tasks / f"{name}.yaml").write_text(TASK.format(name=name, data=data / f"{name}.jsonl"), encoding="utf-8")

    ours = plans.evaluate(guid, "blimp", data=str(data), root=tmp_path, log=quiet)
    result = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(folder), "trust_remote_code": True, "dtype": "float32"},
        tasks=[f"baby_{name}" for name in PARADIGMS], batch_size=8, device="cpu", log_samples=True,
        task_manager=lm_eval.tasks.TaskManager(include_path=str(tasks)))
    theirs = {name: result["results"][f"baby_{name}"]["acc,none"] for name in PARADIGMS}
    expected = {name: ours["paradigms"][name]["accuracy_babylm"] for name in PARADIGMS}
    print(f"\n{kind}: baby eval {expected}\n{kind}: lm-eval   {theirs}")
    assert theirs == pytest.approx(expected, abs=1e-12)
    assert all(ours["paradigms"][name]["n_pairs"] == LIMIT for name in PARADIGMS)
    # and sentence by sentence: lm-eval's log-likelihoods are ours
    model = run.model()
    for name in PARADIGMS:
        samples = result["samples"][f"baby_{name}"]
        sentences = [s["doc"][k] for s in samples for k in ("sentence_good", "sentence_bad")]
        their_scores = [float(r[0]) for s in samples for r in s["filtered_resps"]]
        worst = numpy.abs(sentence_logprobs(model, run.tokenizer, sentences) - their_scores).max()
        print(f"{kind} {name}: worst sentence log-probability difference {worst:.1e}")
        assert worst <= 3e-4  # fp32 log-softmax summed over ~15 tokens: ~5e-5 seen
