"""`instill <command>`: one entry point. User mistakes print one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from instill.errors import ConfigError, InstillError


def _train(args: argparse.Namespace) -> int:
    from instill.config import load_config
    from instill.evaluate.samples import has_eval_source
    from instill.train.sft import run_sft

    config = load_config(args.config, args.overrides)
    if config.eval.do_predict and not has_eval_source(config.data):
        raise ConfigError(f"{args.config}: do_predict needs eval_dataset (or val_size with dataset) to predict on")
    if config.train.do_train:
        run_sft(config)
    if config.eval.do_predict:
        from instill.evaluate.runner import run

        run(config, llamafactory_predictions=True)
    elif not config.train.do_train:
        print("[instill] do_train and do_predict are false: nothing to do")
    return 0


def _export(args: argparse.Namespace) -> int:
    from instill.config import load_config
    from instill.model.export import export_model

    config = load_config(args.config, args.overrides)
    out = export_model(config)
    size = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**20
    print(f"[instill] merged model written to {out} ({size:,.0f} MiB of safetensors, {config.export.export_dtype})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instill", description="Raw data to an instruction-tuned LLM.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    train = sub.add_parser("train", help="fine-tune a model as a YAML config says")
    train.add_argument("config", help="YAML file with LLaMA-Factory style keys")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    train.set_defaults(func=_train)
    export = sub.add_parser("export", help="merge adapters into the base model and save it")
    export.add_argument("config", help="YAML with model_name_or_path, adapter_name_or_path, export_dir")
    export.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    export.set_defaults(func=_export)
    # Each family of commands registers its own subcommands (`register(subparsers)`).
    from instill.evaluate.cli import register as register_eval
    from instill.infer.cli import register as register_infer
    from instill.prep.cli import register as register_data
    from instill.report.cli import register as register_report

    register_eval(sub)
    register_infer(sub)
    register_data(sub)
    register_report(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes warns on import that an optional CPU kernel package is missing; its own fallback
    # works (STACK.md), so the line only confuses users.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also come after options (`instill eval c.yaml --compare base eval_mode=score`).
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except InstillError as err:
        print(f"instill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("instill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
