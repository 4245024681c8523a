"""`instill doctor config.yaml [key=value ...] [--output-dir DIR] [--no-generate]`."""

from __future__ import annotations

import argparse


def _doctor(args: argparse.Namespace) -> int:
    from instill.doctor.run import run_doctor

    return run_doctor(args.config, args.output_dir, args.overrides, generate=not args.no_generate)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill doctor`."""
    doctor = subparsers.add_parser(
        "doctor", help="check a config, its data, template, model and this machine; PASS/WARN/FAIL with fixes",
        description="Check a training config before a run (or a finished run): environment, memory, template and\n"
                    "label mask, stop token, data, config smells. Exit status 0 all pass, 1 warnings, 2 failures.",
        epilog="examples:\n  instill doctor examples/demo_lora.yaml\n"
               "  instill doctor examples/demo_lora.yaml --output-dir saves/demo-lora   # also check a finished run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("config", help="the training YAML (the one you give `instill train`)")
    doctor.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="override config keys")
    doctor.add_argument("--output-dir", metavar="DIR",
                        help="a finished run to check (saved template, tuned model); default: the config's output_dir")
    doctor.add_argument("--no-generate", action="store_true",
                        help="skip the one-sample generation (which loads the model)")
    doctor.set_defaults(func=_doctor)
