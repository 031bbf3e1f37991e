"""The original Little Baby's run files come in (``baby/original.py``, ``python -m baby import --from DIR``).

Two kinds of evidence:
  * the sample the original's own code wrote (``shared/data/original_models/mha_mlp``): the imported
    run's float64 logits against the original's (mha + mlp, pre-norm, char);
  * every other variant the importer reads, against the documented format only: ``write_original``
    writes random weights in the original's file layout (ORIGINAL_FORMAT.md) and ``original_logits``
    computes the documented math in plain NumPy, independently of ``baby.nn``. The same reference is
    first held against the sample's real logits, so it is the original's math where the sample reaches.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy
import pytest

from baby import backend
from baby.commands.import_ import import_run
from baby.config import ConfigError
from baby.formats import FormatError
from baby.generate import empty_prompt, sampling_ids
from baby.original import REFUSED, import_original
from baby.runs import Run, RunStore

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "original_models" / "mha_mlp"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="the original's sample is not beside the repository")
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll: Speak, speak.\n"
GUID = "0d6f3c1e-5b7a-4c2d-9e8f-1a2b3c4d5e6f"


# ---- the documented math, in plain NumPy ------------------------------------------------------------

def layer_norm(x: numpy.ndarray, gamma: numpy.ndarray, beta: numpy.ndarray) -> numpy.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # population variance
    return gamma * (x - mean) / numpy.sqrt(var + 1e-5) + beta


def softmax(z: numpy.ndarray) -> numpy.ndarray:
    e = numpy.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def gelu(x: numpy.ndarray) -> numpy.ndarray:  # the tanh form
    return 0.5 * x * (1 + numpy.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def sigmoid(x: numpy.ndarray) -> numpy.ndarray:
    return 1 / (1 + numpy.exp(-x))


def attention(w: dict[str, numpy.ndarray], key: str, name: str, x: numpy.ndarray, s: dict[str, Any]) -> numpy.ndarray:
    heads, temp = s["n_heads"], max(s["r_temp"], 1e-6)
    d = s["s_head"] // heads
    q, k, v = x @ w[key + "q_weight"], x @ w[key + "k_weight"], x @ w[key + "v_weight"]
    n_kv, t = k.shape[1] // d, len(x)
    mask = numpy.triu(numpy.full((t, t), -1e9), k=1)
    outs = []
    for j in range(heads):
        g = j // (heads // n_kv)  # gqa: blocks of consecutive query heads share one key/value head
        scores = q[:, j * d:(j + 1) * d] @ k[:, g * d:(g + 1) * d].T / (math.sqrt(d) * temp) + mask
        outs.append(softmax(scores) @ v[:, g * d:(g + 1) * d])
    if name in ("mha", "gqa"):
        return numpy.concatenate(outs, axis=1) @ w[key + "c_weight"] + w[key + "c_bias"]
    logits = x @ w[key + "g_weight"] / temp
    p = softmax(logits) if name == "moh" else numpy.eye(heads)[logits.argmax(-1)]  # swh: the top-1 head
    y = sum(p[:, j:j + 1] * outs[j] for j in range(heads))
    return y @ w[key + "m_weight"] + w[key + "m_bias"]


def network(w: dict[str, numpy.ndarray], key: str, name: str, x: numpy.ndarray) -> numpy.ndarray:
    def lin(part: str, h: numpy.ndarray) -> numpy.ndarray:
        return h @ w[f"{key}{part}_weight"] + w[f"{key}{part}_bias"]

    if name == "mlp":
        return lin("proj_dn", gelu(lin("proj_up", x)))
    if name == "swi":
        gate = lin("c_proj_gt", x)
        return lin("c_proj_dn", lin("c_proj_up", x) * gate * sigmoid(gate))
    if name == "gln":
        return lin("c", x) * sigmoid(lin("g", x))
    p = softmax(x @ w[key + "g_weight"])  # moe: dense
    return sum(p[:, e:e + 1] * lin(f"expert_{e}_dn", gelu(lin(f"expert_{e}_up", x))) for e in range(p.shape[1]))


def original_logits(model: dict[str, Any], s: dict[str, Any], ids: list[int]) -> numpy.ndarray:
    """ORIGINAL_FORMAT.md's eval-mode forward of one sequence: (T, V) float64 logits."""
    w = {k: numpy.asarray(v, numpy.float64) for k, v in model.items()}
    x = w["wte_weight"][ids] + w["wpe_weight"][numpy.arange(len(ids)) % s["n_ctx"]]
    for i in range(s["n_layers"]):
        b = f"block_{i}_"
        ln1, ln2 = (w[b + "ln1_gamma"], w[b + "ln1_beta"]), (w[b + "ln2_gamma"], w[b + "ln2_beta"])
        att_key, net_key = f"{b}{s['c_attention']}_", f"{b}{s['c_network']}_"
        if s["c_sequence"] == "pre":
            x = x + attention(w, att_key, s["c_attention"], layer_norm(x, *ln1), s)
            x = x + network(w, net_key, s["c_network"], layer_norm(x, *ln2))
        else:
            a = layer_norm(x + attention(w, att_key, s["c_attention"], x, s), *ln1)
            x = layer_norm(a + network(w, net_key, s["c_network"], a), *ln2)
    return layer_norm(x, w["ln_f_gamma"], w["ln_f_beta"]) @ w["lm_head_weight"] + w["lm_head_bias"]


