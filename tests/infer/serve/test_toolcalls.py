"""Tool calls read back in the served template's tool format (data/lf_tool_calls.py, serve/toolcalls.py).

The round trip: what data/lf_tools.py writes for an assistant's tool calls (rendered through a template, the
assistant's part taken and decoded as the server decodes it) is read back, whole or streamed, as the same calls.
"""

from __future__ import annotations

import copy
import json
import typing

import pytest

from instill.config import DataArgs
from instill.data import lf_templates, lf_tools
from instill.data.lf_tool_calls import FORMATS, FunctionCall
from instill.data.templates import TemplateChoice, get_template
from instill.infer.serve.toolcalls import ToolCallSplitter

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}]
WEATHER = ("get_weather", {"city": "巴黎", "days": 3})
TIME = ("get_time", {"zone": "Europe/Paris"})


# each written format -> a LLaMA-Factory template name whose own tool format it is
WRITERS = {"default": "default", "qwen": "qwen3", "ling": "bailing_v2", "mistral": "mistral", "glm4": "glm4",
           "glm4_moe": "glm4_moe", "llama3": "llama3", "qwen3_5": "qwen3_5", "minimax1": "minimax1",
           "minimax2": "minimax2", "lfm2": "lfm2", "gemma4": "gemma4", "seed_oss": "seed_oss"}
# Control text a template's own slot writes before the calls, which its format's reader does not expect: Gemma 4's
# `<|tool>` (a control token of its tokenizer, which decoding skips; plain text for this stand-in).
HEADS = {"gemma4": "<|tool>"}
# (template name, tool_format key or None): each format through its own template, and through `tool_format` on
# another (LLaMA-Factory's data_args.tool_format writes the calls with the assistant's slots)
CASES = [(name, None) for name in WRITERS.values()] + [("alpaca", f) for f in lf_tools.FORMATS]


@pytest.fixture(scope="module")
def base_tokenizer(qwen2_tokenizer):
    """Qwen2's tokenizer without a chat template: every LLaMA-Factory name renders from its slots."""
    tokenizer = copy.deepcopy(qwen2_tokenizer)
    tokenizer.chat_template = None
    return tokenizer


def written_answer(template, calls, content="", tail="", head="") -> str:
    """The assistant's part of a conversation ending in `calls`, as the server decodes it: up to its end of turn,
    or to `tail`, the control text the template writes after the calls, and from after `head`, the control text
    before them (control tokens of the model's own tokenizer, which decoding skips; plain text for this
    stand-in)."""
    user = [{"role": "user", "content": "Weather in Paris?"}]
    prompt = template.render(user, TOOLS, add_generation_prompt=True)
    turn = {"role": "assistant", "content": content,
            "tool_calls": [{"type": "function", "function": {"name": n, "arguments": a}} for n, a in calls]}
    full = template.render(user + [turn], TOOLS)
    assert full.startswith(prompt)
    answer = full[len(prompt):].split(template.end_of_turn)[0]
    answer = answer.split(tail)[0] if tail else answer
    answer = answer.removeprefix(head)
    ids = template.tokenizer(answer, add_special_tokens=False)["input_ids"]
    return template.tokenizer.decode(ids, skip_special_tokens=True)


def as_pairs(calls) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize(("name", "tool_format"), CASES, ids=[f"{n}+{f}" if f else n for n, f in CASES])
def test_each_format_reads_back_what_it_writes(base_tokenizer, name, tool_format):
    # thinking off: a reasoning template's empty thought is part of the prompt, the answer is the calls alone
    template = get_template(TemplateChoice(name, enable_thinking=False, tool_format=tool_format), base_tokenizer)
    fmt = tool_format or lf_templates.table()[name]["tools_tool_format"]
    assert template.tool_format == fmt
    calls = [WEATHER] if fmt == "glm4" else [WEATHER, TIME]  # GLM-4 writes one call per turn
    slot = next(s for s in lf_templates.table()[name]["function"] if isinstance(s, str) and "{{content}}" in s)
    text = written_answer(template, calls, tail="" if tool_format else slot.split("{{content}}")[1],
                          head="" if tool_format else HEADS.get(fmt, ""))

    extracted = FORMATS[fmt].extract(text)
    assert [(c.name, json.loads(c.arguments)) for c in extracted] == calls, text

    splitter = ToolCallSplitter(fmt)  # streamed in small pieces: nothing of the call is shown as content
    shown = "".join(splitter.feed(text[i:i + 3]) for i in range(0, len(text), 3))
    rest, parsed = splitter.finish()
    assert shown + rest == "" and as_pairs(parsed) == calls, text


def test_the_table_has_every_llamafactory_format():
    assert set(FORMATS) == set(lf_tools.FORMATS)
    names, _ = typing.get_args(DataArgs.model_fields["tool_format"].annotation)  # Literal[...] | None
    assert set(typing.get_args(names)) == set(FORMATS)  # the config accepts every format
    assert set(WRITERS) == set(lf_tools.FORMATS)
    assert all(lf_templates.table()[name]["tools_tool_format"] == fmt for fmt, name in WRITERS.items())


