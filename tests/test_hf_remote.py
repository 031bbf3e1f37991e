"""Remote-code export, over the whole registry: every mixer with mlp and with swi, every network with
mha, the seed's conv + induction + swi, post-norm, r_temp != 1 and the other switches. For each, the
exported directory, loaded by transformers with ``trust_remote_code=True``, computes our logits in
fp32 (1e-5) with left and with right padding under an ``attention_mask``; its greedy ``generate()``
gives our greedy tokens (past n_ctx too); and ``import --from DIR`` reads it back bit-exactly.
Skipped cleanly without torch / transformers / safetensors (the test extra)."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy
import pytest

from baby import device, plans, runs
from baby.__main__ import main
from baby.commands.export import export
from baby.config import Config, ConfigError
from baby.formats import architecture, model_to_dict
from baby.generate import generate, sampling_ids
from baby.hf import remote
from baby.nn import variants
from baby.nn.model import GPT
from baby.runs import RunStore, new_guid
from baby.tokenizers import PAD, Tokenizer, tokenizer_digest, tokenizer_from_dict, train_tokenizer
from tests.conftest import ROOT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

TEXT = (ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:4000]
BASE = {"c_tokenizer": "char", "n_ctx": 16, "n_emb": 16, "n_heads": 2, "n_layers": 2, "batch_size": 2, "n_steps": 1,
        "n_eval_batches": 1, "n_sample_tokens": 0, "seed": 11}
# settings a variant needs at this width, or that make it do something worth checking
VARIANT = {"gqa": {"n_heads": 4, "n_kv_heads": 2}, "rfa": {"s_window": 3}, "conv": {"n_conv_groups": 4},
           "induction": {"n_induction_heads": 2}, "moe": {"n_experts": 3, "n_top": 2}, "lor": {"n_rank": 4},
           "ggl": {"n_groups": 4}}


def ours_only(kind: str) -> list[str]:
    """The registry's variants of a kind (not the toy ones tests register)."""
    return [e.name for e in variants.entries(kind) if e.cls.__module__.startswith("baby.nn.")]


def case(mixers: str, network: str, **more: Any) -> dict[str, Any]:
    settings = {"c_attention": mixers, "c_network": network}
    for name in mixers.split("+") + [network]:
        settings.update(VARIANT.get(name, {}))
    return {**settings, **more}


CASES = {f"{m}-{n}": case(m, n) for m in ours_only("mixer") for n in ("mlp", "swi")}
CASES.update({f"mha-{n}": case("mha", n) for n in ours_only("network") if n not in ("mlp", "swi")})
CASES.update({
    "seed-conv+induction-swi": case("conv+induction", "swi"),
    "seed-post-norm": case("conv+induction", "swi", c_sequence="post"),
    "mha-mlp-post-norm": case("mha", "mlp", c_sequence="post"),
    "seed-r_temp-rms-untied-nobias": case("conv+induction", "swi", r_temp=1.5, c_norm="rms", c_tie=False, c_bias=False),
    "mha-mlp-untied-head_bias-post-norm": case("mha", "mlp", c_tie=False, c_head_bias=True, c_sequence="post"),
    "conv-static+induction-nosink": case("conv+induction", "mlp", c_conv_static=True, c_induction_sink=False,
                                         s_conv_dilations="1,3", n_conv_taps=2),
    "moh-moe-r_temp-rope": case("moh", "moe", r_temp=0.7, c_position="rope"),
    "swh-r_temp-rope-head_size": case("swh", "gln", r_temp=0.5, c_position="rope", head_size=24,
                                      c_norm="rms", c_norm_final="layer"),
    "rfa-rope-untied": case("rfa", "nft", c_position="rope", c_tie=False, s_window=5),
    "gla+aft-nopos-nobias-head_size-head_bias": case("gla+aft", "ggl", c_position="none", c_bias=False, head_size=24,
                                                     c_head_bias=True),
    "gqa-swi-llama-r_temp": case("gqa", "swi", c_norm="rms", c_position="rope", c_bias=False, r_temp=2.0),
    "mha-no-network": case("mha", ""),
    "no-blocks": case("conv", "swi", n_layers=0),  # a bigram model
})
NATIVE = {"mha-mlp"}  # GPT-2's shape: exported as GPT2LMHeadModel, checked here all the same


def quiet(_: str) -> None:
    pass


def shaken(model: GPT) -> GPT:
    """The weights shaken by N(0, 0.3): at init (std 0.02) the logits are nearly flat, and greedy choices
    would hang on differences of 1e-7."""
    rng = numpy.random.default_rng(7)
    for _, p in model.named_parameters():
        p.data += rng.normal(0.0, 0.3, p.shape).astype(p.data.dtype)
    return model


