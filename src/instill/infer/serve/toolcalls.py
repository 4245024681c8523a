"""Tool calls in generated text -> OpenAI `tool_calls`, in the served template's tool format.

Qwen2.5's template (and our `qwen`/`chatml` templates, which glaive-style data is trained with) asks
the model to answer a call as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` (Hermes), the
format read when the template names none (`parse_tool_calls`). A LLaMA-Factory template name or `tool_format`
names one of LLaMA-Factory's formats, read as its `tool_extractor` reads it (data/lf_tool_calls.py).

`ToolCallSplitter` takes the text as it streams: what comes before the format's first call marker
(`<tool_call>`, `Action:` ...) is content and streams at once (spaces and newlines once text follows them, so the
ones before a call are not content); from the marker on, text is held until the end and parsed. In the formats whose call is the whole answer (llama3, mistral, glm4) the answer is held from its
start until its beginning shows whether it opens like a call, and then either held to the end or streamed.
Text that does not parse as calls is content. Streamed and non-streamed answers go through the same splitter,
so they agree.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from instill.data.lf_tool_calls import FORMATS, FunctionCall
from instill.infer.serve.rows import partial_stop

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """OpenAI tool_calls from `<tool_call>{json}</tool_call>` blocks; None if any block is not a call.

    A last block cut off before `</tool_call>` (the model stopped at its end-of-turn) still counts when
    its JSON is complete.
    """
    calls = []
    for body in _CALL.findall(text):
        try:
            call = json.loads(body)
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        arguments = call.get("arguments", call.get("parameters", {}))
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(_openai(FunctionCall(call["name"], arguments)))
    return calls or None


def _openai(call: FunctionCall) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}


def _parse(tool_format: str | None, text: str) -> list[dict[str, Any]] | None:
    if tool_format is None:
        return parse_tool_calls(text)
    calls = FORMATS[tool_format].extract(text)
    return [_openai(call) for call in calls] if calls else None


class ToolCallSplitter:
    """Splits streamed text into content (now) and tool calls (at the end); `tool_format` as the template's
    (None: Hermes)."""

    def __init__(self, tool_format: str | None = None) -> None:
        self.tool_format = tool_format
        spec = None if tool_format is None else FORMATS[tool_format]
        self._markers = (OPEN,) if spec is None else spec.markers
        self._opens = None if spec is None else spec.opens
        self.text = ""
        self._sent = 0
        self._in_call = False
        self._plain = False  # the answer is known not to be a call (a whole-answer format)

    def feed(self, delta: str) -> str:
        """Content that can be shown now."""
        self.text += delta
        if self._in_call:
            return ""
        if self._plain:
            return self._take(len(self.text))
        if self._opens is not None:
            opens = self._opens(self.text)
            self._in_call, self._plain = opens is True, opens is False
            return self._take(len(self.text)) if self._plain else ""
        found = [at for at in (self.text.find(m, self._sent) for m in self._markers) if at >= 0]
        if found:
            self._in_call = True
            return self._take(self._before_spaces(min(found)))
        return self._take(self._before_spaces(len(self.text) - partial_stop(self.text, self._markers)))

    def finish(self) -> tuple[str, list[dict[str, Any]] | None]:
        """(content not yet shown, tool calls). Text that does not parse as calls is content."""
        if not self._plain and self._sent < len(self.text):
            calls = _parse(self.tool_format, self.text[self._sent:])
            if calls is not None:
                return "", calls
        return self._take(len(self.text)), None

    def _before_spaces(self, upto: int) -> int:
        """`upto`, less the spaces before it: they are held, and dropped if a call follows them."""
        while upto > self._sent and self.text[upto - 1].isspace():
            upto -= 1
        return upto

    def _take(self, upto: int) -> str:
        out, self._sent = self.text[self._sent:upto], max(self._sent, upto)
        return out
