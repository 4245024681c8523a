"""`instill data dedup` and `instill data filter`.

Both read a dataset file in any of our three shapes and judge each row by its text
as training sees it (``instill.data.formats``): the prompt (system, user and tool
turns), the response (assistant turns), or both.

dedup. Exact duplicates share a hash of the normalised text (NFKC, case-folded,
whitespace removed). Near duplicates are found with MinHash LSH (datasketch) over
character n-grams (``--ngram``, 5 by default, which works for Chinese without word
segmentation). The LSH bands are set for recall (a band threshold 0.1 below
``--threshold``), and a candidate counts only if its MinHash-estimated Jaccard
similarity is at least ``--threshold``. N-grams found in more than ``--common-share`` of
the rows (at least 10 rows) are left out of the comparison: an instruction or template
that every row repeats would otherwise make different samples look alike. The first row
of a cluster is kept.

filter. Drops rows that do not load (bad rows), and by length in characters or tokens
(with ``--tokenizer``), by language (``langid``), and by regex blacklist.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instill.console import say
from instill.data.formats import to_example
from instill.data.registry import DatasetSpec
from instill.errors import DataError
from instill.prep.io import Rows, atomic_write_text, prompt_text, read_dataset, response_text
from instill.prep.register import add_output_args, save
from instill.prep.summary import Tally, progress

VIEWS = ("all", "prompt", "response")


def view_texts(rows: Rows, spec: DatasetSpec, by: str) -> list[str | None]:
    """The text of each row seen as ``by``; None for a row that does not load."""
    out: list[str | None] = []
    for source, row in rows:
        try:
            example = to_example(row, spec, source)
        except DataError:
            out.append(None)
            continue
        parts = {"prompt": [prompt_text(example)], "response": [response_text(example)],
                 "all": [prompt_text(example), response_text(example)]}[by]
        out.append("\n".join(parts))
    return out


def normalize(text: str) -> str:
    """NFKC, case-folded, without whitespace: the form exact duplicates share."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


# ---------------------------------------------------------------- dedup


@dataclass
class Cluster:
    kept: str  # source of the row kept
    removed: list[str] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)  # 1.0 for exact duplicates


def shingles(text: str, n: int) -> set[bytes]:
    return {text[i:i + n].encode() for i in range(max(1, len(text) - n + 1))}


def distinctive_shingles(norms: list[str | None], n: int, common_share: float) -> list[set[bytes] | None]:
    """Each text's n-grams minus those found in more than ``common_share`` of the rows (and at least 10):
    an instruction or template every row repeats would otherwise make all rows look alike."""
    sets = [None if t is None else shingles(t, n) for t in norms]
    df = Counter(g for s in sets if s is not None for g in s)
    limit = max(common_share * sum(s is not None for s in sets), 10)
    common = {g for g, count in df.items() if count > limit}
    return [None if s is None else (s - common) or s for s in sets]


