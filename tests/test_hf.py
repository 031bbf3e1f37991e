"""Hugging Face interchange, native classes (GPT-2, LLaMA): exported models compute our logits in
transformers, the exported tokenizer gives our ids, BLiMP scores agree, and export -> import is
bit-exact; refusals name the setting or field. Remote-code exports: tests/test_hf_remote.py.
Skipped cleanly without torch / transformers / safetensors (the test extra)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy
import pytest

from baby import plans, runs
from baby.__main__ import main
from baby.commands.export import export
from baby.commands.import_ import import_run, read_safetensors
from baby.config import Config, ConfigError
from baby.evaluate.scoring import sentence_logprobs
from baby.hf import layout
from baby.hf.tokenizer import from_hf, to_hf
from baby.runs import RunError, RunStore
from baby.tokenizers import train_tokenizer
from baby.train import Interrupted
from tests.conftest import ROOT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

TEXT = (ROOT / "inputs" / "shakespeare.txt").read_text(encoding="utf-8")[:6000]
VARIED = ("Hello  world!\n\nI'm  café naïve — 😀🎉 emoji, 12345 digits; they'll DON'T it's\t tabs  \n"
          "  x² ½ e\u0301 日本語 _under_score__ 'S   trailing   ")
BASE = {"n_ctx": 16, "n_emb": 16, "n_heads": 2, "n_layers": 2, "batch_size": 4, "n_steps": 6, "n_eval_batches": 1,
        "n_sample_tokens": 4, "c_tokenizer": "bpe", "n_vocab": 300}
SHAPES = {
    "gpt2": {},  # the original default shape, tied
    "gpt2-untied": {"c_tie": False},
    "llama": {"c_network": "swi", "c_norm": "rms", "c_position": "rope", "c_bias": False, "r_hidden": 2.5},
    "llama-gqa": {"c_attention": "gqa", "n_heads": 4, "n_kv_heads": 2, "c_network": "swi", "c_norm": "rms",
                  "c_position": "rope", "c_bias": False, "c_tie": False, "head_size": 24},
}
PAIRS = [("The cat sleeps.", "The cat sleep."), ("Many dogs bark.", "Many dogs barks."),
         ("She herself left.", "She himself left.")]


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, Path]]:
    root = tmp_path_factory.mktemp("hf")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = {}
    for name, shape in SHAPES.items():
        guid = plans.train({**BASE, **shape}, [str(corpus)], root=root, log=quiet)
        out[name] = (root, guid, export(guid, root / f"hf-{name}", root=root, log=quiet))
    return out


def copied(folder: Path, target: Path) -> Path:
    """A copy of an exported directory, to edit."""
    target.mkdir()
    for f in folder.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def our_model(root: Path, guid: str):
    run = runs.Run(RunStore(root), guid)
    model = run.model()
    model.eval()
    return run, model


@pytest.mark.parametrize("name", SHAPES)
def test_transformers_computes_our_logits(exported: dict, name: str) -> None:
    root, guid, folder = exported[name]
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(hf).__name__ == (layout.GPT2 if name.startswith("gpt2") else layout.LLAMA)
    run, model = our_model(root, guid)
    ids = run.tokenizer.encode(TEXT[1000:1300])[:16][None].astype(numpy.int64)
    with torch.no_grad():
        theirs = hf(torch.tensor(ids)).logits.numpy()
    assert numpy.abs(model.forward(ids) - theirs).max() <= 1e-5


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa"])
def test_blimp_scores_through_transformers_equal_ours(exported: dict, name: str) -> None:
    root, guid, folder = exported[name]
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    run, model = our_model(root, guid)
    sentences = [s for pair in PAIRS for s in pair]
    ours = sentence_logprobs(model, run.tokenizer, sentences)
    theirs = []
    for s in sentences:  # BabyLM's protocol: <bos> + sentence, summed log-probs of the sentence's tokens
        ids = torch.tensor([[tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0, :-1].double(), -1)
        theirs.append(float(logp.gather(1, ids[0, 1:, None]).sum()))
    assert numpy.allclose(ours, theirs, atol=1e-4)
    assert [a > b for a, b in zip(ours[::2], ours[1::2])] == [a > b for a, b in zip(theirs[::2], theirs[1::2])]


@pytest.mark.parametrize("kind", ["bpe", "char", "word"])
def test_the_hf_tokenizer_gives_our_ids(tmp_path: Path, kind: str) -> None:
    ours = train_tokenizer(kind, TEXT + ("" if kind == "bpe" else "\n" + VARIED), n_vocab=600)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(to_hf(ours)), encoding="utf-8")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for text in (VARIED, TEXT[:2000]):
        assert fast(text, add_special_tokens=False)["input_ids"] == ours.encode(text).tolist()
    assert fast.decode(ours.encode(VARIED).tolist()) == ours.decode(ours.encode(VARIED))
    assert from_hf(to_hf(ours), "x").to_dict() == ours.to_dict()


def test_export_then_import_is_bit_exact(exported: dict) -> None:
    for name in ("gpt2", "llama-gqa"):
        root, guid, folder = exported[name]
        new = import_run(folder, root=root, log=quiet)
        store = RunStore(root)
        assert store.read("model", new)["tensors"] == store.read("model", guid)["tensors"]
        assert store.read("tokenizer", new) == store.read("tokenizer", guid)
        again = export(new, root / f"again-{name}", root=root, log=quiet)
        a, b = read_safetensors(folder / "model.safetensors"), read_safetensors(again / "model.safetensors")
        assert a.keys() == b.keys() and all(numpy.array_equal(a[k], b[k]) for k in a)
        assert plans.info(new, root=root)["n_params"] == plans.info(guid, root=root)["n_params"]


def test_a_model_saved_again_by_transformers_comes_back_bit_exact_and_trains_and_scores(exported: dict,
                                                                                       tmp_path: Path) -> None:
    root, guid, folder = exported["llama-gqa"]
    saved = tmp_path / "saved"
    transformers.AutoModelForCausalLM.from_pretrained(folder).save_pretrained(saved)
    transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(saved)
    new = import_run(saved, root=root, log=quiet)
    store = RunStore(root)
    assert store.read("model", new)["tensors"] == store.read("model", guid)["tensors"]
    text = tmp_path / "more.txt"
    text.write_text(TEXT[:3000], encoding="utf-8")
    plans.finetune(new, [str(text)], root=root, overrides={"n_steps": 2}, log=quiet)
    assert plans.evaluate(new, "perplexity", inputs=[str(text)], root=root, log=quiet)["perplexity"] > 1


def test_cli_exports_an_architecture_hf_has_no_class_for_as_remote_code(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    guid = plans.train({**BASE, "c_attention": "conv", "n_steps": 2}, [str(corpus)], root=tmp_path, log=quiet)
    status, out, err = cli(capsys, "export", "--guid", guid, "--out", str(tmp_path / "x"), "--root", str(tmp_path))
    assert status == 0, err
    assert "BabyForCausalLM (remote code: load with trust_remote_code=True)" in out
    assert (tmp_path / "x" / "modeling_baby.py").exists()  # tests/test_hf_remote.py checks what it computes


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """The command line in this process (a subprocess would pay the imports again)."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_export_import_and_inference(exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, guid, _ = exported["llama"]
    status, out, _ = cli(capsys, "export", "--guid", guid, "--out", str(tmp_path / "x"), "--root", str(root))
    assert status == 0 and "LlamaForCausalLM" in out
    status, out, err = cli(capsys, "import", "--from", str(tmp_path / "x"), "--root", str(root))
    assert status == 0, err
    new = out.split()[-1]
    status, out, err = cli(capsys, "inference", "--guid", new, "--max-tokens", "3", "--root", str(root))
    assert status == 0, err


