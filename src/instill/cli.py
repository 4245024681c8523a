"""`instill <command>`: one entry point. User mistakes print one line and exit 2, never a traceback.

Quiet by default: known-harmless library warnings are dropped here, by exact message (`quiet.py`);
`-v` / `--verbose` (anywhere on the line) or INSTILL_VERBOSITY=debug shows everything. When the
progress bars' stream is not a terminal (CI, nohup, a pipe), bars become periodic lines.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

from instill import __version__
from instill.errors import InstillError


def _train(args: argparse.Namespace) -> int:
    from instill.config import check_training, load_config
    from instill.ranks import is_main
    from instill.train.distributed import relaunch_command

    config = load_config(args.config, args.overrides)
    check_training(config, args.config)
    if config.train.do_train:
        relaunch = relaunch_command(["train", args.config, *args.overrides])
        if relaunch is not None:  # FORCE_TORCHRUN=1 or several devices: the same command on every device
            print(f"[instill] running under torchrun: {shlex.join(relaunch)}", flush=True)
            code = subprocess.call(relaunch)
        else:
            code = _train_here(args, config)
        if code:
            return code
    if config.eval.do_predict and is_main():  # under torchrun, rank 0 predicts
        from instill.evaluate.runner import run

        run(config, llamafactory_predictions=True)
    elif not config.train.do_train:
        print("[instill] do_train and do_predict are false: nothing to do")
    return 0


def _keys(args: argparse.Namespace) -> int:
    """Every config key with its default and help; LLaMA-Factory keys instill ignores or refuses, with why."""
    from instill.config import ALIASES, SECTIONS
    from instill.key_policy import POLICY

    pattern = (args.pattern or "").lower()
    for section, cls in SECTIONS.items():
        for key, field in cls.model_fields.items():
            if pattern in key:
                default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
                print(f"{key}  [{section}] default {default}\n    {field.description}")
    for alias, key in ALIASES.items():
        if pattern in alias:
            print(f"{alias}\n    another name for {key}")
    for key, policy in POLICY.items():
        if pattern in key:
            print(f"{key}  [LLaMA-Factory: {policy.action}]\n    {policy.reason}")
    return 0


def _train_here(args: argparse.Namespace, config: object) -> int:
    from instill.train.checkpoint import SaveFailed
    from instill.train.interrupt import TrainingInterrupted
    from instill.train.run import run_training

    again = " ".join(shlex.quote(a) for a in [args.config, *args.overrides]
                     if not a.startswith("resume_from_checkpoint="))
    resume = f"instill train {again} resume_from_checkpoint=true"
    try:
        run_training(config)
    except TrainingInterrupted as stop:
        if stop.checkpoint is None:
            print(f"instill: interrupted at step {stop.step}; no checkpoint was saved", file=sys.stderr)
            return 130
        print(f"instill: interrupted at step {stop.step}; checkpoint saved in {stop.checkpoint}; resume with: "
              f"{resume}", file=sys.stderr)
        return 130
    except SaveFailed as err:
        then = f"resume with: {resume}" if err.last else "run again"
        print(f"instill: error: {err}; make room (or fix permissions), then {then}", file=sys.stderr)
        return 2
    return 0


def _export(args: argparse.Namespace) -> int:
    from instill.config import load_config
    from instill.model.export import export_model

    config = load_config(args.config, args.overrides)
    out = export_model(config, args.expand_layers)
    size = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**20
    what = "merged model" if config.model.adapter_name_or_path else \
        "no adapter_name_or_path, so nothing merged: the base model re-saved"
    if args.expand_layers:
        what = f"model expanded by {args.expand_layers} identity blocks (LLaMA Pro)"
    kind = config.export.export_dtype
    if config.export.export_quantization_bit is not None:
        what, kind = "quantized model", f"{config.export.export_quantization_bit}-bit {config.export.export_quantization_method}"
    print(f"[instill] {what} written to {out} ({size:,.0f} MiB of safetensors, {kind})")
    if config.export.export_format == "gguf":
        from instill.model.gguf import gguf_path, ollama_commands

        gguf_file = gguf_path(out, config.export.export_gguf_type)
        print(f"[instill] GGUF written to {gguf_file} ({gguf_file.stat().st_size / 2**20:,.0f} MiB, "
              f"{config.export.export_gguf_type}); Ollama Modelfile: {out / 'Modelfile'}")
        create, run = ollama_commands(out)
        print(f"[instill] run it in Ollama: {create} && {run}")
    if config.export.export_hub_model_id:
        print(f"[instill] uploaded to the Hugging Face Hub: {config.export.export_hub_model_id}")
    if args.expand_layers:
        print(f"[instill] train its new blocks with: model_name_or_path: {out}, finetuning_type: freeze, "
              f"freeze_trainable_layers: {args.expand_layers}, use_llama_pro: true")
    return 0


def _version_line() -> str:
    parts = []
    for name in ("torch", "transformers", "peft", "trl", "datasets"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return f"instill {__version__} ({', '.join(parts)})"


def _examples(*lines: str) -> dict:
    """add_parser kwargs for an `example:` epilog shown by --help."""
    head = "example:" if len(lines) == 1 else "examples:"
    return {"epilog": head + "".join(f"\n  {line}" for line in lines),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


class _Parser(argparse.ArgumentParser):
    """Usage mistakes print one line (the usage text only on --help) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="instill", description="Raw data to an instruction-tuned LLM.",
        **_examples("instill doctor examples/demo_lora.yaml", "instill train examples/demo_lora.yaml",
                    "instill eval examples/demo_lora.yaml --compare base"))
    parser.add_argument("--version", action="version", version=_version_line())
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show every library warning and instill's debug log (also INSTILL_VERBOSITY=debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    train = sub.add_parser("train", help="fine-tune a model as a YAML config says",
                           **_examples("instill train examples/demo_lora.yaml",
                                       "instill train my.yaml learning_rate=5e-5 max_samples=200"))
    train.add_argument("config", help="YAML file with LLaMA-Factory style keys")
    train.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="override config keys")
    train.set_defaults(func=_train)
    keys = sub.add_parser("keys", help="list config keys: default, help, and what instill does with LLaMA-Factory's",
                          **_examples("instill keys", "instill keys lora", "instill keys galore"))
    keys.add_argument("pattern", nargs="?", help="only keys containing this text")
    keys.set_defaults(func=_keys)
    export = sub.add_parser("export", help="merge adapters into the base model and save it",
                            **_examples("instill export examples/export_demo.yaml",
                                        "instill export examples/export_demo.yaml --expand-layers 8"))
    export.add_argument("config", help="YAML with model_name_or_path, adapter_name_or_path, export_dir")
    export.add_argument("--expand-layers", type=int, default=0, metavar="N",
                        help="LLaMA Pro: insert N identity-initialised decoder blocks (the output is unchanged) "
                             "to train with use_llama_pro: true, freeze_trainable_layers: N")
    export.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="override config keys")
    export.set_defaults(func=_export)
    # Each family of commands registers its own subcommands (`register(subparsers)`).
    from instill.board.cli import register as register_board
    from instill.doctor.cli import register as register_doctor
    from instill.evaluate.cli import register as register_eval
    from instill.infer.cli import register as register_infer
    from instill.prep.cli import register as register_data
    from instill.report.cli import register as register_report

    register_eval(sub)
    register_infer(sub)
    register_data(sub)
    register_report(sub)
    register_doctor(sub)
    register_board(sub)
    return parser