def dedup_rows(rows: Rows, texts: list[str | None], near: bool = True, threshold: float = 0.8, ngram: int = 5,
               num_perm: int = 128, common_share: float = 0.1) -> tuple[list[int], list[Cluster], Tally]:
    """Indexes of rows kept, the clusters that lost rows, and the tally."""
    from datasketch import MinHash, MinHashLSH

    if not 0 < threshold <= 1:
        raise DataError(f"--threshold must be in (0, 1], got {threshold}")
    tally = Tally("dedup")
    tally.rows_in = len(rows)
    norms = [None if t is None else normalize(t) for t in texts]
    grams = distinctive_shingles(norms, ngram, common_share) if near else [None] * len(rows)
    exact: dict[str, int] = {}
    clusters: dict[int, Cluster] = {}
    # Banding tuned for recall (misses ~1% of pairs at the threshold, not datasketch's default ~60%);
    # the extra candidates are checked against the threshold below.
    lsh = MinHashLSH(threshold=max(0.1, threshold - 0.1), num_perm=num_perm, weights=(0.2, 0.8)) if near else None
    hashes: dict[str, Any] = {}  # LSH key -> MinHash
    kept: list[int] = []
    for i in progress(range(len(rows)), "Deduplicating", total=len(rows)):
        if norms[i] is None:
            kept.append(i)  # bad rows are left for `filter`/`check` to report
            continue
        key = hashlib.sha1(norms[i].encode()).hexdigest()
        if key in exact:
            _cluster(clusters, rows, exact[key]).removed.append(rows[i][0])
            clusters[exact[key]].similarity.append(1.0)
            tally.drop("exact duplicates")
            continue
        if lsh is not None:
            mh = MinHash(num_perm=num_perm)
            mh.update_batch(list(grams[i]))
            score, j = max(((hashes[k].jaccard(mh), int(k)) for k in lsh.query(mh)), default=(0.0, -1))
            if score >= threshold:
                _cluster(clusters, rows, j).removed.append(rows[i][0])
                clusters[j].similarity.append(round(score, 3))
                tally.drop("near duplicates")
                continue
            lsh.insert(str(i), mh)
            hashes[str(i)] = mh
        exact[key] = i
        kept.append(i)
    tally.rows_out = len(kept)
    return kept, list(clusters.values()), tally


def _cluster(clusters: dict[int, Cluster], rows: Rows, i: int) -> Cluster:
    if i not in clusters:
        clusters[i] = Cluster(kept=rows[i][0])
    return clusters[i]


def configure_dedup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file (alpaca/sharegpt/openai rows)")
    parser.add_argument("--by", choices=VIEWS, default="all", help="text compared (default: prompt + response)")
    parser.add_argument("--exact-only", action="store_true", help="skip near-duplicate detection")
    parser.add_argument("--threshold", type=float, default=0.8, help="near duplicate if Jaccard >= this (0.8)")
    parser.add_argument("--ngram", type=int, default=5, help="character n-gram size for MinHash (5)")
    parser.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (128)")
    parser.add_argument("--common-share", type=float, default=0.1,
                        help="ignore n-grams found in more than this share of rows, e.g. a shared instruction (0.1)")
    parser.add_argument("--report", help="write the removed clusters as JSON Lines here")
    add_output_args(parser)


def main_dedup(args: argparse.Namespace) -> int:
    spec, rows = read_dataset(args.dataset, encoding=args.encoding)
    texts = view_texts(rows, spec, args.by)
    kept, clusters, tally = dedup_rows(rows, texts, not args.exact_only, args.threshold, args.ngram, args.num_perm,
                                       args.common_share)
    if args.report:
        lines = [json.dumps(c.__dict__, ensure_ascii=False) for c in clusters]
        atomic_write_text(args.report, "".join(line + "\n" for line in lines))
    for c in sorted(clusters, key=lambda c: -len(c.removed))[:3]:
        say(f"  cluster of {len(c.removed) + 1}: kept {c.kept}, removed {', '.join(c.removed[:3])}"
            f"{' ...' if len(c.removed) > 3 else ''}")
    tail = save([rows[i][1] for i in kept], args.out, args.register, args.name, [rows[i][0] for i in kept])
    say(tally.line(f"{len(clusters)} clusters lost rows; {tail}"))
    return 0


# ---------------------------------------------------------------- filter


@dataclass
class FilterRules:
    by: str = "all"
    min_chars: int | None = None
    max_chars: int | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    langs: list[str] | None = None
    blacklist: list[str] = field(default_factory=list)


