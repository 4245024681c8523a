"""A finished run: the chat template saved in output_dir (and in an exported model) must render
exactly as the template training used, or serving builds prompts the model never saw; an exported
model's generation_config must stop at the end-of-turn token.

Templates are compared by what they render on probe conversations, not by their source text, so
an equivalent rewrite passes and any change to the prompts fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instill.config import RunConfig, load_config
from instill.data.example import Example
from instill.data.templates import ChatTemplate, TemplateChoice, get_template
from instill.doctor.table import FAIL, PASS, SKIP, Check
from instill.doctor.template import PROBE, generation_stop_ids
from instill.errors import InstillError, TemplateError

AREA = "finished run"
_PROBES = [
    PROBE.messages[:2],
    [{"role": "system", "content": "You are a careful assistant."}, *PROBE.messages],
]


def _render(template: ChatTemplate, messages: list[dict], gen: bool) -> str:
    try:
        return template.render(messages, None, add_generation_prompt=gen)
    except TemplateError as err:
        return f"<render error: {err}>"


def first_difference(trained: ChatTemplate, saved: ChatTemplate, sample: Example | None) -> str | None:
    """Where the saved template renders differently from the trained one, or None."""
    conversations = _PROBES + ([sample.messages] if sample is not None else [])
    for messages in conversations:
        for gen, msgs in ((False, messages), (True, messages[:-1])):
            a, b = _render(trained, msgs, gen), _render(saved, msgs, gen)
            if a != b:
                at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                start = max(at - 20, 0)
                return f"at character {at}: trained {a[start:at + 30]!r} vs saved {b[start:at + 30]!r}"
    return None


def _saved_template(directory: Path, trained: ChatTemplate, sample: Example | None, what: str) -> Check:
    from transformers import AutoTokenizer

    name = f"{what} template"
    if trained.name == "auto":
        fix = f"copy the base model's chat template (chat_template.jinja or tokenizer_config.json) back into {directory}"
    else:
        fix = (f"serve with template: {trained.name} (instill predict / eval do), or save that template's jinja as "
               f"{directory}/chat_template.jinja")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        saved = get_template("auto", tokenizer)
    except (OSError, ValueError, TemplateError) as err:
        return Check(FAIL, AREA, name, f"{directory}: no usable chat template ({str(err).splitlines()[0]})", fix)
    diff = first_difference(trained, saved, sample)
    if diff:
        return Check(FAIL, AREA, name, f"the chat template saved in {directory} renders differently from the one "
                     f"trained with ({trained.name}), {diff}: serving it builds prompts the model never saw", fix)
    return Check(PASS, AREA, name, f"{directory} renders exactly as the template trained with ({trained.name})")


def _export_stop(export_dir: Path, tokenizer: Any, trained: ChatTemplate) -> Check:
    eot_id = tokenizer.convert_tokens_to_ids(trained.end_of_turn) if trained.end_of_turn else None
    stops = generation_stop_ids(export_dir)
    if eot_id is None or eot_id in stops:
        return Check(PASS, AREA, "export stop", f"{export_dir}/generation_config.json stops at {stops}")
    return Check(FAIL, AREA, "export stop", f"{export_dir}/generation_config.json stops at {stops or 'nothing'}, not at "
                 f"the end of turn {trained.end_of_turn!r} (id {eot_id}): the exported model runs on past its answer",
                 f"export again with `instill export`, or add {eot_id} to eos_token_id in generation_config.json")


def saved_run_checks(config: RunConfig, run_dir: Path, base_tokenizer: Any, sample: Example | None) -> list[Check]:
    """Checks of what training (and export) left on disk; SKIP when there is no finished run."""
    has_model = any((run_dir / f).is_file() for f in ("adapter_config.json", "config.json"))
    run_config = run_dir / "run_config.yaml"
    export_dir = Path(config.export.export_dir) if config.export.export_dir else None
    exported = export_dir is not None and (export_dir / "config.json").is_file()
    if not (has_model or run_config.is_file() or exported):
        return [Check(SKIP, AREA, "saved template", f"no finished run in {run_dir} (nothing trained yet)")]
    checks: list[Check] = []
    trained_name, trained_choice = config.data.template, TemplateChoice.of(config.data)
    if run_config.is_file():
        try:
            trained_choice = TemplateChoice.of(load_config(run_config).data)
            trained_name = trained_choice.name
        except InstillError as err:
            checks.append(Check(FAIL, AREA, "run config", str(err), f"{run_config} was edited; restore or retrain"))
        if trained_name != config.data.template:
            checks.append(Check(FAIL, AREA, "template name", f"{run_dir} was trained with template: {trained_name}, this "
                                f"config says template: {config.data.template}",
                                f"set template: {trained_name} to evaluate or serve this run"))
    try:
        trained = get_template(trained_choice, base_tokenizer)
    except TemplateError as err:
        return checks + [Check(FAIL, AREA, "trained template", str(err),
                               "set template: to the one the run was trained with")]
    if has_model:
        checks.append(_saved_template(run_dir, trained, sample, "saved"))
    else:
        checks.append(Check(SKIP, AREA, "saved template", f"no trained model in {run_dir}"))
    if exported:
        checks.append(_saved_template(export_dir, trained, sample, "exported"))
        checks.append(_export_stop(export_dir, base_tokenizer, trained))
    return checks
