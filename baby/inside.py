"""Seeing inside a model: the views of the notebook and of ``python -m baby inspect``.

Every number here is read from what the forward already computed: one forward runs with
``Context.capture`` set, and each mixer notes its probabilities, gates or kernels there
(``Context.note``). Nothing below reimplements a mixer; the views only lay those arrays out:

- attention: per layer and head, the probabilities over the prompt (mha, gqa, moh with its head gate,
  swh with its chosen head, rfa with its window and memory slot); for the linear mixers (aft, gla and
  the nft network) the effective weight w_j / den_t each earlier position j gets at position t;
- induction: per position the earlier occurrences found, their scores and probabilities, the token
  each copied, and the sink's share; conv: the kernel each position predicted per dilation;
- next token: the top-k tokens and probabilities at each prompt position; and, while sampling, the
  probability of each sampled token under the chosen temperature / top-k / top-p.

``save_views`` writes each view as JSON (the numbers) and, when matplotlib is installed, as a PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy

from baby import backend
from baby.charts import figure_class, save_figure, subplots
from baby.generate import generate
from baby.jsonio import write_json
from baby.nn.core import Mixer, Module
from baby.nn.model import GPT

Decode = Callable[[int], str]


ATTENTION_VIEWS = ("attention", "window", "prefix mean")
VIEWS = (*ATTENTION_VIEWS, "induction", "conv")  # the values of a variant's ``inside_view``


def host(x: Any) -> numpy.ndarray:
    return numpy.asarray(backend.to_host(x), dtype=numpy.float64)


def parts(model: GPT) -> list[tuple[str, Module]]:
    """(label, module) of every mixer and network, in forward order: 'block0.mha', 'block0.mlp', ..."""
    return [(f"block{i}.{part.inner.registry_name}", part.inner)
            for i, block in enumerate(model.blocks) for part in block.parts]


def captured_forward(model: GPT, ids: list[int]) -> tuple[numpy.ndarray, dict[Module, dict[str, Any]]]:
    """Logits (T, V) of one eval forward over ``ids`` and what every module noted in it."""
    batch = backend.asarray(numpy.array([ids]))
    ctx = model.context(batch)
    ctx.capture = {}
    was_training = model.training
    model.eval()
    try:
        logits = model.forward(batch, ctx)
    finally:
        model.train(was_training)
    return host(logits[0]), ctx.capture


def effective_weights(noted: dict[str, Any]) -> numpy.ndarray:
    """(T, T, C) for a prefix-mean module of batch row 0: A[t, j, c] = w[j, c] / den[t, c] for j <= t,
    so that y[t, c] = sum_j A[t, j, c] v[j, c] (gla's eps is in den: its rows sum to just under 1)."""
    w, den = host(noted["weights"][0]), host(noted["denominators"][0])
    t = w.shape[0]
    return numpy.tril(numpy.ones((t, t)))[:, :, None] * w[None, :, :] / den[:, None, :]


def attention_view(kind: str, noted: dict[str, Any]) -> dict[str, Any]:
    """The probabilities of one softmax or linear mixer (batch row 0); ``kind`` is its declared
    ``inside_view``: "attention", "window" or "prefix mean"."""
    if kind == "prefix mean":
        view = {"probs": effective_weights(noted).mean(axis=2)[None]}  # one map: the mean over channels
        if "gate" in noted:
            view["gate"] = host(noted["gate"][0]).mean(axis=-1)  # nft's sigmoid(q): scales the mean
        return view
    if kind == "window":
        view = {"probs": host(noted["window_probs"][0]), "memory": host(noted["memory_probs"][0]),
                "window": int(noted["window"])}
    else:
        view = {"probs": host(noted["probs"][0]), "kv_group": int(noted["group"])}
    if "gate" in noted:
        view["gate"] = host(noted["gate"][0])  # (T, H): moh weighs heads by it, swh picks its argmax
    if "chosen" in noted:
        view["chosen"] = [int(c) for c in backend.to_host(noted["chosen"][0])]
    return view


def induction_view(noted: dict[str, Any], ids: list[int], decode: Decode) -> list[dict[str, Any]]:
    """Per position: each usable earlier occurrence (position, scores and probabilities per head, the
    token that followed it = what is copied) and the sink's share per head."""
    cand = backend.to_host(noted["candidates"][0])
    usable = backend.to_host(noted["usable"][0])
    probs, scores = host(noted["probs"][0]), host(noted["scores"][0])
    m = cand.shape[1]
    rows = []
    for t in range(len(ids)):
        found = [{"position": int(c), "token": decode(ids[c]), "copied": decode(ids[c + 1]),
                  "score": scores[t, j].tolist(), "probability": probs[t, j].tolist()}
                 for j, c in enumerate(cand[t]) if usable[t, j]]
        sink = probs[t, m].tolist() if probs.shape[1] > m else [0.0] * probs.shape[2]
        rows.append({"position": t, "token": decode(ids[t]), "found": found, "sink": sink})
    return rows


def conv_view(noted: dict[str, Any]) -> list[dict[str, Any]]:
    """Per dilation: the (T, G, k) kernels (oldest tap first) and how far back each tap reads."""
    return [{"dilation": di, "offsets": off, "kernels": host(k[0])}
            for di, off, k in zip(noted["dilations"], noted["offsets"], noted["kernels"])]


def next_token_view(logits: numpy.ndarray, ids: list[int], decode: Decode, k: int = 5) -> list[dict[str, Any]]:
    """At each prompt position the k most likely next tokens with their probabilities."""
    z = logits - logits.max(axis=-1, keepdims=True)
    p = numpy.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    top = numpy.argsort(-p, axis=-1, kind="stable")[:, :k]
    return [{"position": t, "token": decode(ids[t]),
             "next": [{"token": decode(int(i)), "probability": float(p[t, i])} for i in top[t]]}
            for t in range(len(ids))]


def sampling_view(model: GPT, ids: list[int], decode: Decode, max_tokens: int, temperature: float,
                  top_k: int, top_p: float, seed: int, **sampling: Any) -> dict[str, Any]:
    """Sample as inference does and keep the probability each sampled token had when it was drawn."""
    gen = generate(model, ids, max_tokens, temperature, top_k, top_p, seed, **sampling)
    return {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
            "tokens": [{"token": decode(i), "probability": p} for i, p in zip(gen.tokens, gen.probabilities)]}


def views(model: GPT, ids: list[int], decode: Decode, top_k: int = 5) -> dict[str, Any]:
    """Every view of one prompt: {"tokens", "next_tokens", "layers": [{label, kind, attention |
    induction | conv}]}."""
    logits, capture = captured_forward(model, ids)
    layers = []
    for label, module in parts(model):
        name, noted, kind = module.registry_name, capture.get(module, {}), type(module).inside_view
        entry: dict[str, Any] = {"layer": label, "kind": name, "view": kind}
        if kind == "induction":
            entry["induction"] = induction_view(noted, ids, decode)
        elif kind == "conv":
            entry["conv"] = conv_view(noted)
        elif kind in ATTENTION_VIEWS:
            entry["attention"] = attention_view(kind, noted)
        elif kind:
            raise ValueError(f"{type(module).__name__}.inside_view={kind!r}: allowed {', '.join(VIEWS)} or ''")
        elif isinstance(module, Mixer):
            entry["note"] = "no inside view declared (its class's inside_view is empty)"
        else:
            continue  # a per-token network (mlp, moe, ...) mixes nothing across positions
        layers.append(entry)
    return {"tokens": [decode(i) for i in ids], "next_tokens": next_token_view(logits, ids, decode, top_k),
            "layers": layers}


# ---- files -------------------------------------------------------------------------------------------

def plain(data: Any) -> Any:
    """Arrays to lists (rounded: the JSON is for reading), recursively."""
    if isinstance(data, numpy.ndarray):
        return numpy.round(data, 6).tolist()
    if isinstance(data, dict):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data


def attention_figure(fig_cls: Any, entry: dict[str, Any], tokens: list[str]) -> Any:
    att = entry["attention"]
    probs = att["probs"]
    heads = probs.shape[0]
    fig, axes = subplots(fig_cls, 1, heads, (2.6 * heads + 0.6, 3.0))
    for h, ax in enumerate(axes[0]):
        ax.imshow(probs[h], cmap="viridis", vmin=0.0, vmax=1.0)
        title = f"head {h}"
        if "gate" in att and att["gate"].ndim == 2:
            title += f" (gate {att['gate'][:, h].mean():.2f})"
        ax.set_title(title, fontsize=8)
        ticks = range(len(tokens))
        ax.set_xticks(ticks, [repr(s)[1:-1] for s in tokens], fontsize=6, rotation=90)
        ax.set_yticks(ticks, [repr(s)[1:-1] for s in tokens], fontsize=6)
        ax.set_xlabel("key position (earlier token)", fontsize=7)
        if h == 0:
            ax.set_ylabel("query position", fontsize=7)
    what = "effective weight (mean over channels)" if entry["view"] == "prefix mean" else "attention probability"
    extra = f", window {att['window']}, memory share {att['memory'].mean():.2f}" if "memory" in att else ""
    fig.suptitle(f"{entry['layer']}: {what}{extra}", fontsize=9)
    return fig


def induction_figure(fig_cls: Any, entry: dict[str, Any], tokens: list[str]) -> Any:
    """A (T, T + 1) map: where each position's probability went (mean over heads), the sink last."""
    t = len(tokens)
    grid = numpy.zeros((t, t + 1))
    for row in entry["induction"]:
        for found in row["found"]:
            grid[row["position"], found["position"]] += float(numpy.mean(found["probability"]))
        grid[row["position"], t] = float(numpy.mean(row["sink"]))
    fig, axes = subplots(fig_cls, 1, 1, (0.25 * t + 2.5, 0.25 * t + 1.5))
    ax = axes[0, 0]
    ax.imshow(grid, cmap="magma", vmin=0.0, vmax=1.0)
    labels = [repr(s)[1:-1] for s in tokens]
    ax.set_xticks(range(t + 1), labels + ["sink"], fontsize=6, rotation=90)
    ax.set_yticks(range(t), labels, fontsize=6)
    ax.set_xlabel("earlier occurrence of the same token (its follower is copied)", fontsize=7)
    ax.set_ylabel("position", fontsize=7)
    ax.set_title(f"{entry['layer']}: induction matches (mean over heads)", fontsize=9)
    return fig


def conv_figure(fig_cls: Any, entry: dict[str, Any], tokens: list[str]) -> Any:
    levels = entry["conv"]
    fig, axes = subplots(fig_cls, 1, len(levels), (2.2 * len(levels) + 0.6, 0.2 * len(tokens) + 1.5))
    for ax, level in zip(axes[0], levels):
        ax.imshow(level["kernels"].mean(axis=1), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(level["offsets"])), [f"-{o}" for o in level["offsets"]], fontsize=7)
        ax.set_yticks(range(len(tokens)), [repr(s)[1:-1] for s in tokens], fontsize=6)
        ax.set_xlabel("tap (positions back)", fontsize=7)
        ax.set_title(f"dilation {level['dilation']}", fontsize=8)
    fig.suptitle(f"{entry['layer']}: predicted kernels (mean over groups)", fontsize=9)
    return fig


