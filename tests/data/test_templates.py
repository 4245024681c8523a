"""Named templates against the real jinja; end-of-turn detection; errors."""

from __future__ import annotations

import copy
import json

import pytest

from instill.data.formats import to_example
from instill.data.registry import read_rows, resolve
from instill.data.templates import NAMED, get_template
from instill.errors import TemplateError

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "天气",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

CONVERSATIONS = [
    [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}],
    [{"role": "user", "content": "Weather in 北京 and Paris?"},
     {"role": "assistant", "content": "", "tool_calls": [
         {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}},
         {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
     {"role": "tool", "content": "{\"temp\": 3}"}, {"role": "tool", "content": "{\"temp\": 9}"},
     {"role": "assistant", "content": "北京 3°C, Paris 9°C."}],
    [{"role": "user", "content": "  spaces\n\nand newlines  "}, {"role": "assistant", "content": "ok\n"}],
]


def _glaive_conversations(lf_dataset_dir, n=40):
    spec = resolve(["glaive_toolcall_zh_demo"], lf_dataset_dir)[0]
    out = []
    for source, row in read_rows(spec, lf_dataset_dir):
        ex = to_example(row, spec, source)
        out.append((ex.messages, ex.tools))
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("gen", [False, True])
def test_qwen_matches_real_qwen25_jinja_token_for_token(qwen2_tokenizer, lf_dataset_dir, gen):
    """Our `qwen` renderer vs Qwen2.5-Instruct's own chat template, with and without tools."""
    ours = get_template("qwen", qwen2_tokenizer)
    real = get_template("auto", qwen2_tokenizer)  # the fixture tokenizer carries the real jinja
    cases = [(c, None) for c in CONVERSATIONS] + [(CONVERSATIONS[2], TOOLS)] + _glaive_conversations(lf_dataset_dir)
    assert sum(1 for _, tools in cases if tools) >= 30
    for messages, tools in cases:
        msgs = messages[:-1] if gen else messages
        expected = real.render(msgs, tools, add_generation_prompt=gen)
        got = ours.render(msgs, tools, add_generation_prompt=gen)
        assert got == expected
        assert qwen2_tokenizer.encode(got, add_special_tokens=False) == qwen2_tokenizer.encode(expected, add_special_tokens=False)


def test_tool_call_markup_is_one_token(qwen2_tokenizer):
    text = get_template("qwen", qwen2_tokenizer).render(CONVERSATIONS[2], TOOLS)
    ids = qwen2_tokenizer.encode(text, add_special_tokens=False)
    # 2 in the system prompt's instructions + 1 per call
    assert ids.count(qwen2_tokenizer.convert_tokens_to_ids("<tool_call>")) == 4
    assert json.dumps({"city": "北京"}, ensure_ascii=False) in text


def test_end_of_turn_detected(qwen2_tokenizer, smollm2_dir):
    from transformers import AutoTokenizer

    assert get_template("auto", qwen2_tokenizer).end_of_turn == "<|im_end|>"
    assert get_template("auto", AutoTokenizer.from_pretrained(smollm2_dir)).end_of_turn == "<|im_end|>"


def test_named_templates_render(qwen2_tokenizer):
    conv = CONVERSATIONS[1]
    llama3 = get_template("llama3", qwen2_tokenizer).render(conv)
    # LLaMA-Factory's llama3 and default (data/lf_templates.py): the bos is the tokenizer's (Qwen2 has none)
    assert llama3.startswith("<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>")
    default = get_template("default", qwen2_tokenizer).render(conv[:3])
    assert default == "System: You are terse.<|im_end|>\nHuman: 2+2?<|im_end|>\nAssistant:4<|im_end|>\n"
    chatml = get_template("chatml", qwen2_tokenizer).render(conv[1:3], add_generation_prompt=False)
    assert chatml == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"


def test_template_errors(qwen2_tokenizer):
    with pytest.raises(TemplateError, match="did you mean 'qwen'"):
        get_template("qwn", qwen2_tokenizer)
    with pytest.raises(TemplateError, match="no tool format"):
        get_template("empty", qwen2_tokenizer).render(CONVERSATIONS[2], TOOLS)
    bare = qwen2_tokenizer.__class__.from_pretrained(qwen2_tokenizer.name_or_path) if qwen2_tokenizer.name_or_path else None
    if bare is not None:
        bare.chat_template = None
        with pytest.raises(TemplateError, match="has no chat template"):
            get_template("auto", bare)


@pytest.mark.parametrize("name", NAMED)
def test_named_template_is_its_jinja(qwen2_tokenizer, name):
    """A named template renders exactly what its jinja renders through transformers, the way a saved
    tokenizer (tokenizer_config.json's chat_template) will render it after training or export."""
    template = get_template(name, qwen2_tokenizer)
    saved = copy.deepcopy(qwen2_tokenizer)
    saved.chat_template = template.jinja
    for conv in CONVERSATIONS[:2] + CONVERSATIONS[3:]:
        for gen in (False, True):
            msgs = conv[:-1] if gen else conv
            assert template.render(msgs, add_generation_prompt=gen) == saved.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=gen)


def test_chatml_without_system_writes_none_and_qwen_writes_its_default(qwen2_tokenizer):
    conv = CONVERSATIONS[0]
    assert get_template("chatml", qwen2_tokenizer).render(conv).startswith("<|im_start|>user\n你好")
    assert get_template("qwen", qwen2_tokenizer).render(conv).startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n")
    with pytest.raises(TemplateError, match="role 'narrator' is not supported"):
        get_template("chatml", qwen2_tokenizer).render([{"role": "narrator", "content": "x"}])