# ---- files in the original's documented format (a writer for the tests only) -------------------------

def original_tensors(s: dict[str, Any], n_vocab: int, rng: numpy.random.Generator, n_kv: int = 0) -> dict[str, Any]:
    """Random weights with the documented names and shapes; norms and biases off their init values."""
    big, emb, width, heads = 0.3, s["n_emb"], s["s_head"], s["n_heads"]
    d, f = width // heads, 4 * emb

    def mat(*shape: int) -> list:
        return (rng.standard_normal(shape) * big).tolist()

    def vec(n: int, centre: float = 0.0) -> list:
        return (centre + 0.1 * rng.standard_normal(n)).tolist()

    out: dict[str, Any] = {"wte_weight": mat(n_vocab, emb), "wpe_weight": mat(s["n_ctx"], emb),
                           "ln_f_gamma": vec(emb, 1.0), "ln_f_beta": vec(emb),
                           "lm_head_weight": mat(emb, n_vocab), "lm_head_bias": vec(n_vocab)}
    for i in range(s["n_layers"]):
        b = f"block_{i}_"
        out.update({b + "ln1_gamma": vec(emb, 1.0), b + "ln1_beta": vec(emb), b + "ln2_gamma": vec(emb, 1.0),
                    b + "ln2_beta": vec(emb)})
        a = f"{b}{s['c_attention']}_"
        kv = (n_kv or max(1, heads // 4)) * d if s["c_attention"] == "gqa" else width
        out.update({a + "q_weight": mat(emb, width), a + "k_weight": mat(emb, kv), a + "v_weight": mat(emb, kv)})
        if s["c_attention"] in ("mha", "gqa"):
            out.update({a + "c_weight": mat(width, emb), a + "c_bias": vec(emb)})
        else:
            out.update({a + "g_weight": mat(emb, heads), a + "m_weight": mat(d, emb), a + "m_bias": vec(emb)})
        n = f"{b}{s['c_network']}_"
        parts = {"mlp": [("proj_up", emb, f), ("proj_dn", f, emb)],
                 "swi": [("c_proj_up", emb, f), ("c_proj_gt", emb, f), ("c_proj_dn", f, emb)],
                 "gln": [("c", emb, emb), ("g", emb, emb)]}.get(s["c_network"])
        if parts is None:  # moe: 3 experts of expansion 2, and the bare numbers the file carries
            out.update({n + "g_weight": mat(emb, 3), n + "n_experts": 3, n + "n_expansion": 2})
            parts = [(f"expert_{e}_{p}", *io) for e in range(3) for p, io in (("up", (emb, 2 * emb)), ("dn", (2 * emb, emb)))]
        for part, n_in, n_out in parts:
            out.update({f"{n}{part}_weight": mat(n_in, n_out), f"{n}{part}_bias": vec(n_out)})
    return out


def write_original(folder: Path, settings: dict[str, Any], text: str = TEXT, seed: int = 0,
                   n_kv: int = 0) -> dict[str, Any]:
    """config_, tokenizer_ and model_<GUID>.json as the original writes them; returns the settings."""
    s = {"c_tokenizer": "char", "c_sequence": "pre", "c_attention": "mha", "c_network": "mlp", "d_type": "fp64",
         "n_ctx": 16, "n_emb": 16, "s_head": 16, "n_heads": 4, "n_layers": 2, "r_temp": 1, **settings}
    vocab = sorted(set(text.split() if s["c_tokenizer"] == "word" else text))
    config = {"c_device": "cpu", "c_device_cpu_cores": "1", "c_device_gpu_cuda": "auto", "c_optimizer": "adamw",
              **s, "n_epochs": 1, "s_batch": 64, "r_dropout": 0.1, "r_learn": 0.01, "s_warmup": "none",
              "c_shuffle": False, "r_split": 0.9, "runtime": {"model_version": "v0.1.25", "model_params": 0}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"config_{GUID}.json").write_text(json.dumps(config, indent=4))
    (folder / f"tokenizer_{GUID}.json").write_text(json.dumps({"vocab": vocab, "vocab_size": len(vocab)}, indent=4))
    model = original_tensors(s, len(vocab), numpy.random.default_rng(seed), n_kv)
    (folder / f"model_{GUID}.json").write_text(json.dumps(model, indent=4))
    return s


def imported_logits(root: Path, guid: str, ids: list[int]) -> numpy.ndarray:
    model = Run(RunStore(root), guid).model()
    model.eval()
    return backend.to_host(model.forward(backend.asarray(numpy.array([ids]))))[0].astype(numpy.float64)


def probabilities(logits: numpy.ndarray) -> numpy.ndarray:
    return softmax(numpy.asarray(logits, numpy.float64))


def run_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.json"))


# ---- the sample the original wrote --------------------------------------------------------------------

@needs_sample
def test_the_documented_math_reproduces_the_samples_logits() -> None:
    """The tests' reference forward is the original's where a real file reaches (mha + mlp, pre)."""
    reference = json.loads((SAMPLE / "reference_logits.json").read_text())
    model = json.loads(next(SAMPLE.glob("model_*.json")).read_text())
    s = {**reference["settings"], "s_head": reference["settings"]["s_head"]}
    for seq in reference["sequences"]:
        assert numpy.abs(original_logits(model, s, seq["ids"]) - numpy.array(seq["logits"])).max() <= 1e-12


@needs_sample
def test_the_imported_sample_gives_the_originals_next_token_distribution(tmp_path: Path) -> None:
    reference = json.loads((SAMPLE / "reference_logits.json").read_text())
    guid = import_run(SAMPLE, tmp_path, log=lambda _: None)
    run = Run(RunStore(tmp_path), guid)
    assert run.tokenizer.n_vocab == 53 and run.tokenizer.bos_id is None  # the original's 53 ids, no specials
    assert run.cfg.d_type == "fp64" and not run.cfg.c_tie and run.cfg.c_head_bias
    worst_logit = worst_probability = 0.0
    for seq in reference["sequences"]:
        assert run.tokenizer.encode(seq["text"]).tolist() == seq["ids"]  # the original's ids
        ours, theirs = imported_logits(tmp_path, guid, seq["ids"]), numpy.array(seq["logits"])
        assert ours.shape == theirs.shape == (len(seq["ids"]), 53)
        worst_logit = max(worst_logit, float(numpy.abs(ours - theirs).max()))
        worst_probability = max(worst_probability, float(numpy.abs(probabilities(ours) - probabilities(theirs)).max()))
    print(f"mha_mlp sample: worst |logit diff| {worst_logit:.3g}, worst |probability diff| {worst_probability:.3g}")
    assert worst_logit <= 1e-9 and worst_probability <= 1e-9


# ---- every variant the format covers, against the documented format -----------------------------------

CASES = {
    "mha-mlp-post-temp": {"c_sequence": "post", "r_temp": 0.7},
    "gqa-swi": {"c_attention": "gqa", "c_network": "swi", "n_heads": 8},  # Hkv = max(1, 8 // 4) = 2
    "gqa-gln-post-one-kv-head": {"c_attention": "gqa", "c_network": "gln", "c_sequence": "post"},  # Hkv = 1
    "moh-mlp-temp": {"c_attention": "moh", "r_temp": 1.6, "s_head": 24},  # head_size != n_emb
    "moh-moe-post": {"c_attention": "moh", "c_network": "moe", "c_sequence": "post", "r_temp": 0.8},
    "swh-gln-temp": {"c_attention": "swh", "c_network": "gln", "r_temp": 0.5},
    "swh-swi-post": {"c_attention": "swh", "c_network": "swi", "c_sequence": "post"},
    "mha-moe-temp": {"c_attention": "mha", "c_network": "moe", "r_temp": 2.0},
    "word-mha-mlp": {"c_tokenizer": "word", "n_layers": 1},
    "fp32-swh-moe-post": {"d_type": "fp32", "c_attention": "swh", "c_network": "moe", "c_sequence": "post"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_variant_round_trips_the_documented_format(tmp_path: Path, case: str) -> None:
    s = write_original(tmp_path / "original", CASES[case], seed=len(case))
    guid = import_original(tmp_path / "original", tmp_path / "runs", log=lambda _: None)
    run = Run(RunStore(tmp_path / "runs"), guid)
    model = json.loads((tmp_path / "original" / f"model_{GUID}.json").read_text())
    text = "Speak, speak. First Citizen: Before we proceed"
    ids = run.tokenizer.encode(text).tolist()[:s["n_ctx"]]
    assert len(ids) >= 5
    ours, theirs = imported_logits(tmp_path / "runs", guid, ids), original_logits(model, s, ids)
    worst = float(numpy.abs(ours - theirs).max())
    print(f"{case}: worst |logit diff| {worst:.3g}, worst |probability diff| "
          f"{float(numpy.abs(probabilities(ours) - probabilities(theirs)).max()):.3g}")
    assert worst <= (1e-9 if s["d_type"] == "fp64" else 1e-4)  # an fp32 original computes in fp32, as the run does


def test_gqa_takes_its_key_value_heads_from_the_shape(tmp_path: Path) -> None:
    write_original(tmp_path / "original", {"c_attention": "gqa", "n_heads": 8}, n_kv=4)
    guid = import_original(tmp_path / "original", tmp_path, log=lambda _: None)
    assert Run(RunStore(tmp_path), guid).cfg.n_kv_heads == 4


# ---- what is refused, in one line, with nothing written ----------------------------------------------------

@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_variant_whose_math_differs_is_refused_by_name(tmp_path: Path, name: str) -> None:
    key = "c_attention" if name in ("aft", "gla", "rfa") else "c_network"
    write_original(tmp_path / "original", {})
    config = tmp_path / "original" / f"config_{GUID}.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), key: name}))
    with pytest.raises(ConfigError, match=f"{key}='{name}'") as err:
        import_original(tmp_path / "original", tmp_path / "runs")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists() or not run_files(tmp_path / "runs")


def damage(folder: Path, kind: str, change: Any) -> None:
    path = folder / f"{kind}_{GUID}.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data).replace('"__NaN__"', "NaN"))


@pytest.mark.parametrize("kind, change, message", [
    ("model", lambda d: d.pop("block_1_mha_c_bias"), "block_1_mha_c_bias missing"),
    ("model", lambda d: d.update(block_0_mha_q_bias=[0.0] * 16), "do not have"),
    ("model", lambda d: d.update(lm_head_bias=d["lm_head_bias"][:-1]), "lm_head_bias has shape"),
    ("model", lambda d: d["block_0_ln1_gamma"].__setitem__(3, "__NaN__"), "NaN"),
    ("model", lambda d: d.update(block_0_mha_k_weight=[[1.0] * 16] * 15), "block_0_mha_k_weight has shape"),
    ("tokenizer", lambda d: d.update(vocab_size=3), "vocab_size=3"),
    ("tokenizer", lambda d: d["vocab"].__setitem__(1, d["vocab"][0]), "repeats"),
    ("config", lambda d: d.pop("n_heads"), "n_heads missing"),
    ("config", lambda d: d.update(r_temp=1e-5), "r_temp"),
    ("config", lambda d: d.update(c_tokenizer="bpe"), "char and word"),
], ids=["missing-key", "extra-key", "wrong-shape", "nan", "ragged", "vocab-size", "repeated-piece", "no-heads",
        "tiny-temperature", "bpe"])
def test_a_damaged_file_is_refused_in_one_line_before_anything_is_written(tmp_path: Path, kind: str, change: Any,
                                                                         message: str) -> None:
    write_original(tmp_path / "original", {})
    damage(tmp_path / "original", kind, change)
    with pytest.raises((ConfigError, FormatError), match=message) as err:
        import_original(tmp_path / "original", tmp_path / "runs")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists() or not run_files(tmp_path / "runs")


def test_gqa_heads_that_do_not_group_evenly_are_refused(tmp_path: Path) -> None:
    write_original(tmp_path / "original", {"c_attention": "gqa", "n_heads": 6, "s_head": 24}, n_kv=4)  # 6 % 4
    with pytest.raises(ConfigError, match="do not group n_heads=6"):
        import_original(tmp_path / "original", tmp_path / "runs")


def test_a_folder_of_two_runs_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    write_original(tmp_path / "two", {})
    (tmp_path / "two" / "model_11111111-2222-3333-4444-555555555555.json").write_text("{}")
    with pytest.raises(FormatError, match="holds files of 2 runs"):
        import_original(tmp_path / "two", tmp_path / "runs")
    write_original(tmp_path / "one", {})
    (tmp_path / "one" / f"model_{GUID}.json").unlink()
    with pytest.raises(FormatError, match="lacks its model file"):
        import_run(tmp_path / "one", tmp_path / "runs")


def test_the_cli_refuses_with_status_2_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from baby.__main__ import main
    write_original(tmp_path / "original", {"c_network": "ggl"})
    assert main(["import", "--root", str(tmp_path / "runs"), "--from", str(tmp_path / "original")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "c_network='ggl'" in err and "shuffles" in err


# ---- the imported sample through every command ------------------------------------------------------------

@pytest.fixture
def sample_run(tmp_path: Path) -> tuple[Path, str]:
    if not SAMPLE.is_dir():
        pytest.skip("the original's sample is not beside the repository")
    return tmp_path, import_run(SAMPLE, tmp_path, log=lambda _: None)


def test_info_and_inference_use_the_imported_run(sample_run: tuple[Path, str]) -> None:
    from baby.commands.inference import inference
    from baby.commands.info import run_info
    root, guid = sample_run
    info = run_info(guid, root)
    assert info is not None
    run = Run(RunStore(root), guid)
    assert sampling_ids(run.tokenizer) == {"banned": (), "stop": ()}  # every id may be sampled, as there
    assert empty_prompt(run.tokenizer) == [0]  # the original's generate() starts an empty prompt from id 0
    record = inference(guid, prompt="ROMEO:", max_tokens=12, seed=1, root=root, log=lambda _: None)
    assert len(record["tokens"]) == 12 and all(0 <= t < 53 for t in record["tokens"])
    assert len(inference(guid, max_tokens=5, root=root, log=lambda _: None)["tokens"]) == 5
    with pytest.raises(ConfigError, match="'Z' is not in this run's vocabulary"):
        inference(guid, prompt="Zounds", max_tokens=3, root=root, log=lambda _: None)


def test_eval_scores_the_imported_run_without_bos(sample_run: tuple[Path, str]) -> None:
    from baby.commands.eval import evaluate
    root, guid = sample_run
    (root / "held.txt").write_text("Before we proceed any further, hear me speak.\n")
    result = evaluate(guid, "perplexity", inputs=[str(root / "held.txt")], root=root, log=lambda _: None)
    assert result["predicted_tokens"] == len("Before we proceed any further, hear me speak.\n") - 1  # no <bos>/<eos>
    blimp = root / "blimp"
    blimp.mkdir()
    rows = [{"sentence_good": "Who are you.", "sentence_bad": "Who you are.", "UID": "p", "linguistics_term": "t"},
            {"sentence_good": "Zed is here.", "sentence_bad": "Here Zed is.", "UID": "p", "linguistics_term": "t"}]
    (blimp / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines: list[str] = []
    result = evaluate(guid, "blimp", data=str(blimp), root=root, log=lines.append)
    assert result["n_pairs"] == 1 and result["left_out_pairs"] == 1 and result["scored_from"] == "second token"
    assert any("no <bos>" in line for line in lines)


def test_finetune_trains_the_imported_run_further(sample_run: tuple[Path, str]) -> None:
    from baby.commands.finetune import finetune
    root, guid = sample_run
    (root / "more.txt").write_text("MENENIUS: What work's, my countrymen, in hand? Where go you? #42 ~ {z}\n" * 10)
    finetune(guid, [str(root / "more.txt")], root, {"n_steps": 2, "batch_size": 2}, log=lambda _: None)
    run = Run(RunStore(root), guid, "_finetuned")
    assert run.tokenizer.bos_id is None and run.tokenizer.n_vocab > 53  # new symbols appended, old ids kept
    assert run.tokenizer.pieces[:53] == Run(RunStore(root), guid).tokenizer.pieces


def test_export_keeps_the_originals_vocabulary_or_refuses(sample_run: tuple[Path, str]) -> None:
    from baby.commands.export import export
    root, guid = sample_run
    try:
        out = Path(export(guid, root / "exported", root=root, log=lambda _: None))
    except (ConfigError, FormatError) as err:
        assert "\n" not in str(err)
        return
    document = json.loads((out / "tokenizer.json").read_text())
    pieces = Run(RunStore(root), guid).tokenizer.pieces
    assert document["model"]["vocab"] == {p: i for i, p in enumerate(pieces)} and not document.get("added_tokens")
