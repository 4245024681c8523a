"""LLaMA-Factory's template names (`template: qwen3_nothink`, `glm4`, `mistral`, ...), as instill templates.

LLaMA-Factory 0.9.5 registers 121 templates as "slots" (strings with `{{content}}`, bos/eos markers, token
names) that it tokenizes piece by piece. The slots are data here: `lf_templates.json`, read from its
`register_template` calls by bench/lf_golden_templates.py (LLaMA-Factory is Apache-2.0, (c) the
LlamaFactory team; the file says so). A name selects:

- **the model's own chat template**, with the name's options, when the tokenizer ships one of the same
  family (its chat template contains the name's end-of-turn marker) and LLaMA-Factory itself would keep it
  (`replace_jinja_template` false): `qwen3_nothink` on a Qwen3 tokenizer is Qwen3's own template with
  `enable_thinking` false, baked into the jinja so a saved model renders the same way;
- otherwise (a base model, or a name LLaMA-Factory always writes over the tokenizer's template, like
  `alpaca` or `vicuna`) **a jinja written from the slots** (`slots_jinja`) that renders LLaMA-Factory's text:
  prefix, system (fused into the first user message for its `Llama2Template` names), user, assistant, the
  empty thought of its reasoning templates (trained when thinking is on, part of the prompt when off), the
  eos of `efficient_eos` templates, the eos replaced by the first stop word where `replace_eos` says so, and
  tool calls and results in the name's tool format (below).

Where instill differs from LLaMA-Factory on purpose (tests/data/test_lf_templates.py names each case):
- text is tokenized whole, so a token may merge across two of LLaMA-Factory's slots ("questions." +
  "USER:" -> ".USER") where LLaMA-Factory tokenizes each slot alone;
- an `efficient_eos` template writes its eos after every assistant turn (LLaMA-Factory leaves it out of
  the input between turns and trains it as the label of the next prompt's first token, a label that is not
  the input token — instill's labels are always the input ids);
- text in the data that spells a control token stays text (data/tokenize.py);
- a row whose tools column is an empty list writes no system turn (LLaMA-Factory's `if system or tools` sees
  the text "[]" and writes one: empty, or with phi4_mini's `<|tool|>[]<|/tool|>`);
- instill's own `chatml` writes Hermes-style tool calls and its `empty` refuses tools (LLaMA-Factory's: the
  default format); `tool_format` gives LLaMA-Factory's text for them.

Tools and tool calls are written in the name's tool format (data/lf_tools.py: LLaMA-Factory's `format_tools`
after the system text, `format_function` for an assistant's tool calls, `format_observation` for tool
results, consecutive results joined into one turn as its OpenAI converter does); `tool_format` replaces it
(LLaMA-Factory's data_args.tool_format). `phi4_mini` has no tools format but a plain slot, which writes the tools
column's text as the row has it (lf_tools.ROW_TEXT).

Vision-language names are accepted where instill trains the family (Qwen2-VL: `qwen2_vl`, `mimo_vl`, `keye_vl`,
`dots_ocr`) or where the family's models are used for text too (`TEXT_TOO`: text only), and refused by name
otherwise.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from instill.data import lf_tools
from instill.errors import TemplateError

# Names instill already defines itself (data/templates.py) and keeps: the same text as LLaMA-Factory's on
# its demo data (checked by the test), with instill's own tool-call rendering; `empty` ends a turn with the
# eos so a model trained with it learns to stop (LLaMA-Factory's `empty` writes no end at all).
NATIVE = frozenset({"qwen", "chatml", "qwen2_vl", "empty"})  # `default` and `llama3` are LLaMA-Factory's here

# Multimodal plugins whose models instill trains: the template works for text, and for images through
# data/multimodal.py where the name is instill's own (qwen2_vl).
SUPPORTED_PLUGINS = frozenset({"base", "qwen2_vl"})
# Names whose plugin is multimodal but whose models are used for text too (Gemma 3 1B, Llama 4, Qwen3.5,
# Mistral Small 3.1...): accepted for text, rendering LLaMA-Factory's text; their images are not supported.
TEXT_TOO = frozenset({"gemma3", "gemma3n", "gemma4", "gemma4n", "llama4", "mistral_small", "ministral3",
                      "qwen3_5", "qwen3_5_nothink", "qwen3_6", "intern_s1"})

_FAMILY = {
    "ernie_vl": "ERNIE-VL", "gemma3": "Gemma 3", "gemma3n": "Gemma 3n", "gemma4": "Gemma 4", "glm4v": "GLM-4V",
    "intern_vl": "InternVL", "kimi_vl": "Kimi-VL", "llama4": "Llama 4", "llava": "LLaVA", "llava_next": "LLaVA-NeXT",
    "llava_next_video": "LLaVA-NeXT-Video", "lfm2_vl": "LFM2-VL", "minicpm_v": "MiniCPM-V",
    "minicpm_v_4_6": "MiniCPM-V 4.6", "mllama": "Llama 3.2 Vision", "paligemma": "PaliGemma", "pixtral": "Pixtral",
    "qwen2_audio": "Qwen2-Audio", "qwen2_omni": "Qwen2.5-Omni / Qwen3-Omni", "qwen3_vl": "Qwen3-VL / Qwen3.5",
    "video_llava": "Video-LLaVA", "youtu_vl": "Youtu-VL",
}


@functools.cache
def table() -> dict[str, dict]:
    """LLaMA-Factory 0.9.5's templates by name (lf_templates.json)."""
    text = resources.files("instill.data").joinpath("lf_templates.json").read_text(encoding="utf-8")
    return json.loads(text)["templates"]


