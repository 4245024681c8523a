"""The one internal conversation type every dataset row becomes.

Messages follow the Hugging Face / OpenAI chat shape so the tokenizer's own chat
template can render them unchanged:

    {"role": "system" | "user" | "assistant" | "tool", "content": str}
    assistant turns that call tools: {"role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": str, "arguments": dict}}]}

Tools are OpenAI-style: [{"type": "function", "function": {"name", "description", "parameters"}}].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Example:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    # Where the row came from, for error messages: "data/x.json:17" (line for jsonl, record index for json).
    source: str = ""
    # Columns the format did not consume (e.g. a label or a candidate list), kept for evaluation.
    extras: dict[str, Any] = field(default_factory=dict)
    # Absolute paths of the row's images, in placeholder order (`data/media.py`); empty for text rows.
    images: list[str] = field(default_factory=list)

    @property
    def roles(self) -> list[str]:
        return [m["role"] for m in self.messages]
