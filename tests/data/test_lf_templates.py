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

import copy
import gzip
import json
from pathlib import Path

import pytest

from instill.data import lf_templates
from instill.data.example import Example, RowTools
from instill.data.formats import conversation
from instill.data.registry import SHAREGPT_TAGS, DatasetSpec
from instill.data.templates import ChatTemplate, TemplateChoice, get_template
from instill.data.tokenize import IGNORE_INDEX, EncodeOptions, encode
from instill.errors import TemplateError

GOLDEN = json.loads(gzip.open(Path(__file__).parents[1] / "fixtures" / "lf_templates_golden.json.gz").read())
TEXT_DATA = ("alpaca_en_demo", "identity")
TOOL_DATA = "glaive_toolcall_zh_demo"  # rows with tools, a tool call and its result
AS_WRITTEN = "tools_as_written"  # a glaive row whose tools column is other text for the same tools
SHAREGPT = DatasetSpec("golden", formatting="sharegpt", columns={"messages": "conversations", "tools": "tools",
                                                                 "system": "system"}, tags=dict(SHAREGPT_TAGS))

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
# Names whose first prompt, when it has a system text (the plain multi-turn row's system prompt, or the tools'
# text), merges a token across LLaMA-Factory's system and user slots ("assistant." + "USER:" -> ".USER").
SYSTEM_SLOT_MERGES = frozenset({
    "bailing", "bailing_v2", "breeze", "cohere", "deepseek3", "deepseekr1", "falcon", "fewshot", "index",
    "mistral_small", "openchat", "openchat-3.6", "telechat2", "xuanyuan", "youtu", "yuan", "empty"})
# instill's own names that write tools their own way: their tool rows are not LLaMA-Factory's (tool_format gives
# LLaMA-Factory's text: test_tool_format_matches_llamafactory).
OWN_TOOLS = {
    "chatml": "instill's chatml writes Hermes-style tool calls, as Qwen2.5 does (LLaMA-Factory's: the default format)",
    "empty": "instill's empty refuses tools (LLaMA-Factory's writes them in the default format)",
}
# A row whose tools column is an empty list ("[]"): LLaMA-Factory writes a system turn (its `if system or tools`
# sees the text "[]"), empty or, with phi4_mini's plain tools slot, around "[]"; instill writes none.
_EMPTY_TOOLS = "an empty tools list writes no system turn (LLaMA-Factory: a system slot around the tools' text)"


def _example(row: dict) -> Example:
    """An alpaca row as LLaMA-Factory's AlpacaDatasetConverter makes it (instruction and input joined); a
    sharegpt row (conversations, tools, system) as instill reads it."""
    if "conversations" in row:
        return conversation(row, SHAREGPT)
    query = "\n".join(part for part in (row["instruction"], row.get("input", "")) if part)
    return Example([{"role": "user", "content": query}, {"role": "assistant", "content": row["output"]}])


def _uses_tools(example: Example) -> bool:
    return bool(example.tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in example.messages)


def _empty_system_text(spec: dict, tokenizer) -> str:
    """The text LLaMA-Factory writes for an empty system slot and the tools "[]" (the first slot only for a
    Llama2Template): a ToolFormatter writes nothing for no tools, phi4_mini's plain slot the text "[]"."""
    slots = spec["system"][:1] if spec["class"] == "Llama2Template" else spec["system"]
    tools = "".join(spec["tools"]).replace("{{content}}", "[]") if spec["tools_formatter"] == "StringFormatter" else ""
    out = ""
    for slot in slots:
        if isinstance(slot, str):
            out += slot.replace("{{content}}", tools)
        elif "token" in slot:
            out += slot["token"]
        elif slot["special"] == "bos_token":
            out += tokenizer.bos_token or ""
        else:
            out += spec["stop_words"][0] if spec["replace_eos"] else tokenizer.eos_token
    return out


def _dated(template: ChatTemplate) -> ChatTemplate:
    """The template with llama3's "Today Date" fixed to the golden ids' day (LLaMA-Factory writes today's)."""
    dated = "{%- set date_string = " + lf_templates.literal(GOLDEN["date_string"]) + " -%}" + template.jinja
    return ChatTemplate(template.name, dated, template.tokenizer, template.end_of_turn)


