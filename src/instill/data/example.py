"""The one internal conversation type every dataset row becomes.

Messages follow the Hugging Face / OpenAI chat shape so the tokenizer's own chat
template can render them unchanged:

    {"role": "system" | "user" | "assistant" | "tool", "content": str}
    assistant turns that call tools: {"role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": str, "arguments": dict}}]}

Tools are OpenAI-style: [{"type": "function", "function": {"name", "description", "parameters"}}]; a row's
tools also keep the column's own text (`RowTools`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class RowTools(list):
    """A row's tools as OpenAI tools, with `text`: the tools column as LLaMA-Factory reads it (the row's string
    as it is; a list or object as `json.dumps(..., ensure_ascii=False)`, as its OpenAI converter writes it).
    LLaMA-Factory's phi4_mini template writes that text and its seed_oss format the JSON parsed from it, not the
    OpenAI form (data/lf_tools.py). The text rides on the list so that it goes wherever the row's tools go
    (training, evaluation, scoring); tools from elsewhere (a server request) are plain lists."""

    def __init__(self, tools: Iterable[dict[str, Any]], text: str) -> None:
        super().__init__(tools)
        self.text = text

    @functools.cached_property
    def value(self) -> Any:
        """The text parsed, as the row has it (bare or wrapped functions, a list or one object)."""
        return json.loads(self.text)


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
