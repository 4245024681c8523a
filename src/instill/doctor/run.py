"""`instill doctor config.yaml`: every check in order, then the sample with its label mask and one table.

Order of work: environment (needs nothing) → config → model files and tokenizer → template →
data (gives a real sample and the training-set size) → template checks on that sample → memory
and disk → config smells → what a finished run left on disk → one greedy generation. A failure
that makes later checks meaningless (no valid config, no tokenizer) ends the work early; the
table shows what was found so far.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from instill.config import load_config
from instill.console import say
from instill.data.templates import get_template
from instill.doctor import environment, resources
from instill.doctor.data import data_checks
from instill.doctor.generation import generation_check
from instill.doctor.saved import saved_run_checks
from instill.doctor.smells import smell_checks
from instill.doctor.table import FAIL, PASS, SKIP, Check, exit_code, render, summary, use_colour
from instill.doctor.template import choose_template, is_reasoning, mask_view, template_checks
from instill.errors import ConfigError, InstillError, TemplateError
from instill.hub import resolve_model_args
from instill.model.load import load_tokenizer

AREAS = ("environment", "template", "finished run", "generation", "data", "config")


def _sorted(checks: list[Check]) -> list[Check]:
    return sorted(checks, key=lambda c: AREAS.index(c.area))


def _vocab_size(model_dir: Path, trust_remote_code: bool) -> int | None:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code).get_text_config().vocab_size
    except (OSError, ValueError, AttributeError):
        return None


def run_doctor(config_path: str, output_dir: str | None = None, overrides: list[str] | tuple[str, ...] = (),
               generate: bool = True, out: TextIO | None = None) -> int:
    """Run every check; print the table; return 0 (all pass), 1 (warnings) or 2 (failures)."""
    out = out or sys.stdout
    checks = diagnose(config_path, output_dir, overrides, generate, out)
    print(render(checks, use_colour(out)), file=out, flush=True)
    code = exit_code(checks)
    verdict = {0: "ready", 1: "ready, with warnings", 2: "not ready: fix the FAIL lines"}[code]
    say(f"doctor: {summary(checks)} — {verdict}")
    return code


def diagnose(config_path: str, output_dir: str | None = None, overrides: list[str] | tuple[str, ...] = (),
             generate: bool = True, out: TextIO | None = None) -> list[Check]:
    """Every check, in table order. The sample with its label mask is printed to `out` on the way."""
    out = out or sys.stdout
    if not Path(config_path).is_file():
        raise ConfigError(f"config file not found: {config_path}")
    say(f"doctor: {config_path}")
    checks = [environment.versions_check()]
    device = environment.probe_device()
    checks.append(environment.device_check(device))
    try:
        config = load_config(config_path, overrides)
    except InstillError as err:
        checks.append(Check(FAIL, "config", "config", str(err), "fix the key named above: `instill train` refuses "
                            "this config before loading anything"))
        return _sorted(checks)
    checks += [environment.precision_check(device, config.train.bf16, config.train.fp16),
               environment.threads_check(config)]
    run_dir = Path(output_dir or config.train.output_dir)

    m = config.model
    try:
        model_dir = resolve_model_args(m)
        tokenizer = load_tokenizer(m, model_dir)
    except InstillError as err:
        checks.append(Check(FAIL, "environment", "model", str(err), "fix model_name_or_path"))
        return _sorted(checks)
    checks.append(Check(PASS, "environment", "model", f"{m.model_name_or_path} ({model_dir})"))

    template, check = choose_template(config, tokenizer)
    checks.append(check)
    found = data_checks(config, template or get_template("chatml", tokenizer), template_ok=template is not None)
    checks += found.checks

    if template is not None:
        checks += template_checks(template, tokenizer, config, found.sample, model_dir,
                                  _vocab_size(model_dir, m.trust_remote_code))
        if found.sample is not None:
            try:
                view = mask_view(found.sample, template, config, use_colour(out))
            except TemplateError:
                view = None  # the prefix-stable row says why
            if view is not None:
                say(f"a training sample as the model sees it ({found.sample.source}); "
                    + ("dim: prompt, bright: trained" if use_colour(out) else "trained tokens between ⟦ ⟧"))
                print(view, file=out, flush=True)

    tokens = min(config.data.cutoff_len, found.longest or config.data.cutoff_len)
    resource_rows, estimate = resources.resource_checks(model_dir, config, device, tokens, found.n_train, run_dir)
    checks += resource_rows
    checks += smell_checks(config, found.n_train, found.n_val, is_reasoning(config, tokenizer), found.thinking)
    checks += saved_run_checks(config, run_dir, tokenizer, found.sample)

    if not generate:
        checks.append(Check(SKIP, "generation", "stops", "skipped (--no-generate)"))
    elif template is None:
        checks.append(Check(SKIP, "generation", "stops", "needs a working template"))
    elif estimate is not None and estimate.weights > resources.available_ram():
        checks.append(Check(SKIP, "generation", "stops", "the model's weights do not fit in the available RAM"))
    else:
        say("doctor: one greedy generation, to see where the model stops")
        checks.append(generation_check(config, run_dir, found.sample, bool(getattr(tokenizer, "chat_template", None))))
    return _sorted(checks)
