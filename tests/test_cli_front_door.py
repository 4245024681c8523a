"""The front door: --version, an example in every --help, -v, quiet filters, progress lines for logs,
and a training run whose output is only instill's lines and progress (no Python warnings)."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from tqdm import tqdm

from instill import __version__
from instill.cli import build_parser, main, parse_args
from instill.console import ProgressLines
from instill.quiet import HARMLESS_LOG_RECORDS, HARMLESS_WARNINGS, quiet, verbose_requested
from tests.conftest import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"instill {__version__} (torch ") and "transformers " in out


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every command and subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_every_command_has_an_example_that_parses():
    commands = dict(_commands(build_parser()))
    assert {"train", "export", "predict", "eval", "report", "doctor", "data", "data check"} <= {
        " ".join(p) for p in commands}
    for path, parser in commands.items():
        help_text = parser.format_help()
        examples = [line.strip() for line in help_text.splitlines() if line.strip().startswith("instill ")]
        mine = [e for e in examples if e.startswith("instill " + " ".join(path))]
        assert mine, f"`instill {' '.join(path)} --help` shows no example line"
        for example in examples:
            parse_args(shlex.split(example, comments=True)[1:])  # SystemExit(2) on a broken example


def test_verbose_flag_anywhere(monkeypatch):
    monkeypatch.delenv("INSTILL_VERBOSITY", raising=False)
    assert parse_args(["-v", "doctor", "c.yaml"]).config == "c.yaml"
    assert parse_args(["doctor", "c.yaml", "--verbose", "lr=1"]).overrides == ["lr=1"]
    assert verbose_requested(["doctor", "c.yaml", "-v"]) and not verbose_requested(["doctor", "c.yaml"])
    monkeypatch.setenv("INSTILL_VERBOSITY", "debug")
    assert verbose_requested(["doctor", "c.yaml"])


def test_user_mistake_is_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"instill: error: config file not found: {tmp_path / 'nope.yaml'}\n"


def test_quiet_drops_known_warnings_by_exact_message(caplog):
    known = HARMLESS_WARNINGS[0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet():
            warnings.warn(known[1], known[0])
            warnings.warn(known[1] + " And something new.", known[0])  # not the exact text: shown
            warnings.warn(known[1], UserWarning)  # same text, another category: shown
        with quiet(verbose=True):
            warnings.warn(known[1], known[0])
    assert [str(w.message) for w in seen] == [known[1] + " And something new.", known[1], known[1]]

    name = "bitsandbytes.backends.cpu.ops"
    assert name in HARMLESS_LOG_RECORDS
    logger = logging.getLogger(name)
    message = "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already " \
              "`pip install kernels` and the kernels >= 0.11.1"
    with caplog.at_level(logging.WARNING, logger=name), quiet():
        logger.warning(message, "ImportError('kernels')")
        logger.warning("Failed to load CPU gemm_4bit_forward: something else")
    assert [r.getMessage() for r in caplog.records] == ["Failed to load CPU gemm_4bit_forward: something else"]
    assert not logger.filters  # removed again after the command


def test_quiet_filters_the_real_library_warnings():
    """The filtered texts are what the installed libraries really say (a reworded warning shows again)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8))
    with warnings.catch_warnings(record=True) as loud:
        warnings.simplefilter("always")
        model.is_gradient_checkpointing  # noqa: B018 — transformers' own deprecated alias
        if not torch.accelerator.is_available():
            list(torch.utils.data.DataLoader([1, 2], pin_memory=True))
    shown = {str(w.message) for w in loud}
    with warnings.catch_warnings(record=True) as quietened:
        warnings.simplefilter("always")
        with quiet():
            model.is_gradient_checkpointing  # noqa: B018
            list(torch.utils.data.DataLoader([1, 2], pin_memory=True))
    for category, message, _, _ in HARMLESS_WARNINGS:
        if "pin_memory" in message and torch.accelerator.is_available():
            continue
        assert message in shown, f"the library no longer says: {message}"
    assert not [str(w.message) for w in quietened]


@pytest.mark.parametrize("logger_name", sorted(HARMLESS_LOG_RECORDS))
def test_filtered_log_messages_exist_in_the_library(logger_name):
    for pattern, relative, _ in HARMLESS_LOG_RECORDS[logger_name]:
        package = relative.split("/")[0]
        source = Path(importlib.util.find_spec(package).origin).parent.parent / relative
        text = source.read_text(encoding="utf-8")
        joined = re.sub(r'"\s*\n\s*f?"', "", text)  # adjacent string literals, as Python joins them
        for fragment in re.split(r" \\w\+", pattern):
            assert re.sub(r"\\(.)", r"\1", fragment) in joined, (relative, fragment)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def test_progress_becomes_periodic_lines():
    now = [0.0]
    buf = io.StringIO()
    stream = ProgressLines(buf, interval=30, clock=lambda: now[0])
    with tqdm(total=10, desc="Tokenizing train", unit="sample", file=stream, mininterval=0, miniters=1) as bar:
        for _ in range(10):
            now[0] += 10
            bar.update(1)
            if now[0] == 50:
                with tqdm(total=4, file=stream, position=1, leave=False, mininterval=0) as inner:  # eval inside training
                    for _ in range(4):
                        inner.update(1)
    stream.write("[instill] plain text passes\n")
    text = buf.getvalue()
    assert "\r" not in text and "\x1b" not in text and "\n\n" not in text
    lines = _lines(text)
    assert [line.split(" (")[0] for line in lines[:-1]] == [
        "Tokenizing train: 3/10", "Tokenizing train: 6/10", "Tokenizing train: 9/10", "Tokenizing train: 10/10"]
    assert lines[-1] == "[instill] plain text passes"


def test_short_bars_print_nothing():
    buf = io.StringIO()
    stream = ProgressLines(buf, interval=30, clock=lambda: 0.0)
    for _ in tqdm(range(5), desc="Checking", file=stream, mininterval=0):
        pass
    assert buf.getvalue() == ""


# Everything a training run may print. Trainer's metric dicts come from transformers' ProgressCallback;
# the lead's train/ refactor is to turn them into [instill] lines.
STDOUT_ALLOWED = re.compile(r"^(\[instill\] .*|\{'(loss|eval_loss|train_runtime)'.*\})$")
STDERR_ALLOWED = re.compile(r"^[^:]*: \d+/\d+ \(\d+%\) \[.*\]$")  # ProgressLines


def test_training_log_has_no_python_warnings(tiny_qwen2, tmp_path):
    rows = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(12)]
    data = write_dataset(tmp_path / "data", "memo", rows)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_qwen2), "template": "auto", "dataset": "memo", "dataset_dir": str(data),
        "output_dir": str(tmp_path / "out"), "cutoff_len": 48, "per_device_train_batch_size": 4,
        "max_steps": 3, "logging_steps": 1, "save_steps": 2, "val_size": 4, "eval_strategy": "steps",
        "eval_steps": 2, "learning_rate": 1e-4, "lora_rank": 4, "report_to": "none", "plot_loss": True,
    }))
    env = {k: v for k, v in os.environ.items() if k != "INSTILL_VERBOSITY"}
    run = subprocess.run([sys.executable, "-m", "instill.cli", "train", str(config)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "all_results.json").read_text())["train_loss"] > 0
    stray = [line for line in _lines(run.stdout) if not STDOUT_ALLOWED.match(line)]
    stray += [line for line in _lines(run.stderr) if not STDERR_ALLOWED.match(line)]
    assert not stray, "\n".join(stray)
    assert "[instill] done (sft): 3 steps" in run.stdout
