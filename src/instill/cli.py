"""`instill <command>`: one entry point. User mistakes print one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from instill.errors import InstillError


def _train(args: argparse.Namespace) -> int:
    from instill.config import load_config
    from instill.train.sft import run_sft

    config = load_config(args.config, args.overrides)
    if not config.train.do_train:
        print("[instill] do_train is false: nothing to train")
        return 0
    run_sft(config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instill", description="Raw data to an instruction-tuned LLM.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    train = sub.add_parser("train", help="fine-tune a model as a YAML config says")
    train.add_argument("config", help="YAML file with LLaMA-Factory style keys")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    train.set_defaults(func=_train)
    # Each family of commands registers its own subcommands (`register(subparsers)`).
    from instill.data.build.cli import register as register_data
    from instill.evaluate.cli import register as register_eval

    register_eval(sub)
    register_data(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes warns on import that an optional CPU kernel package is missing; its own fallback
    # works (STACK.md), so the line only confuses users.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
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
