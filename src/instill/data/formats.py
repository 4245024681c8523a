"""Row formats: one raw dataset row -> one Example.

``to_example`` dispatches on ``spec.formatting`` through ``FORMATS`` (one
function per format). A bad row is never dropped: it raises DataError naming
its source ("file:line: reason").

* alpaca: ``prompt`` ("instruction") and ``query`` ("input") become one user
  turn joined by "\\n" (either may be empty, not both), ``response`` ("output")
  the assistant turn; optional ``system``, ``history`` ([[user, assistant], ...])
  and ``tools`` columns. A list response (candidates for ranking) is refused.
* sharegpt / openai: ``messages`` ("conversations" / "messages") is a list of
  turns read through the entry's tags. user_tag -> user, assistant_tag ->
  assistant, observation_tag -> tool, function_tag -> assistant with
  ``tool_calls`` parsed from its JSON content, a leading system_tag -> system.
  An openai-style assistant turn's own ``tool_calls`` are normalised the same
  way. A sharegpt entry left with default tags whose turns are role/content
  dicts is read with OpenAI tags (the row shape tells us). Order, after an
  optional system turn: user/tool, assistant, user/tool, ... ending on an
  assistant turn; consecutive tool turns count as one (parallel tool results).
  Other keys of a turn (e.g. ``tool_call_id``, ``name``) are kept on the message.
* tools: a JSON string or a list; bare ``{"name", "description", "parameters"}``
  tools are wrapped as ``{"type": "function", "function": {...}}``; the column's
  own text is kept beside them (``RowTools``).

Row columns no format consumed are kept in ``Example.extras``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from instill.data.example import Example, RowTools
from instill.data.registry import OPENAI_TAGS, SHAREGPT_TAGS, DatasetSpec
from instill.errors import DataError


class RowError(ValueError):
    """Why a row is invalid; ``to_example`` prefixes the row's source."""


def to_example(row: dict, spec: DatasetSpec, source: str) -> Example:
    """Convert one raw row to an Example using the entry's formatting."""
    convert = FORMATS.get(spec.formatting)
    if convert is None:
        raise DataError(f"{source}: unknown formatting '{spec.formatting}' (known: {', '.join(FORMATS)})")
    try:
        example = convert(row, spec)
    except RowError as err:
        raise DataError(f"{source}: {err}") from None
    example.source = source
    return example


def fill_placeholders(example: Example, mapping: dict[str, str]) -> Example:
    """Return a copy with ``{{key}}`` in every message's content replaced by ``mapping[key]``."""
    if not mapping:
        return replace(example, messages=[dict(m) for m in example.messages], extras=dict(example.extras))
    pattern = re.compile(r"\{\{\s*(" + "|".join(map(re.escape, mapping)) + r")\s*\}\}")
    messages = []
    for message in example.messages:
        message = dict(message)
        if isinstance(message.get("content"), str):
            message["content"] = pattern.sub(lambda m: mapping[m.group(1)], message["content"])
        messages.append(message)
    return replace(example, messages=messages, extras=dict(example.extras))


def to_text(row: dict, spec: DatasetSpec, source: str) -> str:
    """A pretraining row's text (`stage: pt`): the alpaca `prompt` column, plus `query` when the entry maps one.

    LLaMA-Factory's pretraining entries (c4_demo, wiki_demo) map `prompt` to a `text` column.
    """
    if spec.formatting != "alpaca":
        raise DataError(f"dataset '{spec.name}': pretraining (stage: pt) reads plain text rows; use formatting: "
                        "alpaca with columns: {{prompt: text}} (as LLaMA-Factory's c4_demo does)")
    try:
        prompt = _text(row, spec.columns["prompt"], required=True)
        query = _text(row, spec.columns.get("query"), required=False)
    except RowError as err:
        raise DataError(f"{source}: {err}") from None
    text = "\n".join(part for part in (prompt, query) if part)
    if not text.strip():
        raise DataError(f"{source}: empty text in column '{spec.columns['prompt']}'")
    return text


# ---------------------------------------------------------------- alpaca


def alpaca(row: dict, spec: DatasetSpec) -> Example:
    """instruction/input/output rows (plus optional system, history, tools)."""
    cols = spec.columns
    messages = _system(row, cols.get("system")) + _history(row, cols.get("history"))
    prompt = _text(row, cols["prompt"], required=True)
    query = _text(row, cols.get("query"), required=False)
    user = "\n".join(part for part in (prompt, query) if part)
    if not user.strip():
        named = " and ".join(f"'{c}'" for c in (cols["prompt"], cols.get("query")) if c)
        raise RowError(f"empty prompt: {named} are empty")
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": _response(row, cols["response"])})
    consumed = ("prompt", "query", "response", "history", "system", "tools")
    return Example(messages, tools=_tools(row, cols.get("tools")), extras=_extras(row, cols, consumed))


def _text(row: dict, column: str | None, required: bool) -> str:
    if column is None or (column not in row and not required):
        return ""
    value = _column(row, column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"column '{column}' must be a string, got {type(value).__name__}")
    return value