def test_the_template_knows_its_tool_format(qwen2_tokenizer, base_tokenizer):
    """LLaMA-Factory names read calls in their format (the model's own jinja too, as LLaMA-Factory's API does);
    instill's own templates and `auto` in Hermes (None)."""
    assert get_template("llama3", base_tokenizer).tool_format == "llama3"
    assert get_template("qwen3", qwen2_tokenizer).tool_format == "qwen"  # Qwen's own jinja, LLaMA-Factory's format
    assert get_template(TemplateChoice("qwen", tool_format="glm4"), base_tokenizer).tool_format == "glm4"
    assert get_template("phi4_mini", base_tokenizer).tool_format == "default"  # the format its calls are written in
    for name in ("auto", "qwen", "chatml"):
        assert get_template(name, qwen2_tokenizer).tool_format is None


def test_extractors_return_content_where_llamafactory_does():
    """Text LLaMA-Factory's extractor returns unchanged is content here (None), not a call."""
    content = [
        ("default", 'Action: f\nAction Input: {"a": 1} and more'),  # trailing text breaks the JSON
        ("default", "Action: f\nAction Input: not json"),
        ("qwen", '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call> trailing'),
        ("qwen", '<tool_call>\n{"name": "f"}\n</tool_call>'),  # no arguments
        ("llama3", 'Sure: {"name": "f", "parameters": {}}'),
        ("llama3", '{"name": "f", "arguments": {}}'),  # llama3 calls carry "parameters"
        ("mistral", "[]"),
        ("glm4", "Total:\n42"),
        ("lfm2", "<|tool_call_start|>[f(1 +)]<|tool_call_end|>"),
        ("minimax1", "<tool_calls>\nnot json\n</tool_calls>"),
        ("qwen3_5", "<tool_call>\n<function=f>\n</tool_call>"),  # no </function>
    ]
    for fmt, text in content:
        assert FORMATS[fmt].extract(text) is None, (fmt, text)


def test_extractors_read_what_llamafactory_reads():
    """LLaMA-Factory's own examples of each format, including those instill does not write."""
    cases = {
        "default": ('Thought.\nAction: f\nAction Input: ```{"a": 1}```\nAction: g\nAction Input: "{}"',
                    [("f", {"a": 1}), ("g", {})]),
        "mistral": (' [{"name": "f", "arguments": {"a": 1}}]', [("f", {"a": 1})]),
        "llama3": ('{"name": "f", "parameters": {"a": "x"}}', [("f", {"a": "x"})]),
        "minimax1": ('<tool_calls>\n{"name": "f", "arguments": {"a": 1}}\nbroken\n</tool_calls>', [("f", {"a": 1})]),
        "minimax2": ('<minimax:tool_call>\n<invoke name="f">\n<parameter name="a">[1, 2]</parameter>\n</invoke>\n'
                     '</minimax:tool_call>', [("f", {"a": [1, 2]})]),
        "glm4_moe": ('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>', [("f", {"a": 1})]),
        "lfm2": ('<|tool_call_start|>[f(a="x", b=true, c=null, d=[1, 2])]<|tool_call_end|>',
                 [("f", {"a": "x", "b": True, "c": None, "d": [1, 2]})]),
        "gemma4": ('<|tool_call>call:f{a:<|"|>Paris<|"|>,b:2}<tool_call|>', [("f", {"a": "Paris", "b": 2})]),
        "seed_oss": ("<seed:tool_call>\n<function=f\n<parameter=a>x</parameter>\n<parameter=b>2</parameter>\n"
                     "</function>\n</seed:tool_call>", [("f", {"a": "x", "b": 2})]),
    }
    for fmt, (text, calls) in cases.items():
        extracted = FORMATS[fmt].extract(text)
        assert extracted is not None and all(isinstance(c, FunctionCall) for c in extracted), fmt
        assert [(c.name, json.loads(c.arguments)) for c in extracted] == calls, fmt


def test_streaming_split_of_formats_without_a_tag():
    """llama3: the answer is held until its first character shows whether it is JSON; then a call is held to the
    end and anything else streams. default: text before `Action:` streams; an `Act` that may begin it waits, and
    so do spaces until text follows them."""
    call = ToolCallSplitter("llama3")
    assert [call.feed(p) for p in [" ", ' {"name": "get_weather", ', '"parameters": {"city": "Paris"}}']] == ["", "", ""]
    rest, calls = call.finish()
    assert rest == "" and as_pairs(calls) == [("get_weather", {"city": "Paris"})]

    plain = ToolCallSplitter("llama3")
    assert [plain.feed(p) for p in ["  ", "It is", " sunny."]] == ["", "  It is", " sunny."]
    assert plain.finish() == ("", None)
    broken = ToolCallSplitter("llama3")
    assert broken.feed('{"name": "f"') == "" and broken.finish() == ('{"name": "f"', None)  # nothing is lost

    react = ToolCallSplitter("default")
    pieces = ["I will look.\nAct", "ion: get_weather\nAction Input: ", '{"city": "Paris"}']
    assert [react.feed(p) for p in pieces] == ["I will look.", "", ""]  # the newline before the call is not content
    rest, calls = react.finish()
    assert rest == "" and as_pairs(calls) == [("get_weather", {"city": "Paris"})]
    prose = ToolCallSplitter("default")
    assert prose.feed("No Act") == "No" and prose.feed("ion needed.") == " Action needed."
    assert prose.finish() == ("", None)

    glm4 = ToolCallSplitter("glm4")
    assert glm4.feed("Sure") == "" and glm4.feed(", here\nit is") == "Sure, here\nit is"  # a line, then no JSON
