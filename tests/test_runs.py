"""Run files: bit-exact model round trip, atomic writes, GUID validation before any path."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy
import pytest

from baby import backend, formats
from baby.config import Config
from baby.formats import FormatError, decode_tensor, encode_tensor
from baby.nn.model import GPT
from baby.runs import RunError, RunStore, check_guid, new_guid, write_json


@pytest.mark.parametrize("dtype", [numpy.float16, numpy.float32, numpy.float64, numpy.int32])
def test_tensor_round_trip_is_bit_exact(dtype: type) -> None:
    a = (numpy.random.default_rng(0).standard_normal((3, 5, 7)) * 1e3).astype(dtype)
    b = decode_tensor(json.loads(json.dumps(encode_tensor(a))))
    assert b.dtype == a.dtype and b.shape == a.shape and a.tobytes() == b.tobytes()


def test_model_save_load_is_bit_exact(tmp_path: Path, device: str) -> None:
    cfg = Config({"n_ctx": 16, "n_emb": 24, "n_heads": 2, "n_layers": 2, "c_tie": False, "seed": 9})
    model = GPT(cfg, 40)
    path = tmp_path / "m.json"
    write_json(path, formats.model_to_dict(model))
    other = GPT(cfg, 40, seed=123)  # different init, then overwritten
    formats.load_weights(other, json.loads(path.read_text()), str(path))
    for (name, p), (_, q) in zip(model.named_parameters(), other.named_parameters()):
        assert backend.to_host(p.data).tobytes() == backend.to_host(q.data).tobytes(), name
    ids = backend.asarray(numpy.arange(16)[None] % 40)
    assert (backend.to_host(model.forward(ids)) == backend.to_host(other.forward(ids))).all()


def test_load_refuses_mismatched_shapes(tmp_path: Path) -> None:
    small = GPT(Config({"n_ctx": 8, "n_emb": 8, "n_heads": 2, "n_layers": 1}), 10)
    big = GPT(Config({"n_ctx": 8, "n_emb": 16, "n_heads": 2, "n_layers": 1}), 10)
    with pytest.raises(FormatError, match="shape"):
        formats.load_weights(big, formats.model_to_dict(small), "m.json")


def test_atomic_write_keeps_the_old_file_when_serialising_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


@pytest.mark.parametrize("guid", ["", "../x", "ABCDEF0123456789ABCDEF0123456789", "0123", "*", "a" * 33,
                                  "0123456789abcdef0123456789abcde/", "33bd6583-1b87-4469-b55e0ccb8fd0441c",
                                  "33BD6583-1B87-4469-B55E-0CCB8FD0441C", "33bd6583_1b87_4469_b55e_0ccb8fd0441c",
                                  "{33bd6583-1b87-4469-b55e-0ccb8fd0441c}", "33bd6583-1b87-4469-b55e-0ccb8fd0441c-"])
def test_bad_guids_are_refused_before_any_path(guid: str, tmp_path: Path) -> None:
    with pytest.raises(RunError):
        check_guid(guid)
    with pytest.raises(RunError):
        RunStore(tmp_path).path("model", guid)
    with pytest.raises(RunError):
        RunStore(tmp_path).files(guid)


def test_new_guids_are_standard_uuids_and_bare_hex_runs_still_work(tmp_path: Path) -> None:
    guid = new_guid()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", guid)
    store, legacy = RunStore(tmp_path), "0123456789abcdef0123456789abcdef"
    for g in (guid, legacy):
        store.write("config", g, {})
        store.write("model", g, {}, "_chck_1M")
        store.write("config", g, {}, "_finetuned")
    assert store.guids() == sorted([guid, legacy])
    assert {p.name for p in store.files(guid)} == {f"config_{guid}.json", f"model_{guid}_chck_1M.json",
                                                  f"config_{guid}_finetuned.json"}
    assert check_guid("33bd6583-1b87-4469-b55e-0ccb8fd0441c")


def test_files_lists_only_that_runs_files(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a, b = new_guid(), new_guid()
    for guid in (a, b):
        store.write("config", guid, {})
        store.write("model", guid, {})
        store.write("model", guid, {}, "_chck_1M")
        store.write("completion", guid, {}, "_20260101120000")
    (tmp_path / "outputs" / f"completion_{a}_notes.json").write_text("{}")  # not a run file pattern
    names = {p.name for p in store.files(a)}
    assert names == {f"config_{a}.json", f"model_{a}.json", f"model_{a}_chck_1M.json",
                     f"completion_{a}_20260101120000.json"}
