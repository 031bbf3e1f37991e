"""Command line: python -m baby {train,finetune,inference,eval,delete,info,inspect,plot,gradcheck,bench} ...

Errors a user can fix (bad settings, GUIDs, files, devices) print one line and exit with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from baby import plans
from baby.backend import BackendError
from baby.config import ConfigError, parse_override
from baby.corpus import CorpusError
from baby.formats import FormatError
from baby.jsonio import FileFault
from baby.runs import RunError
from baby.train import TrainingHalted

# Errors a user can fix; OSError too (a full disk, a read-only folder): the environment, not a bug.
USER_ERRORS = (ConfigError, RunError, CorpusError, BackendError, FormatError, FileFault, OSError)
BENCHES = ("train", "variants", "mqar", "scaling")


def overrides(pairs: list[str] | None) -> dict[str, Any]:
    return dict(parse_override(p) for p in pairs or [])


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m baby", description="The Little Baby: tiny GPTs in NumPy/CuPy")
    sub = top.add_subparsers(dest="plan", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--root", default=".", help="folder holding configs/ models/ tokenizers/ outputs/")
        return p

    p = add("train", "train a new model (or --resume an interrupted run)")
    p.add_argument("--config", help="settings JSON, e.g. configs/cpu.json")
    p.add_argument("--input", nargs="+", help=f"text files, directories or .gz files (default {plans.DEFAULT_INPUT})")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)")
    p.add_argument("--resume", metavar="GUID", help="continue this run from its last checkpoint; with --set "
                   f"only {', '.join(plans.RESUME_SETTINGS)} may change (e.g. a lower r_learn after a "
                   "divergence, n_steps to extend a finished run)")

    p = add("finetune", "train a run further on new text (writes _finetuned files)")
    p.add_argument("--guid", required=True)
    p.add_argument("--input", nargs="+", required=True)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (e.g. r_learn)")

    p = add("inference", "generate text from a run")
    p.add_argument("--guid", required=True)
    p.add_argument("--prompt", default="")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole window for every token")
    p.add_argument("--finetuned", action="store_true", help="use the _finetuned model")
    p.add_argument("--checkpoint", default="", help="a learning-curve checkpoint, e.g. 1M")

    p = add("eval", "score a run: BLiMP or Zorro minimal pairs, or held-out perplexity")
    p.add_argument("--guid", required=True)
    p.add_argument("--task", required=True, choices=("blimp", "zorro", "perplexity"))
    p.add_argument("--data", help="blimp: folder of BLiMP *.jsonl files (e.g. ../shared/data/blimp_filtered_babylm); "
                   "zorro: folder of Zorro *.txt files (e.g. ../shared/data/zorro)")
    p.add_argument("--input", nargs="+", help="perplexity: held-out text files, directories or .gz files")
    p.add_argument("--checkpoint", default="", help="a learning-curve checkpoint, e.g. 1M")
    p.add_argument("--finetuned", action="store_true")
    p.add_argument("--limit", type=int, default=0, help="blimp, zorro: first N pairs of each paradigm (0: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--stride", type=int, default=0, help="perplexity: sliding-window stride (0: non-overlapping windows)")

    p = add("delete", "remove every file of a run")
    p.add_argument("--guid", required=True)

    p = add("info", "describe a run")
    p.add_argument("--guid", required=True)
    p.add_argument("--json", action="store_true")

    p = add("inspect", "the inside views of a run on a prompt: attention maps, induction matches, conv kernels, "
            "next-token probabilities (PNG + JSON)")
    p.add_argument("--guid", required=True)
    p.add_argument("--prompt", default="")
    p.add_argument("--out", required=True, help="folder for views.json and the PNGs")
    p.add_argument("--top-k", type=int, default=5, help="next tokens shown per prompt position")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="also sample N tokens and show each one's probability")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--sample-top-k", type=int, default=0, help="top-k filter while sampling (0: off)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--finetuned", action="store_true")
    p.add_argument("--checkpoint", default="", help="a learning-curve checkpoint, e.g. 1M")

    p = add("plot", "overlay the training curves of several runs in one PNG")
    p.add_argument("--guid", action="append", required=True, help="a run (repeatable)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--finetuned", action="store_true")

    p = sub.add_parser("gradcheck", help="check hand-written backward passes against float64 central differences")
    p.add_argument("names", nargs="*", help="registered mixers, networks or norms (default: all)")

    p = sub.add_parser("split", help="hold out the last part of every input file (for perplexity)")
    p.add_argument("--input", nargs="+", required=True)
    p.add_argument("--holdout", type=float, default=0.05, help="fraction of each file held out (default 0.05)")
    p.add_argument("--out", required=True, help="writes OUT/train/*.txt and OUT/heldout/*.txt")

    sub.add_parser("settings", help="print the table of every setting with its default and allowed values")

    p = sub.add_parser("study", help="train and evaluate every cell of a study file; see python -m baby study --help",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("bench", help=f"benchmarks ({', '.join(BENCHES)}); see python -m baby bench NAME --help")
    p.add_argument("name", choices=BENCHES)
    p.add_argument("args", nargs=argparse.REMAINDER)
    return top


def run(argv: list[str]) -> int:
    if argv[:1] == ["study"]:  # its own parser (its options would look like ours to argparse)
        from baby.study import main as study_main  # noqa: PLC0415
        return study_main(argv[1:])
    args = parser().parse_args(argv)
    if args.plan == "split":
        from baby.corpus import holdout_split  # noqa: PLC0415
        train_dir, held_dir = holdout_split(args.input, args.holdout, args.out)
        print(f"train text in {train_dir}, held-out text in {held_dir}")
        return 0
    if args.plan == "settings":
        from baby.config import settings_table  # noqa: PLC0415
        print(settings_table())
        return 0
    if args.plan == "gradcheck":
        from baby.nn.gradcheck import check_names  # noqa: PLC0415
        return 0 if check_names(args.names) else 1
    if args.plan == "bench":
        module = importlib.import_module(f"baby.bench.{args.name}")
        return int(module.main(args.args) or 0)
    return dispatch(args)


def dispatch(args: argparse.Namespace) -> int:
    """Turn the parsed command line into one call through the table of plans."""
    common = {"root": args.root}
    if args.plan == "train":
        if args.resume:
            if args.config:
                raise ConfigError("--resume continues with the run's own settings: drop --config")
            plans.run_plan("resume", guid=args.resume, overrides=overrides(args.set), **common)
            return 0
        if not args.config:
            raise ConfigError("train needs --config (e.g. configs/cpu.json) or --resume GUID")
        plans.run_plan("train", config=args.config, inputs=args.input, overrides=overrides(args.set), **common)
    elif args.plan == "finetune":
        plans.run_plan("finetune", guid=args.guid, inputs=args.input, overrides=overrides(args.set), **common)
    elif args.plan == "inference":
        plans.run_plan("inference", guid=args.guid, prompt=args.prompt, max_tokens=args.max_tokens,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                       use_cache=not args.no_cache, finetuned=args.finetuned, checkpoint=args.checkpoint, **common)
    elif args.plan == "eval":
        plans.run_plan("eval", guid=args.guid, task=args.task, data=args.data, inputs=args.input,
                       checkpoint=args.checkpoint, finetuned=args.finetuned, batch_size=args.batch_size,
                       limit=args.limit, stride=args.stride, **common)
    elif args.plan == "delete":
        plans.run_plan("delete", guid=args.guid, **common)
    elif args.plan == "info":
        plans.run_plan("info", guid=args.guid, as_json=args.json, **common)
    elif args.plan == "inspect":
        plans.run_plan("inspect", guid=args.guid, prompt=args.prompt, out=args.out, top_k=args.top_k,
                       sample_tokens=args.sample, temperature=args.temperature, sample_top_k=args.sample_top_k,
                       top_p=args.top_p, seed=args.seed, finetuned=args.finetuned, checkpoint=args.checkpoint, **common)
    elif args.plan == "plot":
        plans.run_plan("plot", guids=args.guid, out=args.out, finetuned=args.finetuned, **common)
    return 0


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 terminal gets replacement marks, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except TrainingHalted as err:
        print(f"error: {err}" if err.exit_status == 2 else str(err), file=sys.stderr)
        return err.exit_status
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, BrokenPipeError):
        return 130


def one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
