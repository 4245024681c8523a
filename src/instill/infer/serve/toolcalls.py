"""Hermes-style tool calls in generated text -> OpenAI `tool_calls`.

Qwen2.5's template (and our `qwen`/`chatml` templates, which glaive-style data is trained with) asks
the model to answer a call as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.
`ToolCallSplitter` takes the text as it streams: what comes before the first `<tool_call>` is content
and streams at once; from the tag on, text is held until the end and parsed. Streamed and non-streamed
answers go through the same splitter, so they agree.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

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
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": call["name"], "arguments": arguments}})
    return calls or None


class ToolCallSplitter:
    """Splits streamed text into content (now) and tool calls (at the end)."""

    def __init__(self) -> None:
        self.text = ""
        self._sent = 0
        self._in_call = False

    def feed(self, delta: str) -> str:
        """Content that can be shown now."""
        self.text += delta
        if self._in_call:
            return ""
        at = self.text.find(OPEN, self._sent)
        if at >= 0:
            self._in_call = True
            return self._take(at)
        return self._take(len(self.text) - partial_stop(self.text, (OPEN,)))

    def finish(self) -> tuple[str, list[dict[str, Any]] | None]:
        """(content not yet shown, tool calls). Text that does not parse as calls is content."""
        if self._in_call:
            calls = parse_tool_calls(self.text[self._sent:])
            if calls is not None:
                return "", calls
        return self._take(len(self.text)), None

    def _take(self, upto: int) -> str:
        out, self._sent = self.text[self._sent:upto], max(self._sent, upto)
        return out