def _response(row: dict, column: str) -> str:
    value = _column(row, column)
    if isinstance(value, list):
        raise RowError(f"column '{column}' is a list: candidate responses are preference (ranking) data, "
                       "which is not supported yet")
    if value is None:
        raise RowError(f"empty response: column '{column}' is null")
    if not isinstance(value, str):
        raise RowError(f"column '{column}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(f"empty response in column '{column}'")
    return value


def _history(row: dict, column: str | None) -> list[dict]:
    value = _maybe_json(row.get(column) if column else None, column)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RowError(f"column '{column}' must be a list of [user, assistant] pairs, got {type(value).__name__}")
    messages = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            got = json.dumps(pair, ensure_ascii=False)[:80]
            raise RowError(f"{column}[{i}] must be a [user, assistant] pair of strings, got {got}")
        if not pair[1].strip():
            raise RowError(f"{column}[{i}]: empty assistant reply")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return messages


# ---------------------------------------------------------------- sharegpt / openai


def conversation(row: dict, spec: DatasetSpec) -> Example:
    """A list of tagged turns (sharegpt ``from``/``value`` or openai ``role``/``content``)."""
    cols = spec.columns
    turns = _maybe_json(_column(row, cols["messages"]), cols["messages"])
    if not isinstance(turns, list):
        raise RowError(f"column '{cols['messages']}' must be a list of messages, got {type(turns).__name__}")
    if not turns:
        raise RowError(f"column '{cols['messages']}' has no messages")
    tags = _tags_for(turns, spec)
    converted = [_message(turn, i, tags) for i, turn in enumerate(turns)]
    raw_roles = [str(turn[tags["role_tag"]]) for turn in turns]
    column_system = _system(row, cols.get("system"))
    start = 0
    if converted[0]["role"] == "system":
        if column_system:
            raise RowError(f"both a leading system message and a system column '{cols['system']}'; keep one")
        start = 1
    _check_order(converted, raw_roles, start, tags)
    messages = converted[:start] + column_system + converted[start:]
    consumed = ("messages", "system", "tools")
    return Example(messages, tools=_tools(row, cols.get("tools")), extras=_extras(row, cols, consumed))


def _tags_for(turns: list, spec: DatasetSpec) -> dict[str, str]:
    """The entry's tags, or OpenAI's when a default-tagged sharegpt entry holds role/content turns."""
    first = turns[0]
    if (spec.formatting == "sharegpt" and spec.tags == SHAREGPT_TAGS and isinstance(first, dict)
            and "from" not in first and "role" in first):
        return OPENAI_TAGS
    return spec.tags


def _roles(tags: dict[str, str]) -> dict[str, str]:
    return {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["observation_tag"]: "tool",
            tags["function_tag"]: "function", tags["system_tag"]: "system"}


def _message(turn: Any, i: int, tags: dict[str, str]) -> dict:
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    if not isinstance(turn, dict):
        raise RowError(f"message {i} must be an object, got {type(turn).__name__}")
    if role_tag not in turn:
        raise RowError(f"message {i} has no role key '{role_tag}' (its keys: {', '.join(map(str, turn))}); "
                       "set tags.role_tag / tags.content_tag in dataset_info.json to match the rows")
    raw = turn[role_tag]
    role = _roles(tags).get(raw) if isinstance(raw, str) else None
    if role is None:
        known = ", ".join(f"{k}={v!r}" for k, v in tags.items() if k not in ("role_tag", "content_tag"))
        raise RowError(f"message {i}: unknown role {raw!r} (configured tags: {known})")
    calls = turn.get("tool_calls")
    if calls and role != "assistant":
        raise RowError(f"message {i}: only an assistant message ('{tags['assistant_tag']}') may carry tool_calls")
    if content_tag not in turn and not calls:
        raise RowError(f"message {i} has no content key '{content_tag}' (its keys: {', '.join(map(str, turn))})")
    content = _content(turn.get(content_tag), i)
    rest = {k: v for k, v in turn.items() if k not in (role_tag, content_tag, "tool_calls")}
    if "role" in rest or "content" in rest:
        raise RowError(f"message {i} has both '{role_tag}'/'{content_tag}' and 'role'/'content' keys")
    if role == "function":
        return {"role": "assistant", "content": "", "tool_calls": _tool_calls(content, i), **rest}
    if calls:
        return {"role": "assistant", "content": content, "tool_calls": _tool_calls(calls, i), **rest}
    if role in ("user", "assistant") and not content.strip():
        raise RowError(f"message {i} ('{raw}') is empty")
    return {"role": role, "content": content, **rest}


def _content(value: Any, i: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"message {i}: content must be a string, got {type(value).__name__} "
                       "(list/multimodal content is not supported)")
    return value


def _check_order(messages: list[dict], raw_roles: list[str], start: int, tags: dict[str, str]) -> None:
    """After an optional system turn: user/tool, assistant, user/tool, ... ending on assistant."""
    seen = ", ".join(raw_roles)
    user_side = f"'{tags['user_tag']}' or '{tags['observation_tag']}'"
    assistant_side = f"'{tags['assistant_tag']}' or '{tags['function_tag']}'"
    if start >= len(messages):
        raise RowError(f"no turns after the system message (roles: {seen})")
    expect_user, previous = True, None
    for i in range(start, len(messages)):
        role = messages[i]["role"]
        if role == "tool" and previous == "tool":
            continue
        if role not in (("user", "tool") if expect_user else ("assistant",)):
            want = user_side if expect_user else assistant_side
            raise RowError(f"message {i}: expected {want} but got '{raw_roles[i]}' (roles: {seen})")
        expect_user, previous = not expect_user, role
    if not expect_user:
        raise RowError(f"message {len(messages) - 1}: the last message must be {assistant_side}, "
                       f"got '{raw_roles[-1]}' (roles: {seen})")


# ---------------------------------------------------------------- tools


def _tools(row: dict, column: str | None) -> RowTools | None:
    """The tools column as OpenAI tools with the column's text, or None when absent or empty."""
    raw = row.get(column) if column else None
    value = _maybe_json(raw, column)
    if value in (None, [], {}):
        return None
    tools = value if isinstance(value, list) else [value]
    text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
    return RowTools([_tool(tool, i, column) for i, tool in enumerate(tools)], text)


def _tool(tool: Any, i: int, column: str) -> dict:
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        if tool.get("type", "function") != "function":
            raise RowError(f"{column}[{i}]: tool type must be 'function', got {tool.get('type')!r}")
        return {**tool, "type": "function"}
    if isinstance(tool, dict) and isinstance(tool.get("name"), str):
        return {"type": "function", "function": tool}
    got = json.dumps(tool, ensure_ascii=False)[:80]
    raise RowError(f"{column}[{i}]: expected {{\"name\", \"description\", \"parameters\"}} or "
                   f"{{\"type\": \"function\", \"function\": {{...}}}}, got {got}")


def _tool_calls(value: Any, i: int) -> list[dict]:
    """Function calls (JSON text, a dict or a list) as OpenAI tool_calls with dict arguments."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RowError(f"message {i}: function call is not valid JSON: {err.msg} (column {err.colno})") from None
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise RowError(f"message {i}: empty list of function calls")
    return [_tool_call(call, i) for call in calls]


def _tool_call(call: Any, i: int) -> dict:
    if not isinstance(call, dict):
        raise RowError(f"message {i}: a function call must be an object, got {type(call).__name__}")
    if "function" in call:  # OpenAI shape: {"type": "function", "function": {...}, "id": ...}
        if call.get("type", "function") != "function" or not isinstance(call["function"], dict):
            raise RowError(f"message {i}: tool call must be {{\"type\": \"function\", \"function\": {{...}}}}")
        fn, extra = call["function"], {k: v for k, v in call.items() if k not in ("type", "function")}
    else:
        fn, extra = call, {}
    unexpected = set(fn) - {"name", "arguments"}
    if unexpected:
        keys = sorted(unexpected)
        raise RowError(f"message {i}: function call has unexpected keys {keys} (expected name, arguments)")
    name, arguments = fn.get("name"), fn.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise RowError(f"message {i}: function call has no 'name'")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise RowError(f"message {i}: arguments of '{name}' are not valid JSON: {err.msg}") from None
    if not isinstance(arguments, dict):
        raise RowError(f"message {i}: arguments of '{name}' must be an object, got {type(arguments).__name__}")
    return {"type": "function", "function": {"name": name, "arguments": arguments}, **extra}


# ---------------------------------------------------------------- shared helpers


def _column(row: dict, column: str) -> Any:
    if column not in row:
        near = difflib.get_close_matches(column, [str(k) for k in row], n=1, cutoff=0.6)
        hint = f"; closest: '{near[0]}'" if near else ""
        raise RowError(f"missing column '{column}' (row has: {column_names(row)}{hint})")
    return row[column]


def _maybe_json(value: Any, column: str | None) -> Any:
    """Parse a JSON string (as CSV and some datasets store lists); other values pass through."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise RowError(f"column '{column}': invalid JSON: {err.msg} (column {err.colno})") from None


def _system(row: dict, column: str | None) -> list[dict]:
    value = row.get(column) if column else None
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        raise RowError(f"column '{column}' must be a string, got {type(value).__name__}")
    return [{"role": "system", "content": value}]


def _extras(row: dict, columns: dict[str, str], consumed: tuple[str, ...]) -> dict:
    used = {columns[k] for k in consumed if k in columns}
    return {k: v for k, v in row.items() if k not in used}


FORMATS: dict[str, Callable[[dict, DatasetSpec], Example]] = {
    "alpaca": alpaca,
    "sharegpt": conversation,
    "openai": conversation,
}


def column_names(keys: Iterable[object]) -> str:
    """Column names for a one-line message, comma-separated: each as it is, or quoted with escapes when it holds a
    newline or another control character."""
    return ", ".join(text if text.isprintable() else repr(text) for text in map(str, keys))
