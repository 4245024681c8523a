"""The doctor's verdict: one line per check (PASS / WARN / FAIL / SKIP), each problem with its fix.

Written by hand rather than with a table library: every check stays one greppable line in a
log, the fix goes on the line below it, and colour is added only on a terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
_COLOURS = {PASS: "\x1b[32m", WARN: "\x1b[33m", FAIL: "\x1b[1;31m", SKIP: "\x1b[2m"}
_RESET = "\x1b[0m"


@dataclass
class Check:
    """One row: what was checked, what was found, and for WARN / FAIL what to do about it."""

    status: str
    area: str  # environment | template | generation | data | config
    name: str
    detail: str
    fix: str = ""


def use_colour(stream) -> bool:
    """Colour on a terminal, unless NO_COLOR is set (https://no-color.org)."""
    return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")


def render(checks: Iterable[Check], colour: bool = False) -> str:
    """The table as text: `STATUS  area  check  detail`, and `fix: ...` indented below problems."""
    checks = list(checks)
    area_w = max((len(c.area) for c in checks), default=0)
    name_w = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        status = f"{_COLOURS[c.status]}{c.status}{_RESET}" if colour else c.status
        lines.append(f"{status}  {c.area:<{area_w}}  {c.name:<{name_w}}  {c.detail}")
        if c.fix and c.status in (WARN, FAIL):
            lines.append(f"{'':4}  {'':<{area_w}}  {'':<{name_w}}  fix: {c.fix}")
    return "\n".join(lines)


def exit_code(checks: Iterable[Check]) -> int:
    """Like a linter: 0 all pass (or skipped), 1 warnings, 2 failures."""
    statuses = {c.status for c in checks}
    return 2 if FAIL in statuses else 1 if WARN in statuses else 0


def summary(checks: Iterable[Check]) -> str:
    checks = list(checks)
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, FAIL, SKIP)}
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n or s != SKIP)