def make_run(root: Path, settings: dict[str, Any], tokenizer: Tokenizer | None = None) -> str:
    """A run of these settings, untrained, written as ``import`` writes one (no training step: the
    registry-wide test stays fast)."""
    cfg = device.select(Config({**BASE, **settings}))
    tokenizer = tokenizer or train_tokenizer("char", TEXT)
    model = shaken(GPT(cfg, tokenizer.n_vocab))
    store, guid = RunStore(root), new_guid()
    store.write("tokenizer", guid, tokenizer.to_dict())
    store.write("model", guid, model_to_dict(model))
    store.write("config", guid, {"guid": guid, "settings": cfg.to_dict(), "runtime": {
        "n_vocab": tokenizer.n_vocab, "tokenizer_sha256": tokenizer_digest(tokenizer)}})
    return guid


def trained_run(root: Path, settings: dict[str, Any]) -> str:
    """A run of these settings trained by ``plans.train`` (for its learning-curve checkpoints)."""
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    return plans.train({**BASE, **settings}, [str(corpus)], root=root, log=quiet)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("remote")


@pytest.fixture(scope="module", params=list(CASES))
def exported(request: pytest.FixtureRequest, root: Path) -> dict[str, Any]:
    name = request.param
    guid = make_run(root, CASES[name])
    folder = export(guid, root / f"hf-{name}", root=root, log=quiet)
    run = runs.Run(RunStore(root), guid)
    model = run.model()
    model.eval()
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    return {"name": name, "guid": guid, "folder": folder, "run": run, "model": model, "hf": hf}


