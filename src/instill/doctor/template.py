"""Template checks: which template, the label mask on a real sample, prefix stability, the stop token
trained, and the tokenizer's eos / pad against the template's end of turn.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import groupby
from pathlib import Path
from typing import Any

from instill.config import RunConfig
from instill.data.example import Example
from instill.data.templates import NAMED, ChatTemplate, TemplateChoice, get_template
from instill.data.tokenize import IGNORE_INDEX, EncodeOptions, assistant_spans, encode
from instill.doctor.table import FAIL, PASS, WARN, Check
from instill.errors import TemplateError

AREA = "template"
# A two-turn conversation every chat template should render prefix by prefix.
PROBE = Example(
    messages=[
        {"role": "user", "content": "Hello, who are you?"},
        {"role": "assistant", "content": "I am a helpful assistant."},
        {"role": "user", "content": "你好，今天星期几？"},
        {"role": "assistant", "content": "今天星期三。"},
    ],
    source="doctor probe",
)
_DIM, _BRIGHT, _RESET = "\x1b[2m", "\x1b[1;32m", "\x1b[0m"
_PICK = f"set template: to one that matches the model (auto = the tokenizer's own; named: {', '.join(NAMED)})"


def choose_template(config: RunConfig, tokenizer: Any) -> tuple[ChatTemplate | None, Check]:
    name = config.data.template
    try:
        template = get_template(TemplateChoice.of(config.data), tokenizer)
    except TemplateError as err:
        return None, Check(FAIL, AREA, "template", str(err), _PICK)
    which = "the tokenizer's own chat template" if name == "auto" else "named template"
    eot = f"assistant turns end with {template.end_of_turn!r}" if template.end_of_turn else "no end-of-turn text"
    return template, Check(PASS, AREA, "template", f"{name} ({which}); {eot}")


def is_reasoning(config: RunConfig, tokenizer: Any) -> bool:
    """A template that writes <think> blocks (Qwen3, DeepSeek-R1 style), with thinking on (enable_thinking)."""
    return (config.data.template == "auto" and config.data.enable_thinking
            and "<think>" in str(getattr(tokenizer, "chat_template", "") or ""))


def _prefix_check(template: ChatTemplate, sample: Example | None) -> Check:
    try:
        for example in [PROBE] + ([sample] if sample is not None else []):
            assistant_spans(example, template)
    except TemplateError as err:
        return Check(FAIL, AREA, "prefix-stable", str(err), _PICK)
    where = "a two-turn probe" + (f" and {sample.source}" if sample is not None else "")
    return Check(PASS, AREA, "prefix-stable", f"rendering a conversation prefix by prefix matches the whole ({where})")


def _stop_token_check(template: ChatTemplate, tokenizer: Any, config: RunConfig) -> tuple[Check, int | None]:
    """The end of turn is one token, and it is trained at the end of every assistant turn."""
    eot = template.end_of_turn
    fix = (f"{_PICK}; the end of turn must be one token of this tokenizer "
           "(or add it: tokenizer.add_special_tokens and resize the embeddings)")
    if not eot:
        return Check(FAIL, AREA, "stop token", f"template '{template.name}' ends assistant turns with nothing "
                     "(the tokenizer has no eos): the model never learns to stop", fix), None
    ids = tokenizer(eot, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = " ".join(repr(tokenizer.decode([i])) for i in ids[:8])
        return Check(FAIL, AREA, "stop token", f"assistant turns end with {eot!r}, which this tokenizer splits into "
                     f"{len(ids)} tokens ({pieces}): no single stop token is trained, so generation never stops", fix), None
    eot_id = ids[0]
    d = config.data
    try:
        encoded = encode(PROBE, template, replace(EncodeOptions.from_args(d), cutoff_len=4096))
    except TemplateError as err:
        return Check(FAIL, AREA, "stop token", str(err), _PICK), eot_id
    turns = 1 if d.mask_history else sum(m["role"] == "assistant" for m in PROBE.messages)
    trained = sum(label == eot_id for label in encoded.labels)
    if trained < turns:
        return Check(FAIL, AREA, "stop token", f"{eot!r} (id {eot_id}) is trained in {trained} of {turns} assistant "
                     "turns: the model never learns to stop", fix), eot_id
    return Check(PASS, AREA, "stop token", f"{eot!r} (id {eot_id}) is one token and trained at the end of every "
                 "assistant turn"), eot_id


def generation_stop_ids(model_dir: Path) -> list[int]:
    """eos ids in the model's generation_config.json (what transformers' generate and vLLM stop at)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    except OSError:
        return []
    return [eos] if isinstance(eos, int) else list(eos or [])