# llamafactory-cli verbs instill has no command for: what to use instead.
LLAMAFACTORY_VERBS = {
    "webui": "instill's browser front end is `instill board` (configs, data preview, runs with their curves, "
             "compare, eval, chat, export)",
    "env": "use `instill doctor CONFIG` (versions, device, memory and disk for that run) or `instill --version`",
    "version": "use `instill --version`",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line as a Namespace; argparse errors exit with status 2 as usual."""
    argv = [a for a in argv if a not in ("-v", "--verbose")]  # accepted before or after the command
    if argv and argv[0] in LLAMAFACTORY_VERBS:
        print(f"instill: '{argv[0]}' is a llamafactory-cli command: {LLAMAFACTORY_VERBS[argv[0]]}", file=sys.stderr)
        raise SystemExit(2)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also come after options (`instill eval c.yaml --compare base eval_mode=score`).
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    from instill.console import ProgressLines
    from instill.quiet import quiet, verbose_requested

    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    verbose = verbose_requested(argv)
    args = parse_args(argv)
    stderr = sys.stderr
    if not stderr.isatty():
        sys.stderr = ProgressLines(stderr)
    try:
        with quiet(verbose):
            return args.func(args)
    except InstillError as err:
        print(f"instill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("instill: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stderr = stderr


if __name__ == "__main__":
    sys.exit(main())
