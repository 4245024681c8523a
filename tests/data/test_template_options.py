"""`default_system` and `enable_thinking` (LLaMA-Factory's data keys) against LLaMA-Factory's own ids.

The golden ids (tests/fixtures/lf_options_golden.json) were made by LLaMA-Factory 0.9.5 itself
(bench/lf_golden_options.py) with the stand-in tokenizer of test_lf_templates.py (tests/data/conftest.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from instill.config import build_config
from instill.data.example import Example
from instill.data.templates import TemplateChoice, get_template
from instill.data.tokenize import EncodeOptions, encode
from instill.errors import ConfigError, TemplateError
from tests.data.test_lf_templates import DIFFERENCES, _labels, _trained_text
from tests.data.test_lf_templates import GOLDEN as TEMPLATES_GOLDEN

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "lf_options_golden.json").read_text())
CASES = [(name, option) for name in GOLDEN["templates"] for option in GOLDEN["options"]]
# Beyond test_lf_templates.py's DIFFERENCES: deepseekr1's prompt is tokenized as one text, across LLaMA-Factory's
# slots (the default system + "<｜User｜>", "<｜Assistant｜>" + the empty thought of thinking off); glm4_7 is an
# efficient_eos template, whose eos instill writes after every assistant turn (lf_templates.py says why), and
# whose empty thought test_lf_templates.py's DIFFERENCES names.
OPTION_DIFFERENCES = {
    "deepseekr1": ("same_text", "the prompt is tokenized as one text across LLaMA-Factory's slots"),
    "glm4_7": ("eos_between_turns", "instill writes an efficient_eos template's eos after every assistant turn"),
}


def _example(row: dict) -> Example:
    system = [{"role": "system", "content": row["_system"]}] if row["_system"] else []
    return Example(system + row["_prompt"] + row["_response"])


def test_the_stand_in_is_the_one_the_golden_ids_were_made_with():
    assert GOLDEN["stand_in_special_tokens"] == TEMPLATES_GOLDEN["stand_in_special_tokens"]


@pytest.mark.parametrize(("name", "option"), CASES)
def test_options_match_llamafactory(stand_in, name, option):
    values = GOLDEN["options"][option]
    template = get_template(TemplateChoice(name, values["default_system"], values["enable_thinking"]), stand_in)
    kind, why = OPTION_DIFFERENCES.get(name) or DIFFERENCES.get(name, ("exact", ""))
    eos = GOLDEN["templates"][name][option]["eos_token"]
    for i, (row, gold) in enumerate(zip(GOLDEN["rows"], GOLDEN["templates"][name][option]["data"], strict=True)):
        got = encode(_example(row), template, EncodeOptions(GOLDEN["cutoff_len"]))
        want_ids, want_labels = gold["input_ids"], _labels(gold["input_ids"], gold["labels"])
        if kind == "exact" or (got.input_ids, got.labels) == (want_ids, want_labels):
            assert (got.input_ids, got.labels) == (want_ids, want_labels), \
                f"{name}, {option}, row {i}:\n{stand_in.decode(got.input_ids)!r}\n{stand_in.decode(want_ids)!r}"
            continue
        if kind == "eos_between_turns":  # the same text but for the eos, and the same trained text (LLaMA-Factory
            # trains the eos as the label of the next prompt's first token)
            assert stand_in.decode(got.input_ids).replace(eos, "") == stand_in.decode(want_ids).replace(eos, ""), why
            assert stand_in.decode([x for x in got.labels if x != -100]) == stand_in.decode(
                [x for x in want_labels if x != -100]), why
            continue
        # same_text: the same text and trained text, tokens split differently
        assert stand_in.decode(got.input_ids) == stand_in.decode(want_ids), why
        assert _trained_text(stand_in, got.input_ids, got.labels) == _trained_text(
            stand_in, want_ids, want_labels), why


def test_default_system_fills_only_conversations_without_one(qwen2_tokenizer):
    """The tokenizer's own template (Qwen2.5's, which writes its own default) and the prompt-only templates
    get the default system through the jinja; a conversation's own system prompt wins."""
    for name in ("auto", "llama3", "default", "empty"):
        template = get_template(TemplateChoice(name, default_system="Be a pirate."), qwen2_tokenizer)
        plain = get_template(name, qwen2_tokenizer)
        assert "Be a pirate." in template.render([{"role": "user", "content": "hi"}]), name
        assert "Be a pirate." not in plain.render([{"role": "user", "content": "hi"}]), name
        own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
        assert template.render(own) == plain.render(own), name
    auto = get_template(TemplateChoice("auto", default_system="Be a pirate."), qwen2_tokenizer)
    assert auto.render([{"role": "user", "content": "hi"}], add_generation_prompt=True).startswith(
        "<|im_start|>system\nBe a pirate.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n")
    assert "You are Qwen" not in auto.render([{"role": "user", "content": "hi"}])


