"""output_dir/data_summary.json: what tokenization kept, dropped and cut, per split, for the report.

Written by training from the `EncodeSummary` of each tokenized split (duck-typed here: kept,
dropped, truncated, response_cut, prompt_lengths, response_lengths), so the report can show
the data without re-reading or re-tokenizing it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from instill.console import percentiles

PERCENTILES = (50, 90, 99, 100)


def _stats(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values)
    out: dict[str, float] = percentiles(values, PERCENTILES)
    out["mean"] = round(float(arr.mean()), 1)
    out["min"] = int(arr.min())
    return out


def _histogram(values: list[int], bins: int = 30) -> dict[str, list] | None:
    if not values:
        return None
    hi = max(values)
    edges = np.linspace(0, hi + 1, min(bins, hi + 1) + 1)
    counts, edges = np.histogram(values, bins=edges)
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def summarize(summary: Any) -> dict[str, Any]:
    """One split's EncodeSummary as plain JSON data."""
    totals = [p + r for p, r in zip(summary.prompt_lengths, summary.response_lengths)]
    dropped = dict(summary.dropped)
    return {
        "rows": summary.kept + sum(dropped.values()),
        "kept": summary.kept,
        "dropped": sum(dropped.values()),
        "dropped_reasons": dropped,
        "truncated": summary.truncated,
        "response_cut": summary.response_cut,
        "tokens": int(sum(totals)),
        "trained_tokens": int(sum(summary.response_lengths)),
        "prompt_tokens": _stats(summary.prompt_lengths),
        "response_tokens": _stats(summary.response_lengths),
        "total_tokens": _stats(totals),
        "length_histogram": _histogram(totals),
    }


def write_data_summary(path: str | Path, sets: dict[str, Any], cutoff_len: int | None = None,
                       batching: dict[str, Any] | None = None) -> Path:
    """Write {split name: EncodeSummary or None} (None entries skipped) to `path`; `batching`: how the
    training rows are batched (batch size, grouping, expected padding ratio)."""
    data = {"cutoff_len": cutoff_len,
            "sets": {name: summarize(s) for name, s in sets.items() if s is not None}}
    if batching:
        data["batching"] = batching
    path = Path(path)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path