def _special_tokens_check(tokenizer: Any, eot_id: int, model_dir: Path, vocab_size: int | None) -> Check:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    eot = tokenizer.decode([eot_id])
    too_big = [f"{what} id {i}" for what, i in (("end of turn", eot_id), ("pad", pad)) if vocab_size and i is not None
               and i >= vocab_size]
    if too_big:
        return Check(FAIL, AREA, "eos / pad", f"{', '.join(too_big)} ≥ the model's vocab_size {vocab_size}: the "
                     "embedding has no row for it", "use the tokenizer that belongs to model_name_or_path")
    pad_note = f"pad {tokenizer.pad_token!r}" + (" (= eos; labels are masked by position, so eos stays trained)"
                                                   if pad == eos else "")
    if eos == eot_id:
        return Check(PASS, AREA, "eos / pad", f"eos {tokenizer.eos_token!r} = the end of turn; {pad_note}")
    stops = generation_stop_ids(model_dir)
    if eot_id in stops:
        return Check(PASS, AREA, "eos / pad", f"eos {tokenizer.eos_token!r} ≠ end of turn {eot!r}, but the model's "
                     f"generation_config stops at both; {pad_note}")
    return Check(WARN, AREA, "eos / pad", f"the tokenizer's eos is {tokenizer.eos_token!r} but turns end with {eot!r}, "
                 f"and generation_config.json stops only at {stops or 'eos'}: transformers' generate or vLLM on the "
                 "base model plus this adapter will not stop at the end of a turn",
                 "serve the model `instill export` writes (its generation_config stops at the end of turn), "
                 "or use a template whose end of turn is the eos")


def template_checks(template: ChatTemplate, tokenizer: Any, config: RunConfig, sample: Example | None,
                    model_dir: Path, vocab_size: int | None) -> list[Check]:
    checks = [_prefix_check(template, sample)]
    stop, eot_id = _stop_token_check(template, tokenizer, config)
    checks.append(stop)
    if eot_id is not None:
        checks.append(_special_tokens_check(tokenizer, eot_id, model_dir, vocab_size))
    return checks


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} … ({len(text) - limit} characters) … {text[-half:]}"


def mask_view(example: Example, template: ChatTemplate, config: RunConfig, colour: bool, limit: int = 400) -> str:
    """The sample as training encodes it (the data config's options, truncation included), shown by `render_mask`."""
    encoded = encode(example, template, EncodeOptions.from_args(config.data))
    return render_mask(encoded.input_ids, encoded.labels, template.tokenizer, colour, limit)


def mask_segments(input_ids: list[int], labels: list[int], tokenizer: Any, limit: int = 400) -> list[tuple[str, bool]]:
    """The encoded sample as (text, trained) runs; a run longer than `limit` characters is shortened in the middle."""
    return [(_shorten(tokenizer.decode([i for i, _ in run], skip_special_tokens=False), limit), trained)
            for trained, run in groupby(zip(input_ids, labels), key=lambda p: p[1] != IGNORE_INDEX)]


def render_mask(input_ids: list[int], labels: list[int], tokenizer: Any, colour: bool, limit: int = 400) -> str:
    """Prompt tokens dim, trained tokens bright; without colour, trained text is marked ⟦like this⟧."""
    parts = []
    for text, trained in mask_segments(input_ids, labels, tokenizer, limit):
        if colour:
            parts.append(f"{_BRIGHT if trained else _DIM}{text}{_RESET}")
        else:
            parts.append(f"⟦{text}⟧" if trained else text)
    return "".join(parts)
