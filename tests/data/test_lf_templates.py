"""Every LLaMA-Factory 0.9.5 template name against LLaMA-Factory's own token ids and labels.

The golden ids (tests/fixtures/lf_templates_golden.json.gz) were made by LLaMA-Factory 0.9.5 itself
(bench/lf_golden_templates.py: `get_template_and_fix_tokenizer` + its supervised processor) on rows of its
demo data. Tokenizer: a stated stand-in for every name, the real Qwen2 tokenizer with its chat template
removed (a base model), every template's stop words and `{"token": ...}` slots added as special tokens (what
LLaMA-Factory's `fix_special_tokens` does; real tokenizers have them). Other control-token text of a template
(`[INST]`, `<start_of_turn>`) is plain text for the stand-in, the same in both tools.

Each name either matches exactly (ids and labels), or has its difference named in `DIFFERENCES` and checked
to be exactly that difference; vision-language names of families instill does not train are refused.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from instill.data import lf_templates
from instill.data.example import Example
from instill.data.templates import get_template
from instill.data.tokenize import IGNORE_INDEX, EncodeOptions, encode
from instill.errors import TemplateError

GOLDEN = json.loads(gzip.open(Path(__file__).parents[1] / "fixtures" / "lf_templates_golden.json.gz").read())
TEXT_DATA = ("alpaca_en_demo", "identity")

# LLaMA-Factory tokenizes its empty thought apart from the answer; instill renders them as one answer text,
# so one token merges across (`</think>` + `\nHello` -> `</think>\n\n\n` + `Hello`): same text, same trained
# text, tokens split differently.
_THOUGHT = "the empty thought and the answer are tokenized as one text (LLaMA-Factory: apart)"
# LLaMA-Factory tokenizes each slot of the first prompt alone; instill tokenizes the prompt as one text.
_PROMPT_SLOTS = "the prompt is tokenized as one text across LLaMA-Factory's slots ({})"
DIFFERENCES: dict[str, tuple[str, str]] = {
    # name: (kind, why)
    **{name: ("same_text", _THOUGHT)
       for name in ("aeva", "gemma4", "gemma4n", "glm4_7", "glm4_moe", "glmz1", "gpt_oss", "hy3", "mimo_v2",
                    "seed_oss")},
    "vicuna": ("same_text", _PROMPT_SLOTS.format("default system 'questions.' + 'USER:' merge")),
    "hunyuan_small": ("same_text", _PROMPT_SLOTS.format("prefix + user slot merge")),
    # instill trains an end of turn: its own `empty` ends an answer with eos + newline; LLaMA-Factory's
    # `empty` writes nothing after the answer, so a model trained with it never learns to stop.
    "empty": ("eos_added", "instill trains the end-of-turn token (LLaMA-Factory's empty writes none)"),
}


def _example(row: dict) -> Example:
    """An alpaca row as LLaMA-Factory's AlpacaDatasetConverter makes it (instruction and input joined)."""
    query = "\n".join(part for part in (row["instruction"], row.get("input", "")) if part)
    return Example([{"role": "user", "content": query}, {"role": "assistant", "content": row["output"]}])


def _labels(ids: list[int], labels: dict) -> list[int]:
    out = [IGNORE_INDEX] * len(ids)
    for start, end in labels["trained"]:
        out[start:end] = ids[start:end]
    for pos, label in labels["other"].items():
        out[int(pos)] = label
    return out


def _trained_text(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE_INDEX])


ACCEPTED = [name for name in sorted(GOLDEN["templates"]) if lf_templates.refusal(name) is None]
REFUSED = [name for name in sorted(GOLDEN["templates"]) if lf_templates.refusal(name) is not None]


def test_every_llamafactory_name_is_known():
    assert sorted(GOLDEN["templates"]) == list(lf_templates.names())
    assert len(lf_templates.names()) == 121
    assert set(DIFFERENCES) <= set(ACCEPTED)