def load_text_tokenizer(path: str) -> Any:
    """A tokenizer from a tokenizer-only folder, or from a model (local dir, .gguf, hub id) via instill.model."""
    directory = Path(path)
    if directory.is_dir() and not (directory / "config.json").is_file() and any(
            (directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory)
    from instill.config import ModelArgs
    from instill.hub import resolve_model
    from instill.model.load import load_tokenizer

    return load_tokenizer(ModelArgs(model_name_or_path=path), resolve_model(path))


def token_counts(texts: list[str], tokenizer: Any, batch: int = 256) -> list[int]:
    counts: list[int] = []
    for start in range(0, len(texts), batch):
        ids = tokenizer(texts[start:start + batch], add_special_tokens=False)["input_ids"]
        counts += [len(x) for x in ids]
    return counts


def detect_language(text: str) -> str:
    import langid

    return langid.classify(text[:2000])[0]


def filter_rows(rows: Rows, spec: DatasetSpec, rules: FilterRules,
                tokenizer: Any = None) -> tuple[list[int], Tally, str]:
    """Indexes of rows kept, the tally, and the first bad row's message (or "")."""
    try:
        patterns = [re.compile(p) for p in rules.blacklist]
    except re.error as err:
        raise DataError(f"--blacklist: invalid regular expression: {err}") from None
    if (rules.min_tokens or rules.max_tokens) and tokenizer is None:
        raise DataError("--min-tokens/--max-tokens need --tokenizer (a model or tokenizer folder)")
    tally = Tally("filter")
    tally.rows_in = len(rows)
    texts = view_texts(rows, spec, rules.by)
    loaded = [i for i, t in enumerate(texts) if t is not None]
    tokens = dict(zip(loaded, token_counts([texts[i] for i in loaded], tokenizer))) if tokenizer else {}
    first_bad = ""
    kept: list[int] = []
    for i in progress(range(len(rows)), "Filtering", total=len(rows)):
        text = texts[i]
        if text is None:
            if not first_bad:
                try:
                    to_example(rows[i][1], spec, rows[i][0])
                except DataError as err:
                    first_bad = str(err)
            tally.drop("bad rows")
            continue
        reason = _rejection(text, tokens.get(i), rules, patterns)
        if reason:
            tally.drop(reason)
            continue
        kept.append(i)
    tally.rows_out = len(kept)
    return kept, tally, first_bad


def _rejection(text: str, n_tokens: int | None, rules: FilterRules, patterns: list[re.Pattern]) -> str | None:
    n = len(text.strip())
    if rules.min_chars is not None and n < rules.min_chars:
        return f"shorter than {rules.min_chars} chars"
    if rules.max_chars is not None and n > rules.max_chars:
        return f"longer than {rules.max_chars} chars"
    if n_tokens is not None and rules.min_tokens is not None and n_tokens < rules.min_tokens:
        return f"shorter than {rules.min_tokens} tokens"
    if n_tokens is not None and rules.max_tokens is not None and n_tokens > rules.max_tokens:
        return f"longer than {rules.max_tokens} tokens"
    for pattern in patterns:
        if pattern.search(text):
            return f"matches /{pattern.pattern}/"
    if rules.langs:
        lang = detect_language(text)
        if lang not in rules.langs:
            return f"language {lang}"
    return None


def configure_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file (alpaca/sharegpt/openai rows)")
    parser.add_argument("--by", choices=VIEWS, default="all", help="text judged (default: prompt + response)")
    parser.add_argument("--min-chars", type=int)
    parser.add_argument("--max-chars", type=int)
    parser.add_argument("--min-tokens", type=int)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--tokenizer", help="model or tokenizer folder for token lengths")
    parser.add_argument("--lang", help="keep only these languages, e.g. zh or zh,en (ISO 639-1, langid)")
    parser.add_argument("--blacklist", action="append", default=[], help="drop rows matching this regex (repeatable)")
    add_output_args(parser)


def main_filter(args: argparse.Namespace) -> int:
    spec, rows = read_dataset(args.dataset, encoding=args.encoding)
    rules = FilterRules(args.by, args.min_chars, args.max_chars, args.min_tokens, args.max_tokens,
                        [x.strip() for x in args.lang.split(",") if x.strip()] if args.lang else None, args.blacklist)
    tokenizer = load_text_tokenizer(args.tokenizer) if args.tokenizer else None
    kept, tally, first_bad = filter_rows(rows, spec, rules, tokenizer)
    if first_bad:
        say(f"first bad row: {first_bad}")
    say(tally.line(save([rows[i][1] for i in kept], args.out, args.register, args.name, [rows[i][0] for i in kept])))
    return 0

