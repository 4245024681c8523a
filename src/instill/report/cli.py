"""`instill report <output_dir>`: (re)write output_dir/report.html from what the run left there.

    instill report saves/my-run            # after instill train and/or instill eval
"""

from __future__ import annotations

import argparse


def _report(args: argparse.Namespace) -> int:
    from instill.report.html import write_report

    path = write_report(args.output_dir)
    print(f"[instill] report written to {path} (self-contained: open it in any browser, or send the file)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill report`."""
    report = subparsers.add_parser("report", help="write one self-contained report.html for a run directory",
                                   epilog="example:\n  instill report saves/demo-lora",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("output_dir", help="the run's output_dir (where instill train / instill eval wrote)")
    report.set_defaults(func=_report)