@pytest.mark.parametrize("name", ACCEPTED)
def test_ids_and_labels_match_llamafactory(stand_in, name):
    template = get_template(name, stand_in)
    kind, why = DIFFERENCES.get(name, ("exact", ""))
    mismatched = 0
    for data in TEXT_DATA:
        for meta, gold in zip(GOLDEN["rows"][data], GOLDEN["templates"][name]["data"][data], strict=True):
            got = encode(_example(meta["row"]), template, EncodeOptions(GOLDEN["cutoff_len"]))
            want_ids, want_labels = gold["input_ids"], _labels(gold["input_ids"], gold["labels"])
            if kind == "exact" or (got.input_ids, got.labels) == (want_ids, want_labels):
                assert (got.input_ids, got.labels) == (want_ids, want_labels), f"{name}, {data} row {meta['index']}"
                continue
            mismatched += 1
            if kind == "same_text":  # the same text and trained text, tokens split differently
                assert stand_in.decode(got.input_ids) == stand_in.decode(want_ids), why
                assert _trained_text(stand_in, got.input_ids, got.labels) == _trained_text(
                    stand_in, want_ids, want_labels), why
            else:  # eos_added: LLaMA-Factory's ids, then a trained end of turn
                tail = stand_in(stand_in.eos_token + "\n", add_special_tokens=False)["input_ids"]
                assert got.input_ids == want_ids + tail, why
                assert got.labels == want_labels + tail, why
    if kind != "exact":
        assert mismatched, f"{name} now matches LLaMA-Factory exactly: drop it from DIFFERENCES"


@pytest.mark.parametrize("name", REFUSED)
def test_vision_language_names_of_other_families_are_refused_by_name(stand_in, name):
    with pytest.raises(TemplateError, match=f"template '{name}' is LLaMA-Factory's template for .* instill does"):
        get_template(name, stand_in)


def test_qwen2_vl_family_is_accepted(stand_in):
    for name in ("qwen2_vl", "mimo_vl", "keye_vl", "dots_ocr"):
        assert get_template(name, stand_in).render([{"role": "user", "content": "hi"}])


def test_unknown_name_has_a_close_match_hint(stand_in):
    with pytest.raises(TemplateError, match="unknown template 'qwen3_nothnk' — did you mean 'qwen3_nothink'"):
        get_template("qwen3_nothnk", stand_in)


def test_a_model_with_its_own_template_keeps_it_with_the_names_options(qwen2_tokenizer):
    """Qwen2.5's tokenizer ships a ChatML template: a ChatML-family name selects it (`_nothink` switches thinking
    off, baked into the jinja so a saved model renders the same); a name LLaMA-Factory always writes over the
    tokenizer's template (alpaca, vicuna) or of another family (llama3) renders LLaMA-Factory's slots."""
    own = qwen2_tokenizer.chat_template
    assert get_template("yi", qwen2_tokenizer).jinja == own
    assert get_template("qwen3_nothink", qwen2_tokenizer).jinja == "{%- set enable_thinking = false -%}" + own
    assert get_template("qwen3_nothink", qwen2_tokenizer).end_of_turn == "<|im_end|>"
    for name in ("alpaca", "vicuna", "llama3"):
        assert get_template(name, qwen2_tokenizer).jinja == lf_templates.slots_jinja(name, lf_templates.table()[name])


def test_reasoning_template_thinking_off_puts_the_empty_thought_in_the_prompt(stand_in):
    template = get_template("qwen3", stand_in)
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\nhm\n</think>\n\nhello"}]
    assert template.render(conv).endswith("<think>\nhm\n</think>\n\nhello<|im_end|>\n")  # a thought is kept
    off = template.render(conv, enable_thinking=False)
    assert off.endswith("assistant\n<think>\n\n</think>\n\nhello<|im_end|>\n")
    assert template.render(conv[:1], add_generation_prompt=True, enable_thinking=False).endswith(
        "assistant\n<think>\n\n</think>\n\n")


def test_templates_without_a_tool_format_say_so(stand_in):
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]
    with pytest.raises(TemplateError, match="template 'glm4' has no tool format in instill yet"):
        get_template("glm4", stand_in).render([{"role": "user", "content": "hi"}], tools)
