"""`instill data ...` subcommands: each module has ``configure(parser)`` and ``main(args) -> exit code``."""

from __future__ import annotations

import argparse
import functools
import importlib
from collections.abc import Callable
from pathlib import Path

from instill.errors import DataError

# name -> (module under instill.prep, one-line help)
COMMANDS = {
    "convert": ("convert", "raw table (JSON/JSONL/CSV/Excel/parquet) -> instruction dataset, by preset or template"),
    "augment": ("augment", "more rows per row: instruction variants, shuffled classification choices"),
    "generate": ("self_instruct", "self-instruct: a model (local or OpenAI-compatible) writes new tasks from seeds"),
    "dedup": ("clean", "drop exact and near-duplicate rows (MinHash LSH)"),
    "filter": ("clean", "drop rows by length (chars/tokens), language or regex"),
    "mix": ("mix_split", "mix datasets by ratios or counts (seeded)"),
    "split": ("mix_split", "split into train/val(/test), stratified by label"),
    "stats": ("stats", "rows, lengths, labels, duplicates; printed and as a PNG"),
    "check": ("check", "data doctor: load a config's datasets as training would, report bad rows and truncation"),
}


# Commands whose input files are named on the command line take --encoding (check reads the
# registry, whose entries carry their own "encoding").
ENCODED = ("convert", "augment", "generate", "dedup", "filter", "mix", "split", "stats")

# name -> the example line `instill data <name> --help` shows
EXAMPLES = {
    "convert": "instill data convert --input news.jsonl --preset classification --text-field text --label-field output "
               "--choices-field category --out data/news_cls.jsonl --register data/dataset_info.json",
    "augment": "instill data augment data/news_cls.jsonl --preset classification --per-row 2 --out data/news_cls_aug.jsonl",
    "generate": "instill data generate --seed-file seeds.jsonl --num 200 --api-base http://127.0.0.1:8000/v1 "
                "--model qwen2.5-7b-instruct --out data/gen.jsonl",
    "dedup": "instill data dedup data/news_cls.jsonl --threshold 0.8 --out data/news_cls_dedup.jsonl",
    "filter": "instill data filter data/alpaca_zh.json --lang zh --max-chars 2000 --out data/alpaca_zh_clean.json",
    "mix": "instill data mix data/news_cls.jsonl:0.7 data/alpaca_zh_clean.json:0.3 --total 1000 --out data/mix.jsonl",
    "split": "instill data split data/news_cls.jsonl --ratios 0.8,0.1,0.1 --out-dir data --register data/dataset_info.json",
    "stats": "instill data stats data/news_cls.jsonl --plot news_cls_stats.png",
    "check": "instill data check examples/demo_lora.yaml",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill data` and its subcommands."""
    data = subparsers.add_parser("data", help="build, clean and inspect instruction datasets",
                                 epilog="examples:\n  " + "\n  ".join(EXAMPLES[name] for name in ("convert", "check")),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", required=True, metavar="subcommand")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"instill.prep.{module_name}")
        parser = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        getattr(module, f"configure_{name}", getattr(module, "configure", None))(parser)
        if name in ENCODED:
            parser.add_argument("--encoding", default=None,
                                help="text encoding of the input files (default utf-8, BOM accepted; e.g. gbk, gb18030)")
        parser.set_defaults(func=_never_over_input(getattr(module, f"main_{name}", getattr(module, "main", None))))


def _inputs(args: argparse.Namespace) -> list[str]:
    """The data files a command reads (`mix` sources may end in :COUNT or :RATIO)."""
    paths = [getattr(args, key, None) for key in ("dataset", "input", "seed_file")]
    for source in getattr(args, "sources", None) or []:
        path, _, weight = source.rpartition(":")
        paths.append(path if path and weight.replace(".", "", 1).isdigit() else source)
    return [p for p in paths if p]


def _never_over_input(main: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Refuse --out (or --report/--json) naming a file the command reads: outputs never replace their input."""
    @functools.wraps(main)
    def guarded(args: argparse.Namespace) -> int:
        inputs = {Path(p).resolve(): p for p in _inputs(args)}
        for option in ("out", "report", "json"):
            target = getattr(args, option, None)
            if target and Path(target).resolve() in inputs:
                raise DataError(f"--{option} {target} is the input file; write to another file (the input is kept)")
        return main(args)

    return guarded