def names() -> tuple[str, ...]:
    return tuple(sorted(table()))


def refusal(name: str) -> str | None:
    """Why a LLaMA-Factory name cannot be used, or None when it can."""
    spec = table().get(name)
    if spec is None or spec["mm_plugin"] in SUPPORTED_PLUGINS or name in TEXT_TOO:
        return None
    family = _FAMILY.get(spec["mm_plugin"], spec["mm_plugin"])
    return (f"template '{name}' is LLaMA-Factory's template for {family} vision/audio-language models, which "
            "instill does not train; the vision-language family instill trains is Qwen2-VL / Qwen2.5-VL "
            "(template: qwen2_vl or auto)")


def is_reasoning(name: str) -> bool:
    """LLaMA-Factory renders this name with its ReasoningTemplate (the one `enable_thinking` acts on)."""
    spec = table().get(name)
    return spec is not None and spec["class"] in ("ReasoningTemplate", "Glm47ReasoningTemplate")


THINKING_OFF = "{%- set enable_thinking = false -%}"


def lookup(name: str, tokenizer: Any, default_system: str | None = None, enable_thinking: bool = True,
           tool_format: str | None = None) -> tuple[str, str | None, bool] | None:
    """(jinja, end of turn or None, whether the jinja still needs `default_system` put in) for a LLaMA-Factory
    name instill renders here; None for other names (instill's own, or unknown). A vision-language name of a
    family instill does not train is refused. `enable_thinking` false switches a reasoning template's thinking
    off (LLaMA-Factory's data_args.enable_thinking), baked into the jinja as `_nothink` names do. `tool_format`
    (LLaMA-Factory's data_args.tool_format) replaces the name's tool format; the name is then rendered from
    LLaMA-Factory's slots, as LLaMA-Factory trains it, even where instill has its own or the model ships one."""
    spec = table().get(name)
    if spec is None or (name in NATIVE and tool_format is None):
        return None
    if tool_format is not None and tool_format not in lf_tools.FORMATS:
        raise TemplateError(f"tool_format: {tool_format} is not a tool format of LLaMA-Factory 0.9.5 (choose from "
                            f"{', '.join(sorted(lf_tools.FORMATS))})")
    why = refusal(name)
    if why:
        raise TemplateError(why)
    thinking_off = name.endswith("_nothink") or (not enable_thinking and is_reasoning(name))
    options = THINKING_OFF if thinking_off else ""
    own = getattr(tokenizer, "chat_template", None)
    if tool_format is not None:
        spec = with_tool_format(spec, tool_format)
    elif isinstance(own, str) and not spec["replace_jinja_template"] and _same_family(spec, own):
        return options + own, None, default_system is not None
    return options + slots_jinja(name, spec, default_system), _end_of_turn(spec, tokenizer), False


