"""`instill predict` and `instill eval`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill predict` and `instill eval`."""
