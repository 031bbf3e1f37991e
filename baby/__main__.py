"""Command line: python -m baby {train,finetune,inference,eval,delete,info,inspect,plot,gradcheck,bench} ...

Errors a user can fix (bad settings, GUIDs, files, devices) print one line and exit with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from baby import distributed, plans
from baby.backend import BackendError
from baby.config import ConfigError, parse_override, resumable_keys
from baby.corpus import DEFAULT_INPUT, CorpusError
from baby.formats import FormatError
from baby.jsonio import FileFault
from baby.progress import say
from baby.runs import RunError
from baby.train import TrainingHalted

# Errors a user can fix; OSError too (a full disk, a read-only folder): the environment, not a bug.
USER_ERRORS = (ConfigError, RunError, CorpusError, BackendError, FormatError, FileFault, OSError)
BENCHES = ("train", "variants", "mqar", "scaling", "gpu", "dp")


def overrides(pairs: list[str] | None) -> dict[str, Any]:
    return dict(parse_override(p) for p in pairs or [])


class Help(argparse.HelpFormatter):
    """Every option's help ends with its default (or says it is required): argparse's
    ArgumentDefaultsHelpFormatter, without its "(default: None)" and "(default: False)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "(default" in text or not action.option_strings or action.default == argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None or action.default == "":
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def parser() -> argparse.ArgumentParser:
    from baby import __version__  # noqa: PLC0415

    top = argparse.ArgumentParser(prog="python -m baby", description="The Little Baby: tiny GPTs in NumPy/CuPy",
                                  formatter_class=Help)
    top.add_argument("--version", action="version", version=f"baby {__version__}")
    sub = top.add_subparsers(dest="plan", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=Help)
        p.add_argument("--root", default=".", help="folder holding configs/ models/ tokenizers/ outputs/")
        return p

    p = add("train", "train a new model (or --resume an interrupted run)")
    p.add_argument("--config", help="settings JSON, e.g. configs/cpu.json")
    p.add_argument("--input", nargs="+", help=f"text files, directories or .gz files (default {DEFAULT_INPUT})")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable); "
                   "python -m baby settings lists them")
    p.add_argument("--resume", metavar="GUID", help="continue this run from its last checkpoint; with --set "
                   f"only {', '.join(resumable_keys())} may change (e.g. a lower r_learn after a "
                   "divergence, n_steps to extend a finished run)")
    p.add_argument("--from-step", type=int, metavar="S", help="with --resume: roll back to this rollback point "
                   "(an earlier checkpoint; info and runs list them) instead of the last checkpoint")
    p.add_argument("--skip-batches", action="store_true", help="with --from-step: also skip the batches between "
                   "the rollback point and the step where the run diverged")

    p = add("finetune", "train a run further on new text (writes _finetuned files)")
    p.add_argument("--guid", required=True, help="the run to train further")
    p.add_argument("--input", nargs="+", required=True, help="the new text: files, directories or .gz files")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (e.g. r_learn)")

    p = add("inference", "generate text from a run")
    p.add_argument("--guid", required=True, help="the run to generate from")
    p.add_argument("--prompt", default="", help="text to continue (empty: start from <bos>)")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens to generate at most (<eos> ends earlier)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (none: the run's seed); sample i uses seed + i")
    p.add_argument("--num-samples", type=int, default=1, help="completions to generate, each saved to its own file")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole window for every token")
    p.add_argument("--finetuned", action="store_true", help="use the _finetuned model")
    p.add_argument("--checkpoint", default="", help="a learning-curve checkpoint, e.g. 1M")

    p = add("eval", "score a run: BLiMP or Zorro minimal pairs, or held-out perplexity")
    p.add_argument("--guid", required=True, help="the run to score")
    p.add_argument("--task", required=True, choices=("blimp", "zorro", "perplexity"), help="what to measure")
    p.add_argument("--data", help="blimp: folder of BLiMP *.jsonl files (e.g. ../shared/data/blimp_filtered_babylm); "
                   "zorro: folder of Zorro *.txt files (e.g. ../shared/data/zorro)")
    p.add_argument("--input", nargs="+", help="perplexity: held-out text files, directories or .gz files")
    p.add_argument("--checkpoint", default="", help="a learning-curve checkpoint, e.g. 1M")
    p.add_argument("--finetuned", action="store_true", help="score the _finetuned model")
    p.add_argument("--limit", type=int, default=0, help="blimp, zorro: first N pairs of each paradigm (0: all)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences scored per forward pass")
    p.add_argument("--stride", type=int, default=0, help="perplexity: sliding-window stride (0: non-overlapping windows)")

    p = add("delete", "remove every file of a run")
    p.add_argument("--guid", required=True, help="the run to remove")

    p = add("info", "describe a run (--guid), a model file alone (--model) or a config before training (--config)")
    p.add_argument("--guid", help="the run to describe")
    p.add_argument("--model", help="a model or checkpoint file, described without its run")
    p.add_argument("--config", help="a settings file: parameters, FLOPs, memory and time per step before training")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="with --config: override a setting (e.g. n_vocab=8000)")
    p.add_argument("--no-probe", action="store_true", help="with --config: skip the few measured training steps")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = add("runs", "one line per run: GUID, created, tokenizer, model, parameters, steps, state, results")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = add("export", "write a finished run as a Hugging Face directory (GPT2LMHeadModel or LlamaForCausalLM)")
    p.add_argument("--guid", required=True, help="the run to export")
    p.add_argument("--out", required=True, help="directory to write config.json, model.safetensors, tokenizer.json ... into")
    p.add_argument("--checkpoint", default="", help="a learning-curve checkpoint, e.g. 1M (default: the final model)")
    p.add_argument("--finetuned", action="store_true", help="export the _finetuned model")

    p = add("import", "turn a Hugging Face directory (GPT-2, LLaMA or an export of ours) or the original Little "
            "Baby's run files into a new run")
    p.add_argument("--from", dest="source", required=True, help="directory with config.json, model.safetensors and "
                   "tokenizer.json, or with the original's config_<guid>.json, tokenizer_<guid>.json and model_<guid>.json")

    p = add("inspect", "the inside views of a run on a prompt: attention maps, induction matches, conv kernels, "
            "next-token probabilities (PNG + JSON)")
    p.add_argument("--guid", required=True, help="the run to look inside")
    p.add_argument("--prompt", default="", help="the text whose views are drawn (empty: <bos> alone)")
    p.add_argument("--out", required=True, help="folder for views.json and the PNGs")
    p.add_argument("--top-k", type=int, default=5, help="next tokens shown per prompt position")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="also sample N tokens and show each one's probability")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of --sample")
    p.add_argument("--sample-top-k", type=int, default=0, help="top-k filter while sampling (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass while sampling (1: off)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (none: the run's seed)")
    p.add_argument("--finetuned", action="store_true", help="use the _finetuned model")
    p.add_argument("--checkpoint", default="", help="a learning-curve checkpoint, e.g. 1M")

    p = add("plot", "overlay the training curves of several runs in one PNG")
    p.add_argument("--guid", action="append", required=True, help="a run (repeatable)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--finetuned", action="store_true", help="plot the _finetuned runs")

    p = sub.add_parser("gradcheck", help="check hand-written backward passes against float64 central differences",
                       formatter_class=Help)
    p.add_argument("names", nargs="*", help="registered mixers, networks or norms (default: all)")

    p = sub.add_parser("split", help="hold out the last part of every input file (for perplexity)", formatter_class=Help)
    p.add_argument("--input", nargs="+", required=True, help="text files, directories or .gz files")
    p.add_argument("--holdout", type=float, default=0.05, help="fraction of each file held out")
    p.add_argument("--out", required=True, help="writes OUT/train/*.txt and OUT/heldout/*.txt")

    sub.add_parser("settings", help="print the table of every setting with its default and allowed values")

    p = sub.add_parser("study", help="train and evaluate every cell of a study file; see python -m baby study --help",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("bench", help=f"benchmarks ({', '.join(BENCHES)}); see python -m baby bench NAME --help")
    p.add_argument("name", choices=BENCHES, help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its own options")
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
        # `bench train` is the CPU suite (baby.bench.suite), or with --config one model (baby.bench.train)
        module = importlib.import_module(f"baby.bench.{'suite' if args.name == 'train' else args.name}")
        return int(module.main(args.args) or 0)
    return dispatch(args)


def stream_to_terminal(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def dispatch(args: argparse.Namespace) -> int:
    """Turn the parsed command line into one call through the table of plans."""
    common = {"root": args.root}
    if args.plan == "train":
        if args.resume:
            if args.config:
                raise ConfigError("--resume continues with the run's own settings: drop --config")
            plans.run_plan("resume", guid=args.resume, overrides=overrides(args.set), from_step=args.from_step,
                           skip_batches=args.skip_batches, **common)
            return 0
        if args.from_step is not None or args.skip_batches:
            raise ConfigError("--from-step and --skip-batches go with --resume GUID")
        if not args.config:
            raise ConfigError("train needs --config (e.g. configs/cpu.json) or --resume GUID")
        plans.run_plan("train", config=args.config, inputs=args.input, overrides=overrides(args.set), **common)
    elif args.plan == "finetune":
        plans.run_plan("finetune", guid=args.guid, inputs=args.input, overrides=overrides(args.set), **common)
    elif args.plan == "inference":
        plans.run_plan("inference", guid=args.guid, prompt=args.prompt, max_tokens=args.max_tokens,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                       use_cache=not args.no_cache, finetuned=args.finetuned, checkpoint=args.checkpoint,
                       num_samples=args.num_samples, stream=stream_to_terminal, **common)
    elif args.plan == "eval":
        plans.run_plan("eval", guid=args.guid, task=args.task, data=args.data, inputs=args.input,
                       checkpoint=args.checkpoint, finetuned=args.finetuned, batch_size=args.batch_size,
                       limit=args.limit, stride=args.stride, **common)
    elif args.plan == "runs":
        plans.run_plan("runs", as_json=args.json, **common)
    elif args.plan == "export":
        plans.run_plan("export", guid=args.guid, out=args.out, checkpoint=args.checkpoint, finetuned=args.finetuned,
                       log=say, **common)
    elif args.plan == "import":
        plans.run_plan("import", source=args.source, log=say, **common)
    elif args.plan == "delete":
        plans.run_plan("delete", guid=args.guid, **common)
    elif args.plan == "info":
        plans.run_plan("info", guid=args.guid, model=args.model, config=args.config, overrides=overrides(args.set),
                       probe=not args.no_probe, as_json=args.json, **common)
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
    except distributed.CommError as err:  # missing MPI, or a collective that timed out: said by every rank it hits
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        distributed.abort_job(2)
        return 2
    except TrainingHalted as err:
        if distributed.current_rank() == 0:  # every rank halts alike; rank 0 says why
            print(f"error: {err}" if err.exit_status == 2 else str(err), file=sys.stderr, flush=True)
        distributed.abort_on_error(err.exit_status)  # a rank still in a collective cannot leave it otherwise
        return err.exit_status
    except USER_ERRORS as err:
        if distributed.current_rank() == 0:
            print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        distributed.abort_on_error(2)  # an error on rank 0 alone (a full disk) must not leave the others waiting
        return 2
    except (KeyboardInterrupt, BrokenPipeError):
        return 130


def one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