def test_shapes_hf_has_no_class_for_are_refused_listing_what_exports(tmp_path: Path) -> None:
    for settings, key in (({"c_attention": "conv+induction"}, "c_attention"), ({"c_network": "moe"}, "c_network"),
                          ({"c_norm": "rms"}, "norm"), ({"r_temp": 2.0}, "r_temp"), ({"head_size": 32}, "head_size"),
                          ({"c_attention": "moh"}, "c_attention"), ({"c_network": "lor"}, "c_network"),
                          ({"c_sequence": "post"}, "c_sequence"), ({"c_head_bias": True}, "c_head_bias")):
        with pytest.raises(ConfigError, match=f"{key}.*exportable: GPT-2"):
            layout.family(Config(settings))


def test_an_unfinished_run_is_not_exported(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    with pytest.raises(Interrupted):
        plans.train({**BASE, "n_steps": 8, "n_checkpoint_every": 2}, [str(corpus)], root=tmp_path, log=quiet, stop_at=3)
    guid = RunStore(tmp_path).guids()[0]
    with pytest.raises(RunError, match="no final model to export"):
        export(guid, tmp_path / "out", root=tmp_path, log=quiet)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, field", [
    ({"activation_function": "relu"}, "activation_function"), ({"rope_scaling": {"type": "linear"}}, "rope_scaling"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"), ({"rms_norm_eps": 1e-5}, "rms_norm_eps"),
    ({"attention_bias": True, "mlp_bias": False}, "mlp_bias"), ({"model_type": "mistral"}, "model_type"),
    ({"vocab_size": 301}, "vocab_size")])
