"""LLaMA-Factory 0.9.5's tool-call extractors (its data/tool_utils.py `tool_extractor`): a model's answer ->
function calls, for each tool format; the inverse of what data/lf_tools.py writes.

`FORMATS[name].extract(text)` gives `[FunctionCall(name, arguments as JSON text)]`, or None where LLaMA-Factory
returns the text unchanged (the answer is content). The regexes and JSON handling are LLaMA-Factory's (Apache-2.0,
(c) the LlamaFactory team), except where its extractor cannot read what its own formatter writes, or returns
something that is not a call:
- glm4_moe: LLaMA-Factory reads Qwen's `<tool_call>{json}</tool_call>` only; the `<arg_key>`/`<arg_value>` calls
  it writes (without `</tool_call>`, as GLM-4.5 writes them with it) are read too;
- minimax2: the `<invoke>` calls LLaMA-Factory writes without a `<minimax:tool_call>` wrapper are read too;
- mistral: a leading `[TOOL_CALLS]` that decoding kept as text (a tokenizer without that control token) is skipped;
- glm4: the arguments after the name line must be a JSON object (LLaMA-Factory takes any JSON: "Total:\\n42"
  would be a call named "Total:");
- a call without a name in text, a list of no calls, and minimax1 calls of which no line parses are content
  (LLaMA-Factory raises, or answers an empty list of calls).

Values inside XML-like calls (qwen3_5, minimax2, glm4_moe, seed_oss) are JSON when they parse as JSON and text
otherwise, as LLaMA-Factory reads them: the string "42" comes back as the number 42.

For a server that streams the text before a call, each format also says where a call can begin: its fixed
`markers` (`<tool_call>`, `Action:` ...), or, for the formats whose call is the whole answer, `opens`, which
decides from the answer's beginning: llama3 and mistral answer a call as JSON (the first character that is not
a space is `{` or `[`), glm4 as a name line followed by a JSON object (the first character after the first
newline is `{`).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


class FunctionCall(NamedTuple):
    name: str
    arguments: str  # JSON text


Calls = list[FunctionCall] | None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _named(call: Any, key: str) -> bool:
    """`call` is an object with a name in text and `key` (its arguments)."""
    return isinstance(call, dict) and isinstance(call.get("name"), str) and bool(call["name"]) and key in call


def _xml_args(param: re.Pattern, block: str, strip_text: bool) -> dict[str, Any]:
    """The `param` pairs of `block`: JSON values where they parse, else the text (stripped if `strip_text`)."""
    args = {}
    for key, raw in param.findall(block):
        try:
            args[key] = json.loads(raw.strip())
        except json.JSONDecodeError:
            args[key] = raw.strip() if strip_text else raw
    return args


# ------------------------------------------------------------------ default: "Action: name\nAction Input: {json}"

_DEFAULT = re.compile(r"Action:\s*([a-zA-Z0-9_]+)\s*Action Input:\s*(.+?)(?=\s*Action:|\s*$)", re.DOTALL)


def _default(text: str) -> Calls:
    calls = []
    for name, raw in _DEFAULT.findall(text):
        try:
            arguments = json.loads(raw.strip().strip('"').strip("```"))
        except json.JSONDecodeError:
            return None
        calls.append(FunctionCall(name.strip(), _dumps(arguments)))
    return calls or None


# ------------------------------------------------------------------ qwen, ling: <tool_call>\n{json}\n</tool_call>

_QWEN = re.compile(r"<tool_call>(.+?)</tool_call>(?=\s*<tool_call>|\s*$)", re.DOTALL)


def _qwen(text: str) -> Calls:
    calls = []
    for block in _QWEN.findall(text):
        try:
            call = json.loads(block.strip())
        except json.JSONDecodeError:
            return None
        if not _named(call, "arguments"):
            return None
        calls.append(FunctionCall(call["name"], _dumps(call["arguments"])))
    return calls or None


# ------------------------------------------------------------------ llama3, mistral: the whole answer is JSON


def _json_answer(key: str, marker: str = "") -> Callable[[str], Calls]:
    """The answer as one call or a list of calls, `{"name": ..., key: {...}}`, after an optional `marker`."""

    def extract(text: str) -> Calls:
        body = text.strip()
        if marker:
            body = body.removeprefix(marker)
        try:
            calls = json.loads(body)
        except json.JSONDecodeError:
            return None
        calls = calls if isinstance(calls, list) else [calls]
        if not calls or not all(_named(call, key) for call in calls):
            return None
        return [FunctionCall(call["name"], _dumps(call[key])) for call in calls]

    return extract


def _opens_json(text: str) -> bool | None:
    start = text.lstrip()
    return start[0] in "[{" if start else None


# ------------------------------------------------------------------ glm4: "name\n{json}"


def _glm4(text: str) -> Calls:
    if "\n" not in text:
        return None
    name, rest = text.split("\n", 1)
    try:
        arguments = json.loads(rest.strip())
    except json.JSONDecodeError:
        return None
    if not name or not isinstance(arguments, dict):
        return None
    return [FunctionCall(name, _dumps(arguments))]


def _opens_glm4(text: str) -> bool | None:
    if "\n" not in text:
        return None
    rest = text.split("\n", 1)[1].lstrip()
    return rest[0] == "{" if rest else None


# ------------------------------------------------------------------ glm4_moe: <tool_call>name<arg_key>..<arg_value>..

_GLM4_MOE = re.compile(r"<tool_call>([^<\n]+)((?:\s*<arg_key>.*?</arg_key>\s*<arg_value>.*?</arg_value>)*)"
                       r"\s*(?:</tool_call>)?", re.DOTALL)
_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


def _glm4_moe(text: str) -> Calls:
    calls = _qwen(text)  # LLaMA-Factory's extractor for glm4_moe
    if calls is not None:
        return calls
    calls = [FunctionCall(name.strip(), _dumps(_xml_args(_ARG, block, strip_text=False)))
             for name, block in _GLM4_MOE.findall(text) if name.strip()]
    return calls or None


# ------------------------------------------------------------------ qwen3_5, seed_oss: <function=name><parameter=k>

_QWEN35 = re.compile(r"<tool_call>\s*<function=\s*([^\s<>]+)\s*(.*?)\s*</function>\s*</tool_call>", re.DOTALL)
_SEED = re.compile(r"<seed:tool_call>\s*<function=\s*([^\s<]+)\s*(.*?)\s*</function>\s*</seed:tool_call>",
                   re.DOTALL)
_PARAM = re.compile(r"<parameter=(.*?)>(.*?)</parameter>", re.DOTALL)


def _qwen3_5(text: str) -> Calls:
    calls = [FunctionCall(name.strip(), _dumps(_xml_args(_PARAM, block.strip(), strip_text=True)))
             for name, block in _QWEN35.findall(text)]
    return calls or None


def _seed_oss(text: str) -> Calls:
    calls = [FunctionCall(name.strip(), _dumps(_xml_args(_PARAM, block.strip(), strip_text=False)))
             for name, block in _SEED.findall(text)]
    return calls or None


# ------------------------------------------------------------------ minimax1, minimax2

_MINIMAX1 = re.compile(r"<tool_calls>\s*(.+?)\s*</tool_calls>", re.DOTALL)
_MINIMAX2 = re.compile(r"<minimax:tool_call>\s*(.+?)\s*</minimax:tool_call>", re.DOTALL)
_INVOKE = re.compile(r"<invoke name=\"(.*?)\">(.*?)</invoke>", re.DOTALL)
_PARAM_NAME = re.compile(r"<parameter name=\"(.*?)\">(.*?)</parameter>", re.DOTALL)


def _minimax1(text: str) -> Calls:
    """One JSON call a line between <tool_calls> tags; lines that do not parse are skipped."""
    match = _MINIMAX1.search(text)
    if not match:
        return None
    calls = []
    for line in match.group(1).split("\n"):
        try:
            call = json.loads(line.strip()) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if _named(call, "arguments"):
            calls.append(FunctionCall(call["name"], _dumps(call["arguments"])))
    return calls or None


def _minimax2(text: str) -> Calls:
    match = _MINIMAX2.search(text)
    body = match.group(1) if match else text  # LLaMA-Factory writes the calls without the wrapper
    calls = [FunctionCall(name.strip(), _dumps(_xml_args(_PARAM_NAME, block, strip_text=False)))
             for name, block in _INVOKE.findall(body)]
    return calls or None


# ------------------------------------------------------------------ lfm2: <|tool_call_start|>[f(a="x")]<|tool_call_end|>

_LFM2_START, _LFM2_END = "<|tool_call_start|>", "<|tool_call_end|>"
_JSON_NAMES = {"true": True, "false": False, "null": None}


def _python_value(node: ast.AST) -> Any:
    """A keyword argument's value: a Python literal, or JSON's true / false / null."""
    if isinstance(node, ast.Name):
        if node.id not in _JSON_NAMES:
            raise ValueError(f"unknown name: {node.id}")
        return _JSON_NAMES[node.id]
    return ast.literal_eval(node)


def _lfm2(text: str) -> Calls:
    start = text.find(_LFM2_START)
    end = text.find(_LFM2_END, start) if start >= 0 else -1
    if end < 0:
        return None
    try:
        tree = ast.parse(text[start + len(_LFM2_START):end].strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    nodes = tree.body.elts if isinstance(tree.body, ast.List) else [tree.body]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            return None
        try:
            arguments = {kw.arg: _python_value(kw.value) for kw in node.keywords}
        except (ValueError, SyntaxError, TypeError):
            return None
        calls.append(FunctionCall(node.func.id, _dumps(arguments)))
    return calls or None


# ------------------------------------------------------------------ gemma4: <|tool_call>call:name{k:<|"|>v<|"|>}<tool_call|>

_GEMMA4 = re.compile(r"<\|tool_call\>call:([^{\s]+)\{(.*?)\}<tool_call\|>", re.DOTALL)
_GEMMA4_STRING = re.compile(r"<\|\"\|\>(.*?)<\|\"\|\>", re.DOTALL)
_BARE_KEY = re.compile(r"(^|[{\s,])([A-Za-z_][A-Za-z0-9_]*)(\s*:)")


def _gemma4_arguments(inner: str) -> str:
    """Gemma 4's `k:v,...` arguments as JSON text; the text itself where it does not parse."""
    text = inner.strip()
    if not text:
        return "{}"
    normalized = _GEMMA4_STRING.sub(lambda m: _dumps(m.group(1)), "{" + text + "}")
    normalized = _BARE_KEY.sub(r'\1"\2"\3', normalized)
    for candidate in (normalized, text):
        try:
            return _dumps(json.loads(candidate))
        except json.JSONDecodeError:
            pass
    return text


