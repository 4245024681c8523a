"""What instill prints: `[instill] ...` lines and length percentiles, the same way everywhere."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def say(message: str) -> None:
    """One line of instill's own output on stdout (flushed, so it interleaves with progress bars)."""
    print(f"[instill] {message}", flush=True)


def percentiles(values: Sequence[int], ps: Sequence[int] = (50, 90, 99, 100)) -> dict[str, int]:
    """{"p50": .., "p90": .., ...} of a list of lengths (empty dict for no values)."""
    if not len(values):
        return {}
    return {f"p{p}": int(v) for p, v in zip(ps, np.percentile(np.asarray(values), ps))}


def percentile_line(values: Sequence[int]) -> str:
    """'p50 12 · p90 40 · p99 77 · max 80', or '-' for no values."""
    p = percentiles(values)
    return " · ".join(f"{k} {v}" for k, v in p.items()).replace("p100", "max") if p else "-"