def _same_family(spec: dict, chat_template: str) -> bool:
    """The tokenizer's template writes this name's turn markup: its first stop word, else the text of the
    user slot before the content (`[INST]`, `Human:`)."""
    if spec["stop_words"]:
        return spec["stop_words"][0] in chat_template
    head = next((s.split("{{content}}")[0].strip() for s in spec["user"] if isinstance(s, str)), "")
    return bool(head) and head in chat_template


def _end_of_turn(spec: dict, tokenizer: Any) -> str:
    """What ends an assistant turn: the first stop word where the template replaces the eos with it or
    writes it after the answer, the tokenizer's eos where the template writes that (efficient_eos)."""
    if spec["stop_words"] and (spec["replace_eos"] or not spec["efficient_eos"]):
        return spec["stop_words"][0]
    return tokenizer.eos_token or ""


# ------------------------------------------------------------------------------------ slots -> jinja


def literal(text: str) -> str:
    """`text` as a jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r") + "'"


def _expr(slots: list, spec: dict, content: str = "content") -> str:
    """A jinja expression for one formatter's slots with `content` in place of {{content}}."""
    parts = []
    for slot in slots:
        if isinstance(slot, str):
            before, *after = slot.split("{{content}}", 1)
            if before:
                parts.append(literal(before))
            if after:
                parts.append(content)
                if after[0]:
                    parts.append(literal(after[0]))
        elif "token" in slot:
            parts.append(literal(slot["token"]))
        elif slot["special"] == "bos_token":
            parts.append("(bos_token or '')")
        else:  # the eos: the first stop word where the template replaces the eos with it
            parts.append(literal(spec["stop_words"][0]) if spec["replace_eos"] else "(eos_token or '')")
    return " + ".join(parts) if parts else "''"


# LLaMA-Factory's OpenAI converter joins the results of parallel tool calls into one observation turn so
_TOOL_RESULTS_SEP = "\n</tool_response>\n<tool_response>\n"


def with_tool_format(spec: dict, tool_format: str) -> dict:
    """`spec` with LLaMA-Factory's data_args.tool_format: both tool formats replaced, and the tool-call turn
    written with the default assistant slots (content, then the eos unless `efficient_eos`)."""
    function = ["{{content}}"] if spec["efficient_eos"] else ["{{content}}", {"special": "eos_token"}]
    return {**spec, "function": function, "function_tool_format": tool_format, "tools_tool_format": tool_format,
            "tools_formatter": "ToolFormatter"}