def _gemma4(text: str) -> Calls:
    calls = [FunctionCall(name.strip(), _gemma4_arguments(inner)) for name, inner in _GEMMA4.findall(text)]
    return calls or None


# ------------------------------------------------------------------ the table


@dataclass(frozen=True)
class ToolCallFormat:
    """How one format's calls are read back: `extract`, and where a call can begin (`markers` or `opens`)."""

    extract: Callable[[str], Calls]
    markers: tuple[str, ...] = ()  # a call begins at the first of these
    opens: Callable[[str], bool | None] | None = None  # the whole answer is a call: yes, no, or not known yet


FORMATS: dict[str, ToolCallFormat] = {
    "default": ToolCallFormat(_default, ("Action:",)),
    "qwen": ToolCallFormat(_qwen, ("<tool_call>",)),
    "ling": ToolCallFormat(_qwen, ("<tool_call>",)),
    "mistral": ToolCallFormat(_json_answer("arguments", "[TOOL_CALLS]"), opens=_opens_json),
    "llama3": ToolCallFormat(_json_answer("parameters"), opens=_opens_json),
    "glm4": ToolCallFormat(_glm4, opens=_opens_glm4),
    "glm4_moe": ToolCallFormat(_glm4_moe, ("<tool_call>",)),
    "qwen3_5": ToolCallFormat(_qwen3_5, ("<tool_call>",)),
    "minimax1": ToolCallFormat(_minimax1, ("<tool_calls>",)),
    "minimax2": ToolCallFormat(_minimax2, ("<minimax:tool_call>", "<invoke name=")),
    "lfm2": ToolCallFormat(_lfm2, (_LFM2_START,)),
    "gemma4": ToolCallFormat(_gemma4, ("<|tool_call>",)),
    "seed_oss": ToolCallFormat(_seed_oss, ("<seed:tool_call>",)),
}
