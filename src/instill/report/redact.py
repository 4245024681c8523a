"""Secrets out of anything we log or show: hf_hub_token, API keys, passwords."""

from __future__ import annotations

import re
from typing import Any

from instill.config import SECRET_KEY, is_secret

_YAML_LINE = re.compile(r"^(?P<key>[\w.-]+)(?P<sep>\s*:\s*)(?P<value>.*)$")
_EMPTY = {"", "null", "~", "''", '""', "false", "true"}


def redact(flat: dict[str, Any]) -> dict[str, Any]:
    """The mapping with secret values replaced by '***' (None and booleans kept: they say nothing)."""
    return {k: ("***" if is_secret(k, v) else v) for k, v in flat.items()}


def redact_yaml(text: str) -> str:
    """A flat YAML document (run_config.yaml) with secret values replaced by '***'."""
    lines = []
    for line in text.splitlines():
        m = _YAML_LINE.match(line)
        if m and SECRET_KEY.search(m["key"]) and m["value"].strip().lower() not in _EMPTY:
            line = f"{m['key']}{m['sep']}'***'"
        lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")