def _labels(ids: list[int], labels: dict) -> list[int]:
    out = [IGNORE_INDEX] * len(ids)
    for start, end in labels["trained"]:
        out[start:end] = ids[start:end]
    for pos, label in labels["other"].items():
        out[int(pos)] = label
    return out


def _eos_after_every_turn(ids: list[int], labels: list[int], eos_id: int) -> tuple[list[int], list[int]]:
    """LLaMA-Factory's ids of an `efficient_eos` template as instill writes them: its eos, trained, after every
    answer (LLaMA-Factory leaves it out between turns and puts its label on the next prompt's first token)."""
    out_ids, out_labels = [], []
    for pos, (tok, label) in enumerate(zip(ids, labels)):
        if pos and label == eos_id != tok:
            out_ids.append(eos_id)
            out_labels.append(eos_id)
            label = IGNORE_INDEX
        out_ids.append(tok)
        out_labels.append(label)
    return out_ids, out_labels


def _trained_text(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE_INDEX])


ACCEPTED = [name for name in sorted(GOLDEN["templates"]) if lf_templates.refusal(name) is None]
REFUSED = [name for name in sorted(GOLDEN["templates"]) if lf_templates.refusal(name) is not None]


def test_every_llamafactory_name_is_known():
    assert sorted(GOLDEN["templates"]) == list(lf_templates.names())
    assert len(lf_templates.names()) == 121
    assert set(DIFFERENCES) <= set(ACCEPTED)


def _check(template: ChatTemplate, name: str, spec: dict, gold_data: dict, kind: str, why: str,
           writes_tools: bool) -> dict[str, int]:
    """Compare instill's ids and labels with LLaMA-Factory's on every golden row in `gold_data` (rows with tools
    only where `writes_tools`: not for OWN_TOOLS); the number of rows that differ, by kind (an `exact` row may
    differ in nothing)."""
    stand_in = template.tokenizer
    mismatched: dict[str, int] = {}
    for data, golds in gold_data.items():
        for meta, gold in zip(GOLDEN["rows"][data], golds, strict=True):
            example = _example(meta["row"])
            if (_uses_tools(example) or meta["row"].get("tools")) and not writes_tools:
                continue  # OWN_TOOLS
            got = encode(example, template, EncodeOptions(GOLDEN["cutoff_len"]))
            want_ids, want_labels = gold["input_ids"], _labels(gold["input_ids"], gold["labels"])
            if spec["efficient_eos"]:
                want_ids, want_labels = _eos_after_every_turn(want_ids, want_labels, stand_in.eos_token_id)
            where = f"{name}, {data} row {meta['index']}"
            merges = name in SYSTEM_SLOT_MERGES and bool(example.tools or example.roles[0] == "system")
            row_kind, row_why, want_text = kind, why, stand_in.decode(want_ids)
            if meta["row"].get("tools") == "[]" and not spec["default_system"]:
                row_kind, row_why = "empty_tools", _EMPTY_TOOLS
                assert _empty_system_text(spec, stand_in) in want_text, where
                want_text = want_text.replace(_empty_system_text(spec, stand_in), "", 1)
            elif kind == "exact" and merges:
                row_kind, row_why = "same_text", _PROMPT_SLOTS.format("system + user slot merge")
            if row_kind == "exact" or (got.input_ids, got.labels) == (want_ids, want_labels):
                assert (got.input_ids, got.labels) == (want_ids, want_labels), where
                continue
            mismatched[row_kind] = mismatched.get(row_kind, 0) + 1
            got_ids, got_labels = got.input_ids, got.labels
            if row_kind == "eos_added":  # LLaMA-Factory's ids, then a trained end of turn after every answer
                tail = stand_in(stand_in.eos_token + "\n", add_special_tokens=False)["input_ids"]
                got_ids, got_labels = _strip_after_answers(got, tail)
                if not merges:
                    assert (got_ids, got_labels) == (want_ids, want_labels), f"{where}: {row_why}"
                    continue
            # the same text and trained text, tokens split differently
            assert stand_in.decode(got_ids) == want_text, f"{where}: {row_why}"
            assert _trained_text(stand_in, got_ids, got_labels) == _trained_text(
                stand_in, want_ids, want_labels), f"{where}: {row_why}"
    return mismatched


