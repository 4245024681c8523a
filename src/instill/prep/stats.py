"""`instill data stats`: rows, length percentiles (characters, and tokens with --tokenizer), label
distribution and duplicate rate, printed and drawn as a PNG (length histograms + label bars).

Token counts are of the prompt and response text alone; the chat template adds a few
tokens per turn on top (`instill data check` measures with the template).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from instill.console import percentiles, say
from instill.data.formats import to_example
from instill.errors import DataError
from instill.prep.clean import load_text_tokenizer, normalize, token_counts
from instill.prep.io import atomic_write_text, get_field, prompt_text, read_dataset, response_text, text_of
from instill.prep.summary import progress
from instill.report.plots import font_rc

PERCENTILES = (50, 90, 99)


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"mean": round(float(np.mean(values)), 1), **percentiles(values, PERCENTILES), "max": int(max(values))}


def dataset_stats(path: str, tokenizer: Any = None, label_field: str | None = None,
                  encoding: str | None = None) -> dict[str, Any]:
    """Counts and length distributions of one dataset file (see the module docstring)."""
    spec, rows = read_dataset(path, encoding=encoding)
    label_field = label_field or ("label" if "label" in rows[0][1] else None)
    prompts, responses, labels, bad = [], [], Counter(), 0
    for source, row in progress(rows, "Reading", total=len(rows)):
        try:
            example = to_example(row, spec, source)
        except DataError:
            bad += 1
            continue
        prompts.append(prompt_text(example))
        responses.append(response_text(example))
        if label_field:
            labels[text_of(get_field(row, label_field, source))] += 1
    hashes = Counter(hashlib.sha1(normalize(p + "\n" + r).encode()).hexdigest() for p, r in zip(prompts, responses))
    duplicates = sum(n - 1 for n in hashes.values())
    stats: dict[str, Any] = {
        "file": str(path), "format": spec.formatting, "rows": len(rows), "bad_rows": bad,
        "duplicate_rate": round(duplicates / len(prompts), 4) if prompts else 0.0,
        "chars": {"prompt": [len(p) for p in prompts], "response": [len(r) for r in responses]},
    }
    if tokenizer is not None:
        stats["tokens"] = {"prompt": token_counts(prompts, tokenizer), "response": token_counts(responses, tokenizer)}
    if label_field:
        stats["labels"] = dict(labels.most_common())
    return stats


def describe(stats: dict[str, Any]) -> list[str]:
    lines = [f"{stats['file']}: {stats['rows']} rows ({stats['format']}), {stats['bad_rows']} bad, "
             f"duplicate rate {stats['duplicate_rate']:.1%}"]
    for unit in ("chars", "tokens"):
        for part in ("prompt", "response"):
            if unit in stats:
                s = _summary(stats[unit][part])
                if s:
                    body = " · ".join(f"{k} {v:g}" for k, v in s.items())
                    lines.append(f"  {part:8s} {unit:6s} {body}")
    if "labels" in stats:
        total = sum(stats["labels"].values()) or 1
        lines.append("  labels: " + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in stats["labels"].items()))
    return lines


def plot(stats: dict[str, Any], path: str | Path) -> Path:
    """Histograms of prompt and response lengths (tokens if counted, else characters), and label bars."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    unit = "tokens" if "tokens" in stats else "chars"
    panels = 3 if stats.get("labels") else 2
    with rc_context(font_rc(list(stats.get("labels") or []))), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        fig = Figure(figsize=(5 * panels, 4), dpi=110, layout="constrained")
        axes = fig.subplots(1, panels)
        for ax, part in zip(axes, ("prompt", "response")):
            values = stats[unit][part]
            narrow = bool(values) and max(values) - min(values) < 50  # one bar per length
            bins = np.arange(min(values), max(values) + 2) - 0.5 if narrow else 50
            ax.hist(values, bins=bins, color="#4c72b0")
            ax.set_title(f"{part} length ({unit})")
            ax.set_xlabel(unit)
            ax.set_ylabel("rows")
        if panels == 3:
            names, counts = zip(*list(stats["labels"].items())[:30])
            axes[2].barh(range(len(names)), counts, color="#55a868")
            axes[2].set_yticks(range(len(names)), labels=names)
            axes[2].invert_yaxis()
            axes[2].set_title("labels")
        fig.suptitle(f"{Path(stats['file']).name}: {stats['rows']} rows")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file (alpaca/sharegpt/openai rows)")
    parser.add_argument("--tokenizer", help="model or tokenizer folder: also count tokens")
    parser.add_argument("--label-field", help="label column (default: 'label' when rows have it)")
    parser.add_argument("--plot", help="PNG to write (default: <stem>_stats.png in the current folder)")
    parser.add_argument("--json", help="also write the summary numbers as JSON here")


def main(args: argparse.Namespace) -> int:
    tokenizer = load_text_tokenizer(args.tokenizer) if args.tokenizer else None
    stats = dataset_stats(args.dataset, tokenizer, args.label_field, args.encoding)
    for line in describe(stats):
        say(line)
    png = plot(stats, args.plot or f"{Path(args.dataset).stem}_stats.png")
    if args.json:
        numbers = {k: v for k, v in stats.items() if k not in ("chars", "tokens")}
        for unit in ("chars", "tokens"):
            if unit in stats:
                numbers[unit] = {part: _summary(values) for part, values in stats[unit].items()}
        atomic_write_text(args.json, json.dumps(numbers, ensure_ascii=False, indent=2) + "\n")
    say(f"stats: {stats['rows']} rows -> {png}")
    return 0