def slots_jinja(name: str, spec: dict, default_system: str | None = None) -> str:
    """A jinja chat template that renders what LLaMA-Factory's `Template._encode` (or `Llama2Template`'s,
    or `ReasoningTemplate.encode_multiturn`'s) encodes, for system / user / assistant messages, tool calls and
    tool results in the template's tool format (data/lf_tools.py); `default_system` replaces the template's
    own (LLaMA-Factory's data_args.default_system)."""
    reasoning = spec["class"] in ("ReasoningTemplate", "Glm47ReasoningTemplate")
    open_t, close_t = spec["thought_words"]
    empty_thought = close_t if spec["class"] == "Glm47ReasoningTemplate" else open_t + close_t
    eos = _expr([{"special": "eos_token"}], spec)
    out = [lf_tools.macros_jinja(spec["function_tool_format"])]
    if spec["tools_formatter"] == "StringFormatter":  # phi4_mini: the tools column's text in a plain slot
        out.append("{%- set tool_text = '' -%}{%- if tools -%}" + lf_tools.ROW_TEXT + "{%- set tool_text = "
                   + _expr(spec["tools"], spec, "row_text") + " -%}{%- endif -%}")
    else:
        out.append(lf_tools.tools_jinja(spec["tools_tool_format"]))
    out += [
        "{%- set default_system = " + literal(spec["default_system"] if default_system is None else default_system)
        + " -%}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- set system = messages[0]['content'] or default_system -%}{%- set loop_messages = messages[1:] -%}",
        "{%- else -%}{%- set system = default_system -%}{%- set loop_messages = messages -%}{%- endif -%}",
        # LLaMA-Factory: `if system or tools`, the system slot with the tools' text after the system text
        "{%- set system_text = system + tool_text if system or tools else '' -%}",
    ]
    if reasoning:  # LLaMA-Factory's enable_thinking defaults to true
        out.append("{%- set thinking = enable_thinking is not defined or enable_thinking is none "
                   "or enable_thinking -%}")
    out.append("{%- for message in loop_messages -%}")
    out.append("{%- set content = message['content'] -%}")
    out.append("{%- if loop.first -%}{{- " + _expr(spec["prefix"], spec) + " -}}{%- endif -%}")
    if spec["class"] != "Llama2Template":
        out.append("{%- if loop.first and system_text -%}{{- " + _expr(spec["system"], spec, "system_text")
                   + " -}}{%- endif -%}")
    out.append("{%- if message['role'] == 'user' -%}")
    if spec["class"] == "Llama2Template":
        # the system text (the formatter's first slot) goes inside the first user message
        fused = spec["system"][0] if spec["system"] and isinstance(spec["system"][0], str) else "{{content}}"
        out.append("{%- if loop.first and system_text -%}{%- set content = "
                   + _expr([fused], spec, "system_text") + " + content -%}{%- endif -%}")
    out.append("{{- " + _expr(spec["user"], spec) + " -}}")
    out.append("{%- elif message['role'] == 'assistant' -%}")
    out.append("{%- set content = content if content is string else '' -%}")
    if reasoning:
        # thinking off: thoughts are dropped and an empty one closes the prompt (the generation prompt writes
        # it too); thinking on: an answer without a thought is trained with an empty one before it
        out.append("{%- if not thinking and " + literal(open_t) + " in content and " + literal(close_t)
                   + " in content -%}{%- set content = (content.split(" + literal(open_t) + ", 1)[0] + "
                   "content.split(" + literal(close_t) + ", 1)[1]).lstrip('\\n') -%}{%- endif -%}")
        out.append("{%- if not thinking or (" + literal(open_t.strip()) + " not in content and "
                   + literal(close_t.strip()) + " not in content) -%}{{- " + literal(empty_thought)
                   + " -}}{%- endif -%}")
    # tool calls: LLaMA-Factory's function turn, the calls in the tool format after any text of the message
    out.append("{%- if message.get('tool_calls') -%}")
    out.append(lf_tools.calls_jinja(spec["function_tool_format"]))
    out.append("{%- set content = content + calls_text -%}{{- " + _expr(spec["function"], spec) + " -}}")
    out.append("{%- else -%}{{- " + _expr(spec["assistant"], spec) + " -}}{%- endif -%}")
    if spec["efficient_eos"]:
        out.append("{{- " + eos + " -}}")
    # tool results: one observation turn per run of tool messages, joined as LLaMA-Factory's OpenAI converter does
    out.append("{%- elif message['role'] == 'tool' -%}")
    out.append("{%- if loop.first or loop.previtem['role'] != 'tool' -%}"
               "{%- set run = namespace(parts=[], open=true) -%}"
               "{%- for later in loop_messages[loop.index0:] -%}{%- if run.open and later['role'] == 'tool' -%}"
               "{%- set run.parts = run.parts + [later['content']] -%}{%- else -%}{%- set run.open = false -%}"
               "{%- endif -%}{%- endfor -%}"
               "{%- set content = run.parts | join(" + literal(_TOOL_RESULTS_SEP) + ") -%}"
               "{{- " + _expr(spec["observation"], spec) + " -}}{%- endif -%}")
    out.append("{%- else -%}{{- raise_exception(" + literal(f"template '{name}': role '")
               + " + message['role'] + " + literal("' is not supported") + ") -}}{%- endif -%}")
    out.append("{%- endfor -%}")
    if reasoning:
        out.append("{%- if add_generation_prompt and not thinking -%}{{- " + literal(empty_thought)
                   + " -}}{%- endif -%}")
    return "".join(out)