def _strip_after_answers(got, tail: list[int]) -> tuple[list[int], list[int]]:
    """instill's ids and labels without the trained `tail` after each answer."""
    ids, labels, pos = [], [], 0
    while pos < len(got.input_ids):
        if (got.input_ids[pos:pos + len(tail)] == tail and got.labels[pos:pos + len(tail)] == tail
                and pos and got.labels[pos - 1] != IGNORE_INDEX):
            pos += len(tail)
            continue
        ids.append(got.input_ids[pos])
        labels.append(got.labels[pos])
        pos += 1
    return ids, labels


@pytest.mark.parametrize("name", ACCEPTED)
def test_ids_and_labels_match_llamafactory(stand_in, name):
    """Single-turn rows, multi-turn rows (one with a system prompt, one with a tool call) and, for every name but
    OWN_TOOLS, tool-calling conversations, one with its tools column written otherwise (AS_WRITTEN)."""
    template = _dated(get_template(name, stand_in))
    kind, why = DIFFERENCES.get(name, ("exact", ""))
    data = {d: GOLDEN["templates"][name]["data"][d] for d in (*TEXT_DATA, "multiturn", TOOL_DATA, AS_WRITTEN)}
    spec = lf_templates.table()[name]
    mismatched = _check(template, name, spec, data, kind, why, name not in OWN_TOOLS)
    if kind != "exact":
        assert mismatched.get(kind), f"{name} now matches LLaMA-Factory exactly: drop it from DIFFERENCES"
    if name in SYSTEM_SLOT_MERGES:
        assert mismatched.get("same_text") or mismatched.get("eos_added"), f"{name} now matches LLaMA-Factory exactly: drop it from SYSTEM_SLOT_MERGES"


@pytest.mark.parametrize("case", GOLDEN["tool_format"], ids=lambda c: f"{c['template']}+{c['tool_format']}")
def test_tool_format_matches_llamafactory(stand_in, case):
    """LLaMA-Factory's data_args.tool_format over a template's own format, on the tool-calling rows."""
    name, tool_format = case["template"], case["tool_format"]
    template = _dated(get_template(TemplateChoice(name, tool_format=tool_format), stand_in))
    spec = lf_templates.with_tool_format(lf_templates.table()[name], tool_format)
    kind, why = DIFFERENCES.get(name, ("exact", ""))
    _check(template, name, spec, case["data"], kind, why, writes_tools=True)


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


def test_the_row_tools_text_is_written_as_the_row_has_it(stand_in):
    """phi4_mini writes the tools column's text, seed_oss its JSON again (a row's RowTools); tools without a row
    (a server request, a saved model's jinja) are written as their functions in JSON, as LLaMA-Factory's API
    server writes a request's tools."""
    fn = {"name": "f", "description": "d", "parameters": {}}
    text = '[ {"type": "function",\n  "function": {"name": "f", "description": "d", "parameters": {}}} ]'
    row = RowTools([{"type": "function", "function": fn}], text)
    conv = [{"role": "user", "content": "hi"}]
    phi4, seed = get_template("phi4_mini", stand_in), get_template("seed_oss", stand_in)
    assert "<|system|><|tool|>" + text + "<|/tool|><|end|>" in phi4.render(conv, row)
    assert "<|tool|>" + json.dumps([fn]) + "<|/tool|>" in phi4.render(conv, list(row))
    assert "these tools.\n" + json.dumps(json.loads(text)) + "\n工具调用" in seed.render(conv, row)
    assert "these tools.\n" + json.dumps([fn]) + "\n工具调用" in seed.render(conv, list(row))