def test_unsupported_hf_configs_are_refused_naming_the_field(exported: dict, tmp_path: Path, change: dict,
                                                             field: str) -> None:
    _, _, folder = exported["gpt2" if "activation" in field else "llama"]
    target = copied(folder, tmp_path / "edited")
    config = json.loads((folder / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **change}))
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=field):
        import_run(target, root=runs, log=quiet)
    assert not runs.exists()


def test_a_missing_safetensors_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from baby.hf import safetensors_numpy
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ConfigError, match=r"pip install -e \.\[hf\]"):
        safetensors_numpy()


def test_info_reads_a_model_file_alone(exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, guid, _ = exported["llama-gqa"]
    alone = tmp_path / "model.json"
    alone.write_bytes(RunStore(root).path("model", guid).read_bytes())
    data = plans.info(model=str(alone), log=quiet)
    assert data["n_params"] == plans.info(guid, root=root)["n_params"]
    assert data["architecture"]["n_kv_heads"] == 2 and data["architecture"]["norm_eps"] == 1e-6
    status, out, _ = cli(capsys, "info", "--model", str(alone))
    assert status == 0 and "4 heads (2 key/value)" in out
    old = json.loads(alone.read_text())
    del old["architecture"]  # files written before it existed still load with their run
    alone.write_text(json.dumps(old))
    with pytest.raises(Exception, match="before model files described their architecture"):
        plans.info(model=str(alone), log=quiet)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["model"].update(type="Unigram"), "model.type"),
    (lambda d: d.update(pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}), "pre_tokenizer"),
    (lambda d: d["model"].update(merges=["a b c"]), r"model.merges\[0\]"),
    (lambda d: d["model"]["vocab"].pop("<bos>"), "model.vocab"),
    (lambda d: d.update(normalizer={"type": "NFC"}), "normalizer")])
def test_a_tokenizer_not_in_our_layout_is_refused_naming_the_field(edit, field: str) -> None:
    doc = to_hf(train_tokenizer("bpe", TEXT, n_vocab=280))
    if field == "model.type":
        doc = to_hf(train_tokenizer("word", TEXT))
    edit(doc)
    with pytest.raises(RunError, match=field):
        from_hf(doc, "tokenizer.json")


def test_a_tied_config_with_a_different_head_is_refused(exported: dict, tmp_path: Path) -> None:
    from baby.commands.export import write_safetensors
    _, _, folder = exported["gpt2"]
    target = copied(folder, tmp_path / "edited")
    tensors = read_safetensors(folder / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1
    write_safetensors(target / "model.safetensors", tensors, {"format": "pt"})
    with pytest.raises(ConfigError, match="tie_word_embeddings=true, but lm_head.weight differs"):
        import_run(target, root=tmp_path / "runs", log=quiet)
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"]  # a tied copy is fine
    write_safetensors(target / "model.safetensors", tensors, {"format": "pt"})
    assert import_run(target, root=tmp_path / "runs", log=quiet)
