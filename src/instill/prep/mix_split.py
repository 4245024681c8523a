"""`instill data mix` and `instill data split`, both seeded.

mix. Each input is ``PATH`` (every row), ``PATH:N`` (N rows) or ``PATH:0.3`` (a share of
``--total``; without ``--total`` the largest total that needs no row twice). Asking for
more rows than a file has takes each once and draws the rest again (upsampling, said in
the summary). The result is shuffled. Inputs of different shapes are converted to
``--format`` through ``instill.data.formats`` (columns the format does not use are kept).

split. ``--ratios 0.8,0.1,0.1`` -> ``<stem>_train``, ``_val``, ``_test`` (two ratios: train,
val). Part sizes are the ratios of the whole (largest remainder). Stratified by a label
column (``label`` by default when rows have one, as ``convert --preset classification``
writes): every part holds each label in the file's proportion, within one row.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

from instill.console import say
from instill.data.formats import to_example
from instill.data.registry import DatasetSpec
from instill.errors import DataError
from instill.prep.io import FORMATS, Rows, get_field, read_dataset, render, text_of
from instill.prep.register import add_output_args, save
from instill.prep.summary import Tally, progress

# ---------------------------------------------------------------- mix


def parse_source(text: str) -> tuple[str, float | int | None]:
    """'a.jsonl' -> (a.jsonl, None); 'a.jsonl:500' -> count; 'a.jsonl:0.3' -> ratio."""
    path, sep, weight = text.rpartition(":")
    if not sep or not path or Path(text).exists():
        return text, None
    try:
        value = float(weight)
    except ValueError:
        raise DataError(f"'{text}': write PATH, PATH:COUNT or PATH:RATIO") from None
    if value <= 0:
        raise DataError(f"'{text}': the count or ratio must be positive")
    is_ratio = "." in weight or value < 1
    if not is_ratio and not value.is_integer():
        raise DataError(f"'{text}': a count must be a whole number")
    return path, value if is_ratio else int(value)


def plan_counts(sizes: list[int], weights: list[float | int | None], total: int | None) -> list[int]:
    """Rows to take from each source."""
    ratios = [w for w in weights if isinstance(w, float)]
    if ratios and len(ratios) != len(weights):
        raise DataError("give every source a ratio (a.jsonl:0.7 b.jsonl:0.3), or counts/nothing, not a mix")
    if not ratios:
        if total is not None:
            raise DataError("--total applies to ratios (PATH:0.3), not to counts")
        return [size if w is None else int(w) for size, w in zip(sizes, weights)]
    shares = [r / sum(ratios) for r in ratios]
    if total is None:  # the largest total that takes no row twice
        total = min(math.floor(size / share) for size, share in zip(sizes, shares))
    counts = [math.floor(total * s) for s in shares]
    for k in sorted(range(len(shares)), key=lambda k: -(total * shares[k] - counts[k]))[: total - sum(counts)]:
        counts[k] += 1
    return counts


def take(rows: list, n: int, rng: random.Random) -> list:
    """n rows: a seeded sample, or every row once plus draws with replacement when n > len(rows)."""
    if n <= len(rows):
        return rng.sample(rows, n)
    return rows + [rows[rng.randrange(len(rows))] for _ in range(n - len(rows))]


def to_format(row: dict, spec: DatasetSpec, source: str, fmt: str) -> dict:
    """A row of another shape rewritten as ``fmt`` (plain user/assistant/system turns only)."""
    example = to_example(row, spec, source)
    if example.tools or any(m["role"] not in ("system", "user", "assistant") or m.get("tool_calls")
                            for m in example.messages):
        raise DataError(f"{source}: tool-calling rows cannot change format; mix files of the same format")
    messages = [{"role": m["role"], "content": m["content"]} for m in example.messages]
    return render({"messages": messages, **example.extras}, fmt)


def mix(sources: list[tuple[str, float | int | None]], total: int | None, seed: int,
        fmt: str | None, encoding: str | None = None) -> tuple[list[dict], Tally, list[str]]:
    """The mixed rows, the tally, and notes (per-source counts, upsampling)."""
    rng = random.Random(seed)
    loaded = [(path, *read_dataset(path, encoding=encoding)) for path, _ in sources]
    counts = plan_counts([len(rows) for _, _, rows in loaded], [w for _, w in sources], total)
    formats = {spec.formatting if spec.formatting != "sharegpt" else f"sharegpt:{spec.columns['messages']}"
               for _, spec, _ in loaded}
    if fmt is None and len(formats) > 1:
        raise DataError(f"the inputs have different shapes ({', '.join(sorted(formats))}); choose one with --format")
    tally, notes, out = Tally("mix"), [], []
    for (path, spec, rows), n in zip(loaded, counts):
        tally.rows_in += len(rows)
        picked = take(rows, n, rng)
        notes.append(f"{path}: {n} of {len(rows)}{' (upsampled)' if n > len(rows) else ''}")
        if n < len(rows):
            tally.drop("not sampled", len(rows) - n)
        out += [to_format(row, spec, src, fmt) if fmt else row for src, row in progress(picked, f"Mixing {path}")]
    rng.shuffle(out)
    tally.rows_out = len(out)
    return out, tally, notes


def configure_mix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="PATH[:COUNT|:RATIO]", help="datasets to mix")
    parser.add_argument("--total", type=int, help="rows in the mix when sources are given ratios")
    parser.add_argument("--seed", type=int, default=42)
    add_output_args(parser, formats=True)


def main_mix(args: argparse.Namespace) -> int:
    if args.format is not None and args.format not in FORMATS:
        raise DataError(f"unknown --format {args.format}")
    rows, tally, notes = mix([parse_source(s) for s in args.sources], args.total, args.seed, args.format,
                              args.encoding)
    for note in notes:
        say(f"  {note}")
    say(tally.line(save(rows, args.out, args.register, args.name)))
    return 0


# ---------------------------------------------------------------- split

PART_NAMES = {2: ("train", "val"), 3: ("train", "val", "test")}


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(x) for x in text.split(",")]
    except ValueError:
        raise DataError(f"--ratios {text!r}: write fractions like 0.8,0.1,0.1") from None
    if len(ratios) not in PART_NAMES or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DataError(f"--ratios {text!r}: give 2 (train,val) or 3 (train,val,test) fractions summing to 1")
    return ratios


def _allocate(n: int, ratios: list[float]) -> list[int]:
    """Whole rows per part by largest remainder."""
    counts = [math.floor(n * r) for r in ratios]
    for k in sorted(range(len(ratios)), key=lambda k: -(n * ratios[k] - counts[k]))[: n - sum(counts)]:
        counts[k] += 1
    return counts


def split_rows(rows: Rows, ratios: list[float], stratify: str | None, seed: int) -> list[list[int]]:
    """Row indexes of each part (seeded shuffles; stratified by ``stratify`` when given)."""
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (source, row) in enumerate(progress(rows, "Splitting", total=len(rows))):
        groups[text_of(get_field(row, stratify, source)) if stratify else ""].append(i)
    # Spread each label's rows evenly over [0, 1), sort everything by that position, and cut the
    # sequence at the parts' sizes: each part then holds every label in proportion (within one row).
    keyed = []
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        keyed += [((j + 0.5) / len(members), rng.random(), i) for j, i in enumerate(members)]
    order = [i for *_, i in sorted(keyed)]
    parts, start = [], 0
    for count in _allocate(len(order), ratios):
        part = order[start:start + count]
        rng.shuffle(part)
        parts.append(part)
        start += count
    return parts


def configure_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file to split")
    parser.add_argument("--ratios", default="0.8,0.1,0.1", help="train,val[,test] fractions (default 0.8,0.1,0.1)")
    parser.add_argument("--stratify", help="label column to stratify by (default: 'label' when rows have it)")
    parser.add_argument("--no-stratify", action="store_true", help="plain random split")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out-dir", required=True, help="folder for <stem>_train/_val/_test")
    parser.add_argument("--register", metavar="DATASET_INFO_JSON", help="register each part as <name>_<part>")
    parser.add_argument("--name", help="entry name prefix for --register (default: the input's stem)")


def main_split(args: argparse.Namespace) -> int:
    ratios = parse_ratios(args.ratios)
    _, rows = read_dataset(args.dataset, encoding=args.encoding)
    stratify = None if args.no_stratify else args.stratify or ("label" if "label" in rows[0][1] else None)
    parts = split_rows(rows, ratios, stratify, args.seed)
    path = Path(args.dataset)
    out_dir = Path(args.out_dir)
    name = args.name or path.stem
    if stratify:
        labels = Counter(text_of(get_field(r, stratify, s)) for s, r in rows)
        say(f"split: stratified by '{stratify}' ({len(labels)} labels)")
    tally = Tally("split")
    tally.rows_in = tally.rows_out = len(rows)
    for part_name, indexes in zip(PART_NAMES[len(ratios)], parts):
        if not indexes:
            say(f"  {part_name}: 0 rows, not written")
            continue
        part_rows = [rows[i][1] for i in indexes]
        suffix = path.suffix if path.suffix.lower() in (".json", ".jsonl") else ".jsonl"
        out = out_dir / f"{path.stem}_{part_name}{suffix}"
        tail = save(part_rows, out, args.register, f"{name}_{part_name}", [rows[i][0] for i in indexes])
        dist = _distribution(part_rows, stratify) if stratify else ""
        say(f"  {part_name}: {len(part_rows)} rows {tail}{dist}")
    say(tally.line())
    return 0


def _distribution(rows: list[dict], field: str) -> str:
    counts = Counter(text_of(get_field(row, field, "")) for row in rows)
    return "; " + json.dumps(dict(counts.most_common()), ensure_ascii=False)