def test_default_system_is_a_prompt_token_never_trained(qwen2_tokenizer):
    template = get_template(TemplateChoice("qwen", default_system="Be a pirate."), qwen2_tokenizer)
    got = encode(Example([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr."}]), template,
                 EncodeOptions(256))
    text = qwen2_tokenizer.decode(got.input_ids)
    assert text.startswith("<|im_start|>system\nBe a pirate.<|im_end|>")
    assert qwen2_tokenizer.decode([t for t, label in zip(got.input_ids, got.labels) if label != -100]) == \
        "Arr.<|im_end|>\n"


def test_no_system_prompt_needs_a_template_that_can_promise_it(qwen2_tokenizer):
    qwen = get_template(TemplateChoice("qwen", default_system=""), qwen2_tokenizer)
    assert qwen.render([{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n"
    with pytest.raises(TemplateError, match="default_system: '' asks for no system prompt, but template 'auto'"):
        get_template(TemplateChoice("auto", default_system=""), qwen2_tokenizer)


def test_thinking_off_reaches_the_tokenizers_own_jinja(qwen2_tokenizer):
    tokenizer = copy.deepcopy(qwen2_tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] + '<|im_end|>' }}{% endfor %}"
                               "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}")
    conv = [{"role": "user", "content": "hi"}]
    assert get_template("auto", tokenizer).render(conv) == "hi<|im_end|>"
    assert get_template(TemplateChoice("auto", enable_thinking=False), tokenizer).render(conv) == \
        "hi<|im_end|><think></think>"


def test_thinking_off_leaves_other_templates_alone(stand_in):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\nhm\n</think>\n\nhello"}]
    for name in ("llama3", "qwen3_nothink", "alpaca"):
        assert get_template(TemplateChoice(name, enable_thinking=False), stand_in).render(conv) == \
            get_template(name, stand_in).render(conv), name


def test_the_keys_are_config_fields_that_reach_the_template():
    config = build_config({"model_name_or_path": "m", "template": "qwen3", "default_system": "S",
                           "enable_thinking": False})
    assert TemplateChoice.of(config.data) == TemplateChoice("qwen3", "S", False)
    with pytest.raises(ConfigError, match="enable_thinking"):
        build_config({"model_name_or_path": "m", "enable_thinking": "maybe"})


def test_doctor_does_not_warn_about_thinking_that_is_off(qwen2_tokenizer):
    from instill.doctor.template import is_reasoning

    tokenizer = copy.deepcopy(qwen2_tokenizer)
    tokenizer.chat_template = "{% for m in messages %}<think></think>{{ m['content'] }}<|im_end|>{% endfor %}"
    on = build_config({"model_name_or_path": "m"})
    off = build_config({"model_name_or_path": "m", "enable_thinking": False})
    assert is_reasoning(on, tokenizer) and not is_reasoning(off, tokenizer)