def padded_batch(tokenizer: Any, side: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Three rows of 16, 11 and 6 tokens (with repeats, for induction) padded to 16 on one side."""
    rows = [tokenizer.encode(TEXT[i:i + 60])[:n] for i, n in ((200, 16), (900, 11), (1500, 6))]
    ids, valid = numpy.full((3, 16), PAD, numpy.int64), numpy.zeros((3, 16), bool)
    for r, row in enumerate(rows):
        cols = slice(16 - len(row), 16) if side == "left" else slice(0, len(row))
        ids[r, cols], valid[r, cols] = row, True
    return ids, valid


def their_logits(hf: Any, ids: numpy.ndarray, valid: numpy.ndarray | None, native: bool) -> numpy.ndarray:
    args: dict[str, Any] = {"input_ids": torch.tensor(ids)}
    if valid is not None:
        args["attention_mask"] = torch.tensor(valid.astype(numpy.int64))
        if native:  # HF's own classes take positions from the caller; ours count real tokens, as ours do
            args["position_ids"] = torch.tensor(numpy.maximum(valid.cumsum(1) - 1, 0))
    with torch.no_grad():
        return hf(**args).logits.numpy()


def test_exports_as_remote_code_unless_hf_has_the_class(exported: dict) -> None:
    config = json.loads((exported["folder"] / "config.json").read_text())
    if exported["name"] in NATIVE:
        assert config["architectures"] == ["GPT2LMHeadModel"] and "auto_map" not in config
        return
    assert config["architectures"] == ["BabyForCausalLM"] and config["auto_map"] == remote.AUTO_MAP
    for name in remote.FILES:
        assert (exported["folder"] / name).read_text() == (remote.SOURCE / name).read_text()
    assert config["sequence"] == CASES[exported["name"]].get("c_sequence", "pre")


@pytest.mark.parametrize("side", ["left", "right", None])
def test_transformers_computes_our_logits(exported: dict, side: str | None) -> None:
    model, hf, native = exported["model"], exported["hf"], exported["name"] in NATIVE
    ids, valid = padded_batch(exported["run"].tokenizer, side or "left")
    if side is None:  # no padding, no mask: the full rows only
        ids, valid = ids[:1], None
    ours = model.forward(ids, model.context(ids, valid=valid))
    theirs = their_logits(hf, ids, valid, native)
    real = numpy.ones(ids.shape, bool) if valid is None else valid
    worst = float(numpy.abs(ours - theirs)[real].max())
    print(f"\n{exported['name']} {side}: worst logit difference {worst:.2e}")
    assert worst <= 1e-5
    if not native:  # the remote-code model treats padding positions as ours do, too
        assert numpy.abs(ours - theirs).max() <= 1e-5


def test_greedy_generate_gives_our_tokens(exported: dict) -> None:
    run, model, hf, native = exported["run"], exported["model"], exported["hf"], exported["name"] in NATIVE
    prompts = [run.tokenizer.encode(s).tolist() for s in ("ROMEO:", "To be, or")]
    # HF's GPT-2 has n_ctx position rows and no window: stay inside them; the remote-code model slides on
    steps = 16 - len(prompts[1]) if native else 20
    ours = [generate(model, p, steps, temperature=0.0, **sampling_ids(run.tokenizer)).tokens for p in prompts]
    for prompt, expected in zip(prompts, ours):
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          do_sample=False, max_new_tokens=steps)
        assert out[0, len(prompt):].tolist() == expected
    if native:
        return
    # a left-padded batch: each row as if alone
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=steps)
    for row, expected in zip(out[:, width:].tolist(), ours):
        assert row[:len(expected)] == expected


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_import_reads_the_directory_back_bit_exactly(exported: dict, root: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    status, out, err = cli(capsys, "import", "--from", str(exported["folder"]), "--root", str(root))
    assert status == 0, err
    new, store = out.split()[-1], RunStore(root)
    assert store.read("model", new)["tensors"] == store.read("model", exported["guid"])["tensors"]
    assert architecture(runs.Run(store, new).cfg) == architecture(exported["run"].cfg)


# ---- one run each ---------------------------------------------------------------------------------

def test_the_remote_code_implements_exactly_the_registry() -> None:
    tree = ast.parse((remote.SOURCE / "modeling_baby.py").read_text(encoding="utf-8"))
    tables = {node.target.id: sorted(k.value for k in node.value.keys) for node in tree.body
              if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Dict)}
    assert tables["MIXERS"] == sorted(remote.IMPLEMENTED["mixer"]) == sorted(ours_only("mixer"))
    assert tables["NETWORKS"] == sorted(remote.IMPLEMENTED["network"]) == sorted(ours_only("network"))


def test_a_learning_curve_checkpoint_exports_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    guid = trained_run(tmp_path, {**case("conv+induction", "swi"), "n_steps": 8, "s_checkpoint_words": "20"})
    out = tmp_path / "chck_20"
    status, text, err = cli(capsys, "export", "--guid", guid, "--checkpoint", "20", "--out", str(out),
                            "--root", str(tmp_path))
    assert status == 0 and "checkpoint 20" in text and "trust_remote_code" in text, err
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "np") as f:
        assert f.metadata()["baby_checkpoint"] == "20"
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    model = runs.Run(RunStore(tmp_path), guid).model("20")
    model.eval()
    ids = runs.Run(RunStore(tmp_path), guid).tokenizer.encode(TEXT[:40])[:16][None].astype(numpy.int64)
    assert numpy.abs(model.forward(ids) - their_logits(hf, ids, None, False)).max() <= 1e-5


def test_what_the_remote_code_lacks_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    guid = make_run(tmp_path, case("conv+induction", "mlp"))
    monkeypatch.setitem(remote.IMPLEMENTED, "mixer", ("mha",))  # as for a variant added without its twin
    status, _, err = cli(capsys, "export", "--guid", guid, "--out", str(tmp_path / "x"), "--root", str(tmp_path))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "c_attention='conv'" in err and "no PyTorch twin" in err
    assert not (tmp_path / "x").exists()


def test_an_edited_remote_config_is_refused_naming_the_field(tmp_path: Path) -> None:
    guid = make_run(tmp_path, case("rfa", "swi"))
    folder = export(guid, tmp_path / "hf", root=tmp_path, log=quiet)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "window": 7}))
    with pytest.raises(ConfigError, match="window=7"):
        plans.import_hf(folder, root=tmp_path / "runs", log=quiet)
    assert not (tmp_path / "runs").exists()


def test_a_remote_model_saved_again_by_transformers_comes_back_bit_exact(tmp_path: Path) -> None:
    guid = make_run(tmp_path, case("conv+induction", "swi", c_tie=False, c_sequence="post"))
    folder = export(guid, tmp_path / "hf", root=tmp_path, log=quiet)
    saved = tmp_path / "saved"
    transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).save_pretrained(saved)
    transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True).save_pretrained(saved)
    assert (saved / "modeling_baby.py").exists()  # transformers copies the remote code along
    new = plans.import_hf(saved, root=tmp_path, log=quiet)
    store = RunStore(tmp_path)
    assert store.read("model", new)["tensors"] == store.read("model", guid)["tensors"]


@pytest.mark.parametrize("kind", ["char", "word"])
def test_the_original_little_babys_vocabulary_keeps_its_ids(tmp_path: Path, kind: str) -> None:
    pieces = sorted(set(TEXT if kind == "char" else TEXT.split()))
    tokenizer = tokenizer_from_dict({"kind": kind, "pieces": pieces, "original": True})  # no specials at all
    guid = make_run(tmp_path, case("mha", "mlp", c_tokenizer=kind, c_tie=False, c_head_bias=True, c_sequence="post"),
                    tokenizer)
    folder = export(guid, tmp_path / "hf", root=tmp_path, log=quiet)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    text = TEXT[TEXT.index(" ", 300):TEXT.rindex(" ", 0, 900)]  # whole words, newlines inside
    ids = tokenizer.encode(text).tolist()
    assert fast(text, add_special_tokens=False)["input_ids"] == ids
    assert fast.decode(ids) == tokenizer.decode(ids)
    config = json.loads((folder / "generation_config.json").read_text())
    assert config["suppress_tokens"] == [] and config["eos_token_id"] is None  # every id may be sampled
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    model = runs.Run(RunStore(tmp_path), guid).model()
    prompt = ids[:4]
    ours = generate(model, prompt, 20, temperature=0.0, **sampling_ids(tokenizer)).tokens
    assert hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20)[0, 4:].tolist() == ours
    new = plans.import_hf(folder, root=tmp_path, log=quiet)
    store = RunStore(tmp_path)
    assert store.read("tokenizer", new) == store.read("tokenizer", guid)
    assert store.read("model", new)["tensors"] == store.read("model", guid)["tensors"]