def test_gemma4_writes_what_its_tool_utils_write(stand_in):
    """What the demo rows lack, against text LLaMA-Factory 0.9.5's Gemma4ToolUtils wrote: no description, a
    response, empty parameters, booleans, null, a nested object (keys sorted), parallel calls."""
    tools = [{"type": "function", "function": {
                "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "boolean"},
                                                                           "b": {"description": "x"}}},
                "response": {"description": "r", "type": "object"}}},
             {"type": "function", "function": {"name": "g", "description": "d", "parameters": {},
                                               "response": {"type": "string"}}}]
    calls = [{"type": "function", "function": {"name": "f", "arguments": {"z": None, "a": True,
                                                                        "m": {"b": [1, False, "s"], "a": 2.5}}}},
             {"type": "function", "function": {"name": "g", "arguments": {}}}]
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    text = get_template("gemma4", stand_in).render(conv, tools)
    q = '<|"|>'
    assert (f"declaration:f{{description:{q}{q},parameters:{{properties:{{a:{{type:{q}BOOLEAN{q}}},b:{{description:"
            f"{q}x{q}}}}},type:{q}OBJECT{q}}},response:{{description:{q}r{q},type:{q}OBJECT{q}}}}}\n"
            f"declaration:g{{description:{q}d{q},response:{{}}}}<turn|>") in text
    assert (f"<|tool><|tool_call>call:f{{a:true,m:{{a:2.5,b:[1,false,{q}s{q}]}},z:null}}<tool_call|>"
            "<|tool_call>call:g{}<tool_call|><tool|>") in text


def test_an_unknown_tool_format_is_refused(stand_in):
    with pytest.raises(TemplateError, match="tool_format: hermes is not a tool format of LLaMA-Factory 0.9.5 "
                                            r"\(choose from default, gemma4, glm4"):
        get_template(TemplateChoice("qwen3", tool_format="hermes"), stand_in)
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]
    with pytest.raises(TemplateError, match="template 'empty' has no tool format"):  # instill's own
        get_template("empty", stand_in).render([{"role": "user", "content": "hi"}], tools)


def test_tool_format_needs_a_llamafactory_name(qwen2_tokenizer):
    with pytest.raises(TemplateError, match="tool_format: qwen needs a LLaMA-Factory template name .* template: auto"):
        get_template(TemplateChoice("auto", tool_format="qwen"), qwen2_tokenizer)


def test_tool_format_renders_the_slots_over_the_models_own_template(qwen2_tokenizer):
    """A ChatML-family name keeps Qwen2.5's own jinja; with tool_format it is LLaMA-Factory's slots, as LLaMA-Factory
    trains it."""
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object",
              "properties": {"x": {"type": "string", "description": "an x", "enum": ["a", "b"]}}, "required": ["x"]}}}]
    conv = [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
                "name": "f", "arguments": {"x": "a"}}}]},
            {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"},
            {"role": "assistant", "content": "done"}]
    assert get_template("qwen3", qwen2_tokenizer).jinja.endswith(qwen2_tokenizer.chat_template)
    text = get_template(TemplateChoice("qwen3", tool_format="default"), qwen2_tokenizer).render(conv, tools)
    assert "  - x (string, required): an x, should be one of [a, b]\n" in text
    assert "Action: f\nAction Input: {\"x\": \"a\"}<|im_end|><|im_start|>user\n<tool_response>\n1\n</tool_response>\n" \
           "<tool_response>\n2\n</tool_response><|im_end|>\n" in text


@pytest.mark.parametrize("name", ["default", "llama3", "mistral", "glm4", "glm4_moe", "qwen3_5", "bailing_v2",
                                  "minimax1", "minimax2", "lfm2", "gemma4", "seed_oss", "phi4_mini"])
def test_tool_formats_render_the_same_from_the_saved_tokenizer(stand_in, name):
    """The jinja is what a saved model renders with: transformers' apply_chat_template gives the same text (given
    the row's tools text as ChatTemplate.render gives it)."""
    example = _example(GOLDEN["rows"][AS_WRITTEN][0]["row"])
    template = get_template(name, stand_in)
    saved = copy.deepcopy(stand_in)
    saved.chat_template = template.jinja
    assert template.render(example.messages, example.tools) == saved.apply_chat_template(
        example.messages, tools=example.tools, tokenize=False, tools_text=example.tools.text,
        tools_value=example.tools.value)
