"""`instill data ...` subcommands: each module has ``configure(parser)`` and ``main(args) -> exit code``."""

from __future__ import annotations

import argparse
import importlib

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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill data` and its subcommands."""
    data = subparsers.add_parser("data", help="build, clean and inspect instruction datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="subcommand")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"instill.prep.{module_name}")
        parser = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"configure_{name}", getattr(module, "configure", None))(parser)
        parser.set_defaults(func=getattr(module, f"main_{name}", getattr(module, "main", None)))
