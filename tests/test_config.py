"""Settings: defaults, type and range validation with messages naming the key, JSON round trip."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from baby.config import Config, ConfigError, parse_override, parse_warmup
from tests.conftest import ROOT

ROOT_CONFIGS = ROOT / "configs"


def test_defaults_validate_and_round_trip(tmp_path: Path) -> None:
    cfg = Config()
    assert cfg.c_attention == "mha" and cfg.head_width == cfg.n_emb
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert Config.load(path).to_dict() == cfg.to_dict()


def test_run_config_files_load_from_their_settings(tmp_path: Path) -> None:
    path = tmp_path / "config_x.json"
    path.write_text(json.dumps({"guid": "x", "settings": {"n_emb": 64}, "runtime": {"n_params": 1}}))
    assert Config.load(path).n_emb == 64


@pytest.mark.parametrize("values, words", [
    ({"n_emb": "big"}, ["n_emb", "'big'", "int"]),
    ({"n_emb": 0}, ["n_emb", "range"]),
    ({"r_dropout": 1.5}, ["r_dropout", "range"]),
    ({"c_device": "tpu"}, ["c_device", "cpu", "gpu"]),
    ({"c_tokenizer": "sentencepiece"}, ["c_tokenizer", "char", "word", "bpe"]),
    ({"c_shuffle": "yes"}, ["c_shuffle", "bool"]),
    ({"n_layer": 3}, ["n_layer", "n_layers"]),
    ({"n_heads": 5}, ["head_size", "n_heads"]),
    ({"c_attention": "mha+nope"}, ["c_attention", "nope"]),
    ({"c_network": "ffn"}, ["c_network", "mlp"]),
    ({"s_warmup": "soon"}, ["s_warmup", "auto"]),
    ({"s_warmup": -4}, ["s_warmup"]),
    ({"r_learn_min": 0.5}, ["r_learn_min"]),
    ({"c_tokenizer": "bpe", "n_vocab": 100}, ["n_vocab", "260"]),
    ({"s_checkpoint_words": "1M,lots"}, ["s_checkpoint_words", "lots"]),
    ({"s_checkpoint_words": "-5K"}, ["s_checkpoint_words"]),
])
def test_bad_values_name_the_key_and_what_is_allowed(values: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Config(values, source="configs/x.json")
    message = str(err.value)
    assert message.startswith("configs/x.json:")
    for word in words:
        assert word in message


def test_bool_int_and_float_coercions_are_strict() -> None:
    assert Config({"c_shuffle": 0}).c_shuffle is False
    assert Config({"n_emb": 64.0}).n_emb == 64
    assert Config({"r_learn": 1}).r_learn == 1.0
    with pytest.raises(ConfigError):
        Config({"n_emb": 64.5})
    with pytest.raises(ConfigError):
        Config({"n_emb": True})


@pytest.mark.parametrize("value, total, steps", [
    ("none", 1000, 0), ("auto", 1000, 50), ("auto", 10000, 100), (100, 1000, 100), ("250", 1000, 250),
    (0.1, 1000, 100), ("0.25", 400, 100)])
def test_warmup_forms(value: object, total: int, steps: int) -> None:
    assert parse_warmup(value, total) == steps


def test_cli_overrides_parse_json_values() -> None:
    assert parse_override("n_emb=64") == ("n_emb", 64)
    assert parse_override("c_attention=conv+induction") == ("c_attention", "conv+induction")
    assert parse_override("c_shuffle=false") == ("c_shuffle", False)
    with pytest.raises(ConfigError):
        parse_override("n_emb")


def test_config_is_immutable() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.n_emb = 3
    assert cfg.replace(n_emb=64).n_emb == 64 and cfg.n_emb == 128


def test_word_counts_parse_with_suffixes_in_order() -> None:
    from baby.config import parse_word_counts
    assert parse_word_counts("2M, 500K,1.5M,20000") == [("20000", 20000), ("500K", 500000), ("1.5M", 1500000),
                                                          ("2M", 2000000)]


# ---- the original project's config files --------------------------------------------------------

ORIGINAL = {"c_device": "cpu", "c_device_gpu_cuda": 0, "c_optimizer": "adam", "c_attention": "lda", "n_ctx": "16",
            "n_emb": "16", "s_head": "16", "n_heads": "2", "n_layers": "1", "s_batch": "4", "dropout": "0",
            "lr": "1e-3", "num_epochs": "2", "c_shuffle": "1", "runtime": {"n_params": 1, "device": "cpu"}}


def test_original_config_files_load_with_one_notice(tmp_path: Path) -> None:
    path = tmp_path / "config_33bd6583-1b87-4469-b55e-0ccb8fd0441c.json"
    path.write_text(json.dumps(ORIGINAL))
    cfg = Config.load(path)
    assert (cfg.head_size, cfg.batch_size, cfg.r_dropout, cfg.r_learn, cfg.n_epochs, cfg.n_ctx) == (16, 4, 0.0, 1e-3, 2, 16)
    assert cfg.c_shuffle is True and cfg.mixers == ["lda"]
    legacy = [n for n in cfg.notices() if "original project" in n]
    assert len(legacy) == 1
    assert "s_head->head_size" in legacy[0] and "lr->r_learn" in legacy[0]
    assert "ignored c_device_gpu_cuda, c_optimizer, runtime" in legacy[0]
    assert not [n for n in Config.load(ROOT_CONFIGS / "tiny.json").notices() if "original" in n]


@pytest.mark.parametrize("change, message", [({"c_attention": "flash"}, "allowed aft, conv"),
                                             ({"lr": "1e-3", "r_learn": 0.01}, "both given"),
                                             ({"n_emb": "sixteen"}, "n_emb='sixteen'")])
def test_original_config_mistakes_are_named(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**ORIGINAL, **change}))
    with pytest.raises(ConfigError, match=message):
        Config.load(path)


def test_info_config_counts_parameters_exactly_before_training() -> None:
    from baby import plans
    data = plans.info(config=str(ROOT_CONFIGS / "conv-induction-12m.json"), probe=False, log=lambda _: None)
    assert data["n_params"] == 12_288_816 and data["memory_per_step"]["total_bytes"] > 0
    tiny = plans.info(config=str(ROOT_CONFIGS / "tiny.json"), overrides={"n_steps": 10}, log=lambda _: None)
    assert tiny["seconds_per_step"] > 0 and tiny["train_seconds"] == pytest.approx(10 * tiny["seconds_per_step"])
    assert "assumed" in tiny["vocab_note"] or tiny["n_vocab"] > 0
    with pytest.raises(ConfigError, match="exactly one of"):
        plans.info(log=lambda _: None)
