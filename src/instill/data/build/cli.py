"""`instill data ...` subcommands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill data` and its subcommands."""
    data = subparsers.add_parser("data", help="build, clean and inspect instruction datasets")
    data.add_subparsers(dest="data_command", required=True, metavar="subcommand")
