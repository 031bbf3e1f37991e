"""Evaluation: the sentence scorer against one-sentence forward passes, padding, BLiMP aggregation and
ties, perplexity against a direct computation, and the eval plan end to end on a tiny trained run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy
import pytest

from baby import backend, plans
from baby.commands.eval import evaluate, format_table
from baby.config import Config, ConfigError
from baby.corpus import CorpusError, encode_documents
from baby.evaluate.blimp import Pair, aggregate, evaluate_blimp, load_blimp
from baby.evaluate.perplexity import evaluate_perplexity
from baby.evaluate.scoring import sentence_logprobs, sequence_logprobs, window_plan
from baby.evaluate.zorro import load_zorro
from baby.nn.layers import log_softmax
from baby.nn.model import GPT
from baby.runs import RunError, RunStore
from baby.tokenizers import train_tokenizer
from tests.conftest import ROOT, SHARED_DATA

TEXT = (ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:4000]
N_CTX = 16
# Empty, short, repeated, exactly n_ctx and n_ctx + 1 characters (one window / two), and long ones.
SENTENCES = ["", "a", "To be", "The king is dead.", "To be", TEXT[:N_CTX], TEXT[:N_CTX + 1],
             "Who should Derek hug after shocking Richard?",
             "First Citizen: Before we proceed any further, hear me speak.", "xy"]


def quiet(_: str) -> None:
    pass


def tiny_model(mixer: str = "mha", n_ctx: int = N_CTX) -> tuple[GPT, object]:
    tokenizer = train_tokenizer("char", TEXT)
    cfg = Config({"n_ctx": n_ctx, "n_emb": 16, "n_heads": 4, "n_layers": 2, "seed": 3, "c_attention": mixer})
    return GPT(cfg, tokenizer.n_vocab), tokenizer


def direct_logprob(model: GPT, seq: numpy.ndarray, stride: int) -> float:
    """Token by token with one unpadded forward each: target t is predicted from the start of the
    window that scores it (window_plan's rule: the first n_ctx targets from position 0, later ones
    from the latest window start k * stride that still covers them)."""
    n_ctx, total = model.cfg.n_ctx, 0.0
    for t in range(1, len(seq)):
        start = 0 if t <= n_ctx else -(-(t - n_ctx) // stride) * stride
        logits = model.forward(backend.asarray(seq[start:t][None, :]))
        total += float(log_softmax(logits)[0, -1, int(seq[t])])
    return total


def encoded(tokenizer, sentence: str) -> numpy.ndarray:
    return numpy.concatenate([[tokenizer.bos_id], tokenizer.encode(sentence)]).astype(numpy.int64)


# ---- the scorer ------------------------------------------------------------------------------------

@pytest.mark.parametrize("d_type, tol", [("fp32", 2e-5), ("fp64", 1e-11)])
def test_scores_equal_one_sentence_forward_passes(d_type: str, tol: float) -> None:
    backend.use("cpu", d_type=d_type)
    try:
        model, tokenizer = tiny_model()
        assert max(len(tokenizer.encode(s)) for s in SENTENCES) > N_CTX  # the sliding window is exercised
        model.eval()
        expected = numpy.array([direct_logprob(model, encoded(tokenizer, s), N_CTX // 2) for s in SENTENCES])
        model.train()
        got = sentence_logprobs(model, tokenizer, SENTENCES, batch_size=3)
        assert got.dtype == numpy.float64 and got.shape == (len(SENTENCES),)
        assert got[0] == 0.0 and numpy.all(got[1:] < 0)
        numpy.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
        assert model.training  # the scorer switched to eval mode and back
    finally:
        backend.use("cpu", d_type="fp32")


@pytest.mark.parametrize("d_type, tol", [("fp32", 1e-5), ("fp64", 1e-12)])
def test_left_and_right_padding_and_batch_sizes_agree(d_type: str, tol: float) -> None:
    backend.use("cpu", d_type=d_type)
    try:
        model, tokenizer = tiny_model()
        sentences = SENTENCES + [TEXT[i:i + n] for i, n in ((0, 3), (50, 9), (200, 14), (300, 1), (400, 30))]
        right = sentence_logprobs(model, tokenizer, sentences, batch_size=5, pad_side="right")
        left = sentence_logprobs(model, tokenizer, sentences, batch_size=5, pad_side="left")
        alone = sentence_logprobs(model, tokenizer, sentences, batch_size=1)
        numpy.testing.assert_allclose(left, right, rtol=tol, atol=tol)
        numpy.testing.assert_allclose(alone, right, rtol=tol, atol=tol)
        with pytest.raises(ValueError, match="pad_side"):
            sentence_logprobs(model, tokenizer, sentences, pad_side="middle")
    finally:
        backend.use("cpu", d_type="fp32")


def test_window_plan_scores_every_target_once() -> None:
    for n in range(0, 60):
        for stride in (1, 5, 8, 16):
            starts, lengths, skips = window_plan(n, N_CTX, stride)
            covered = numpy.concatenate([numpy.arange(s + k + 1, s + ln + 1)
                                         for s, ln, k in zip(starts, lengths, skips)] or [numpy.zeros(0, int)])
            assert sorted(covered.tolist()) == list(range(1, n)), (n, stride)
            assert numpy.all(lengths <= N_CTX) and numpy.all(lengths > skips)
            assert numpy.all(starts[1:] + skips[1:] >= N_CTX - stride)  # context after the first window


def test_identical_token_sequences_tie_exactly() -> None:
    model, tokenizer = tiny_model()
    unseen = "\u4e00\u4e01"  # both become <unk>: different text, same ids
    scores = sentence_logprobs(model, tokenizer, ["To be", "a", "To be", f"x{unseen[0]}", f"x{unseen[1]}"],
                               batch_size=1)
    assert scores[0] == scores[2] and scores[3] == scores[4] and scores[0] != scores[1]


# ---- BLiMP -----------------------------------------------------------------------------------------

def write_paradigm(directory: Path, stem: str, term: str, pairs: list[tuple[str, str]]) -> None:
    lines = [json.dumps({"sentence_good": g, "sentence_bad": b, "field": "syntax", "linguistics_term": term,
                         "UID": stem, "pair_id": i}) for i, (g, b) in enumerate(pairs)]
    (directory / f"{stem}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def blimp_dir(tmp_path: Path) -> Path:
    d = tmp_path / "blimp"
    d.mkdir()
    write_paradigm(d, "p_one", "binding", [("The king is dead.", "The king are dead."), ("To be", "be To")])
    write_paradigm(d, "p_two", "binding", [("I am.", "I is."), ("We are.", "We is."), ("Go.", "Go."),
                                           ("He runs.", "He run."), ("She sees.", "She see.")])
    write_paradigm(d, "p_sel", "s-selection", [("The cat ate.", "The idea ate.")])
    (d / "README.md").write_text("not a paradigm", encoding="utf-8")
    return d


def test_load_blimp_maps_phenomena_and_limits(blimp_dir: Path) -> None:
    pairs = load_blimp(blimp_dir)
    assert len(pairs) == 8 and [p.paradigm for p in pairs][:3] == ["p_one", "p_one", "p_sel"]
    assert {p.phenomenon for p in pairs} == {"binding", "argument_structure"}
    limited = load_blimp(blimp_dir, limit=2)
    assert [(p.paradigm, p.good) for p in limited] == [
        ("p_one", "The king is dead."), ("p_one", "To be"), ("p_sel", "The cat ate."),
        ("p_two", "I am."), ("p_two", "We are.")]
    with pytest.raises(RunError, match="no such BLiMP"):
        load_blimp(blimp_dir / "missing")
    empty = blimp_dir.parent / "empty"
    empty.mkdir()
    with pytest.raises(RunError, match="no \\*.jsonl"):
        load_blimp(empty)
    (blimp_dir / "broken.jsonl").write_text('{"sentence_good": "a"}\n', encoding="utf-8")
    with pytest.raises(RunError, match="broken.jsonl:1: missing text field 'sentence_bad'"):
        load_blimp(blimp_dir)


def test_aggregate_macro_phenomena_and_ties() -> None:
    pairs = ([Pair("g", "b", "p1", "binding", "syntax")] * 2 + [Pair("g", "b", "p2", "binding", "syntax")] * 4
             + [Pair("g", "g", "p3", "argument_structure", "semantics")])
    good = numpy.array([-1.0, -5.0, -1.0, -1.0, -1.0, -2.0, -3.0])
    bad = numpy.array([-2.0, -4.0, -2.0, -2.0, -2.0, -2.0, -3.0])  # p2's last pair and p3's only pair tie
    r = aggregate(pairs, good, bad)
    p1, p2, p3 = (r["paradigms"][p] for p in ("p1", "p2", "p3"))
    assert (p1["accuracy"], p2["accuracy"], p3["accuracy"]) == (0.5, 0.75, 0.0)
    assert (p1["accuracy_babylm"], p2["accuracy_babylm"], p3["accuracy_babylm"]) == (0.5, 1.0, 1.0)
    assert r["ties"] == 2 and p2["ties"] == 1 and r["identical_pairs"] == 1
    assert r["accuracy"] == pytest.approx((0.5 + 0.75 + 0.0) / 3)  # macro over paradigms
    assert r["accuracy_micro"] == pytest.approx(4 / 7)  # pooled pairs differ
    assert r["accuracy_babylm"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    binding = r["phenomena"]["binding"]
    assert binding["accuracy"] == pytest.approx((0.5 + 0.75) / 2)  # macro over its paradigms, not 4/6
    assert binding["n_pairs"] == 6 and binding["n_paradigms"] == 2
    assert r["phenomena"]["argument_structure"]["accuracy"] == 0.0


def test_identical_sentences_are_a_tie_wrong_here_right_for_babylm(blimp_dir: Path) -> None:
    model, tokenizer = tiny_model()
    pairs = load_blimp(blimp_dir)
    r = evaluate_blimp(model, tokenizer, pairs, batch_size=4, log=quiet)
    go = r["paradigms"]["p_two"]
    assert go["ties"] >= 1 and r["identical_pairs"] == 1  # "Go." vs "Go."
    assert go["accuracy_babylm"] - go["accuracy"] == pytest.approx(go["ties"] / 5)
    scores = sentence_logprobs(model, tokenizer, [p.good for p in pairs] + [p.bad for p in pairs])
    assert r["paradigms"]["p_one"]["correct"] == int(numpy.sum(scores[:2] > scores[8:10]))
    assert r["pairs_per_second"] > 0 and r["scored_tokens"] > 0


# ---- perplexity ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [0, 5])
def test_perplexity_matches_a_direct_computation(stride: int) -> None:
    model, tokenizer = tiny_model()
    docs = [TEXT[:300], TEXT[1000:1123], "To be"]
    r = evaluate_perplexity(model, tokenizer, docs, batch_size=4, stride=stride)
    stream, _ = encode_documents(tokenizer, docs)
    model.eval()
    if stride == 0:  # non-overlapping windows of n_ctx inputs, as in training's validation loss
        nll = 0.0
        for start in range(0, len(stream) - 1, N_CTX):
            window = stream[start:start + N_CTX + 1]
            logp = log_softmax(model.forward(backend.asarray(window[None, :-1])))[0]
            nll -= float(logp[numpy.arange(len(window) - 1), window[1:]].sum())
    else:
        nll = -direct_logprob(model, stream, stride)
    assert r["predicted_tokens"] == len(stream) - 1 and r["stride"] == (stride or N_CTX)
    assert r["nll_total"] == pytest.approx(nll, rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(nll / (len(stream) - 1)), rel=1e-5)
    words = sum(len(d.split()) for d in docs)
    assert r["n_words"] == words and r["word_perplexity"] == pytest.approx(math.exp(nll / words), rel=1e-5)
    n_bytes = sum(len(d.encode()) for d in docs)
    assert r["bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)


def test_sequence_logprobs_without_targets() -> None:
    model, _ = tiny_model()
    assert sequence_logprobs(model, []).shape == (0,)
    assert sequence_logprobs(model, [numpy.array([1])]).tolist() == [0.0]


# ---- the eval plan on a trained run ----------------------------------------------------------------

TINY_RUN = {"n_ctx": 16, "n_emb": 16, "n_heads": 2, "n_layers": 1, "batch_size": 4, "n_steps": 5,
            "n_sample_tokens": 5}


def test_evaluate_end_to_end_accumulates_results(tmp_path: Path, blimp_dir: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(TEXT[:500], encoding="utf-8")
    root = tmp_path / "runs"
    guid = plans.train(TINY_RUN, [str(corpus)], root=root, log=quiet)
    lines: list[str] = []
    blimp = evaluate(guid, "blimp", data=str(blimp_dir), root=root, batch_size=3, log=lines.append)
    assert blimp["n_pairs"] == 8 and 0.0 <= blimp["accuracy"] <= blimp["accuracy_babylm"] <= 1.0
    assert set(blimp["phenomena"]) == {"binding", "argument_structure"}
    assert any("BabyLM-compatible" in line for line in lines)
    ppl = evaluate(guid, "perplexity", inputs=[str(held_out)], root=root, log=quiet)
    limited = evaluate(guid, "blimp", data=str(blimp_dir), root=root, limit=1, log=quiet)
    again = evaluate(guid, "blimp", data=str(blimp_dir), root=root, log=quiet)
    saved = RunStore(root).read("eval", guid)
    assert saved["guid"] == guid
    assert set(saved["results"]) == {blimp["key"], ppl["key"], limited["key"]} and again["key"] == blimp["key"]
    assert blimp["key"] == "blimp:blimp:final" and limited["key"] == "blimp:blimp:final:limit1"
    assert saved["results"][limited["key"]]["n_pairs"] == 3
    assert saved["results"][ppl["key"]]["perplexity"] == pytest.approx(ppl["perplexity"])
    assert again["paradigms"] == blimp["paradigms"]  # deterministic
    assert ppl["perplexity"] > 1 and "bits per byte" in format_table(ppl)
    assert Path(ppl["path"]) == root / "outputs" / f"eval_{guid}.json"

    with pytest.raises(ConfigError, match="--task 'mqarx'"):
        evaluate(guid, "mqarx", root=root, log=quiet)
    with pytest.raises(ConfigError, match="needs --data"):
        evaluate(guid, "blimp", root=root, log=quiet)
    with pytest.raises(ConfigError, match="needs --input"):
        evaluate(guid, "perplexity", root=root, log=quiet)
    with pytest.raises(RunError, match="no such BLiMP data directory"):
        evaluate(guid, "blimp", data=str(tmp_path / "nowhere"), root=root, log=quiet)
    with pytest.raises(CorpusError, match="no such input"):
        evaluate(guid, "perplexity", inputs=[str(tmp_path / "nowhere.txt")], root=root, log=quiet)
    with pytest.raises(RunError, match="no run"):
        evaluate("0" * 32, "blimp", data=str(blimp_dir), root=root, log=quiet)
    with pytest.raises(RunError, match="no learning-curve checkpoint"):
        evaluate(guid, "blimp", data=str(blimp_dir), root=root, checkpoint="1M", log=quiet)


# ---- the real BLiMP data (skipped when the shared data are not there) ----------------------------

def test_real_blimp_filtered_first_five_pairs_per_paradigm() -> None:
    directory = SHARED_DATA / "blimp_filtered_babylm"
    if not directory.is_dir():
        pytest.skip(f"{directory} is not available")
    pairs = load_blimp(directory, limit=5)
    assert len(pairs) == 67 * 5
    tokenizer = train_tokenizer("char", TEXT + "".join(p.good + p.bad for p in pairs))
    model = GPT(Config({"n_ctx": 64, "n_emb": 16, "n_heads": 2, "n_layers": 1, "seed": 1}), tokenizer.n_vocab)
    r = evaluate_blimp(model, tokenizer, pairs, log=quiet)
    assert r["n_pairs"] == 335 and r["n_paradigms"] == 67 and r["unknown_sentences"] == 0
    assert set(r["phenomena"]) == {
        "anaphor_agreement", "argument_structure", "binding", "control_raising", "determiner_noun_agreement",
        "ellipsis", "filler_gap_dependency", "irregular_forms", "island_effects", "npi_licensing",
        "quantifiers", "subject_verb_agreement"}
    assert r["phenomena"]["argument_structure"]["n_paradigms"] == 9  # 7 + the 2 s-selection paradigms
    assert sum(p["n_paradigms"] for p in r["phenomena"].values()) == 67
    assert 0.0 <= r["accuracy"] <= r["accuracy_babylm"] <= 1.0


# ---- Zorro -----------------------------------------------------------------------------------------

@pytest.fixture
def zorro_dir(tmp_path: Path) -> Path:
    d = tmp_path / "zorro"
    d.mkdir()
    (d / "agreement-a.txt").write_text("the dog runs .\nthe dog run .\nthe dogs run .\nthe dogs runs .",
                                       encoding="utf-8")
    (d / "agreement-b.txt").write_text("a cat .\na cats .\n", encoding="utf-8")
    (d / "binding-c.txt").write_text("she sees herself .\nshe sees himself .\nhe is .\nhe is .",
                                     encoding="utf-8")
    return d


def test_load_zorro_pairs_good_then_bad_with_phenomena(zorro_dir: Path) -> None:
    pairs = load_zorro(zorro_dir)
    assert [(p.good, p.bad) for p in pairs[:2]] == [("the dog runs .", "the dog run ."),
                                                    ("the dogs run .", "the dogs runs .")]
    assert [p.paradigm for p in pairs] == ["agreement-a"] * 2 + ["agreement-b"] + ["binding-c"] * 2
    assert {p.phenomenon for p in pairs} == {"agreement", "binding"}
    assert len(load_zorro(zorro_dir, limit=1)) == 3
    (zorro_dir / "odd-d.txt").write_text("one\ntwo\nthree", encoding="utf-8")
    with pytest.raises(RunError, match="odd-d.txt"):
        load_zorro(zorro_dir)
    (zorro_dir / "odd-d.txt").write_bytes(b"caf\xe9\nx")
    with pytest.raises(RunError, match="UTF-8"):
        load_zorro(zorro_dir)
    with pytest.raises(RunError, match="no such Zorro"):
        load_zorro(zorro_dir / "missing")


def test_zorro_scores_like_blimp_and_is_an_eval_task(tmp_path: Path, zorro_dir: Path) -> None:
    model, tokenizer = tiny_model()
    pairs = load_zorro(zorro_dir)
    r = evaluate_blimp(model, tokenizer, pairs, batch_size=2, log=quiet)
    scores = sentence_logprobs(model, tokenizer, [p.good for p in pairs] + [p.bad for p in pairs])
    good, bad = scores[:len(pairs)], scores[len(pairs):]
    a = float(numpy.mean(good[:2] > bad[:2]))
    assert r["paradigms"]["agreement-a"]["accuracy"] == a
    assert r["phenomena"]["agreement"]["accuracy"] == pytest.approx((a + float(good[2] > bad[2])) / 2)
    assert r["paradigms"]["binding-c"]["ties"] == 1  # "he is ." twice
    root = tmp_path / "runs"
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    guid = plans.train(TINY_RUN, [str(text)], root=root, log=quiet)
    lines: list[str] = []
    result = evaluate(guid, "zorro", data=str(zorro_dir), root=root, log=lines.append)
    assert result["key"] == "zorro:zorro:final" and result["n_pairs"] == 5
    assert any(line.startswith("Zorro") for line in lines)


def test_real_zorro_has_23_paradigms_of_2000_pairs() -> None:
    directory = SHARED_DATA / "zorro"
    if not directory.is_dir():
        pytest.skip(f"{directory} is not available")
    pairs = load_zorro(directory)
    assert len(pairs) == 46_000 and len({p.paradigm for p in pairs}) == 23
    assert pairs[0].good != pairs[0].bad