def next_token_figure(fig_cls: Any, data: dict[str, Any]) -> Any:
    rows = data["next_tokens"]
    t, k = len(rows), len(rows[0]["next"])
    probs = numpy.array([[n["probability"] for n in r["next"]] for r in rows])
    fig, axes = subplots(fig_cls, 1, 1, (1.0 * k + 2.0, 0.28 * t + 1.2))
    ax = axes[0, 0]
    ax.imshow(probs, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i, r in enumerate(rows):
        for j, n in enumerate(r["next"]):
            ax.text(j, i, f"{n['token']!r} {n['probability']:.2f}", ha="center", va="center", fontsize=6)
    ax.set_yticks(range(t), [repr(r["token"])[1:-1] for r in rows], fontsize=6)
    ax.set_xticks(range(k), [f"#{j + 1}" for j in range(k)], fontsize=7)
    ax.set_xlabel("most likely next tokens", fontsize=7)
    ax.set_ylabel("after this prompt token", fontsize=7)
    return fig


def save_views(data: dict[str, Any], out: str | Path) -> list[Path]:
    """views.json plus one PNG per view (none without matplotlib); returns the files written."""
    out = Path(out)
    written = [out / "views.json"]
    write_json(written[0], plain(data))
    fig_cls = figure_class()
    if fig_cls is None:
        return written
    tokens = data["tokens"]
    written.append(save_figure(next_token_figure(fig_cls, data), out / "next_tokens.png"))
    draw = {"attention": attention_figure, "induction": induction_figure, "conv": conv_figure}
    for entry in data["layers"]:
        for key, figure in draw.items():
            if key in entry:
                written.append(save_figure(figure(fig_cls, entry, tokens), out / f"{key}_{entry['layer']}.png"))
    return written
