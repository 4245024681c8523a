"""Registry entries -> Examples -> tokenized `datasets.Dataset`s, cached on disk by fingerprint.

max_samples applies per dataset (first N rows, as LLaMA-Factory does); several datasets are concatenated
or interleaved (`mix_strategy`, `mix_datasets`); the mix is shuffled with `seed`; `val_size` holds out a
fraction or a count after shuffling.

Tokenizing runs as `Dataset.map(..., num_proc=preprocessing_num_workers)` and the result is
saved with `save_to_disk` under `<cache>/tokenized/<fingerprint>`, the fingerprint covering
the data files (path, size, mtime), the tokenizer, the template, every option that changes
the ids or labels, and this package's source. A second run with the same inputs loads it
instead of tokenizing (`overwrite_cache: true` rebuilds). `Dataset.map`'s own cache does not
help here: a dataset built in memory has no cache files for it to key on.

In a multi-process run (torchrun / accelerate) the local main process of each node tokenizes
first and the other ranks wait, then load what it saved, so the data is tokenized once per node.

Two kinds of data: conversations (SFT: labels on what the assistant says, `tokenize.encode`) and
plain text (`stage: pt`: every token trained, documents joined with eos and cut into blocks of
`cutoff_len`, as LLaMA-Factory and `run_clm` pack pretraining text). Preference pairs and KTO rows
(`kind` "pairs" / "kto") are read and tokenized by data/pairs.py and cached here the same way.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instill.config import DataArgs
from instill.console import say
from instill.data.example import Example, RowTools
from instill.data.formats import fill_placeholders, to_example, to_text
from instill.data.media import attach_media
from instill.data.multimodal import ImageInputs, encode_mixed
from instill.data.pairs import PAIR_KINDS, encode_items, iter_items
from instill.data.prompts import iter_prompts, prompt_rows
from instill.data.registry import DatasetSpec, read_rows, resolve
from instill.data.templates import ChatTemplate
from instill.data.tokenize import EncodeOptions, EncodeSummary, encode_batch
from instill.errors import DataError
from instill.hub import cache_root
from instill.ranks import main_first
from instill.stage_facts import DataKind

Kind = DataKind
_MIN_PARALLEL = 1000  # below this, starting processes costs more than it saves
_BATCH = 256


# ---------------------------------------------------------------- rows -> examples


def load_examples(names: list[str], args: DataArgs, seed: int) -> list[Example]:
    """Every row of the named datasets as Examples (max_samples each, placeholders filled), mixed as
    `mix_strategy` says."""
    return mix_datasets(names, lambda some: list(_iter_examples(some, args, seed)), args, seed)


# mix_strategy -> datasets.interleave_datasets' stopping_strategy (LLaMA-Factory's data_utils.merge_dataset)
STOPPING = {"interleave_under": "first_exhausted", "interleave_over": "all_exhausted",
            "interleave_once": "all_exhausted_without_replacement"}


def mix_datasets(names: list[str], load: Callable[[list[str]], list], args: DataArgs, seed: int) -> list:
    """The rows of the named datasets, `load`ed one dataset at a time, mixed as `mix_strategy` says:
    concatenated, or interleaved by `datasets.interleave_datasets` (with `interleave_probs` and `seed`, as
    LLaMA-Factory's merge_dataset). Interleaving draws row indices, so any kind of row mixes alike; the rows it
    leaves out (interleave_under stops when the first dataset runs out) or repeats (interleave_over) are
    counted in one line."""
    if args.mix_strategy == "concat" or len(names) < 2:
        return load(names)
    from datasets import Dataset, interleave_datasets

    parts = [load([name]) for name in names]
    empty = [name for name, part in zip(names, parts) if not part]
    if empty:
        raise DataError(f"mix_strategy: {args.mix_strategy}: dataset '{empty[0]}' has no rows to interleave")
    indices = [Dataset.from_dict({"part": [i] * len(part), "row": list(range(len(part)))})
               for i, part in enumerate(parts)]
    mixed = interleave_datasets(indices, probabilities=args.interleave_probs, seed=seed,
                                stopping_strategy=STOPPING[args.mix_strategy]).to_dict()
    drawn = list(zip(mixed["part"], mixed["row"]))
    used = [len({row for part, row in drawn if part == i}) for i in range(len(parts))]
    left_out = {name: len(part) - n for name, part, n in zip(names, parts, used) if n < len(part)}
    repeated = len(drawn) - sum(used)
    line = f"mix_strategy {args.mix_strategy}: {len(drawn)} rows from {sum(map(len, parts))} in {len(names)} datasets"
    if left_out:
        line += "; left out: " + ", ".join(f"{n} of {name}" for name, n in left_out.items())
    if repeated:
        line += f"; {repeated} rows drawn again"
    say(line)
    return [parts[part][row] for part, row in drawn]


_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _iter_examples(names: list[str], args: DataArgs, seed: int) -> Iterator[Example]:
    for spec in resolve(names, args.dataset_dir):
        unfilled: Counter[str] = Counter()  # placeholder name -> rows still holding it
        rows = 0
        for _, (source, row) in zip(_limit(args.max_samples), read_rows(spec, args.dataset_dir, seed=seed)):
            example = attach_media(to_example(row, spec, source), spec, args.media_dir or args.dataset_dir,
                                   "media_dir" if args.media_dir else "dataset_dir")
            if args.dataset_placeholders:
                example = fill_placeholders(example, args.dataset_placeholders)
            left = {m for msg in example.messages if isinstance(msg.get("content"), str)
                    for m in _PLACEHOLDER.findall(msg["content"])}
            rows += bool(left)
            unfilled.update(left)
            yield example
        if rows:
            names_ = ", ".join(f"{{{{{n}}}}}" for n in sorted(unfilled))
            example_map = ", ".join(f"{n}: ..." for n in sorted(unfilled))
            say(f"warning: dataset '{spec.name}': {rows} rows hold {names_} that dataset_placeholders does not fill; "
                f"the model will learn the literal text (set dataset_placeholders: {{{example_map}}})")


def load_texts(names: list[str], args: DataArgs, seed: int) -> list[tuple[str, str]]:
    """(source, text) of every row of the named pretraining datasets (max_samples each), mixed as
    `mix_strategy` says."""
    return mix_datasets(names, lambda some: list(_iter_texts(some, args, seed)), args, seed)


def _iter_texts(names: list[str], args: DataArgs, seed: int) -> Iterator[tuple[str, str]]:
    for spec in resolve(names, args.dataset_dir):
        for _, (source, row) in zip(_limit(args.max_samples), read_rows(spec, args.dataset_dir, seed=seed)):
            yield source, to_text(row, spec, source)


def _limit(n: int | None) -> Iterator[int]:
    return iter(range(n)) if n is not None else itertools.count()


def split_examples(examples: list, val_size: float, seed: int, keep_order: bool = False) -> tuple[list, list]:
    """Shuffle with `seed`, then hold out `val_size` (fraction < 1, or a count). `keep_order`
    (disable_shuffling) without val_size keeps the datasets' order, as LLaMA-Factory does; a held-out split
    is drawn at random either way (LLaMA-Factory's train_test_split shuffles too)."""
    examples = list(examples)
    if keep_order and not val_size:
        return examples, []
    random.Random(seed).shuffle(examples)
    if not val_size:
        return examples, []
    n_val = int(val_size) if val_size >= 1 else max(1, round(len(examples) * val_size))
    if n_val >= len(examples):
        raise DataError(f"val_size {val_size} leaves no training samples out of {len(examples)}")
    return examples[n_val:], examples[:n_val]


# ---------------------------------------------------------------- examples -> tokenized Dataset


@dataclass
class TokenizedSet:
    """A split's tokenized rows (`input_ids`, `labels`) and what tokenizing kept, cut and dropped."""

    name: str
    rows: Any  # datasets.Dataset
    summary: EncodeSummary = field(default_factory=EncodeSummary)

    def __len__(self) -> int:
        return len(self.rows)


def _encode_conversations(batch: dict, template: ChatTemplate, options: EncodeOptions,
                          media: ImageInputs | None = None) -> dict:
    examples = [Example(json.loads(m), _tools_of(t, text), s)
                for m, t, text, s in zip(batch["messages"], batch["tools"], batch["tools_text"], batch["source"])]
    if "images" in batch:  # a dataset with an images column (data/multimodal.py)
        for example, images in zip(examples, batch["images"]):
            example.images = list(images)
        encoded = encode_mixed(examples, template, media, options)
        return {**_columns(encoded), "images": [e.images for e in examples]}
    return _columns(encode_batch(examples, template, options))


def _tool_columns(example: Example) -> dict[str, str]:
    """An Example's tools as dataset columns: the OpenAI tools as JSON, and the row's own text (RowTools)."""
    tools = example.tools
    return {"tools": json.dumps(tools, ensure_ascii=False) if tools else "",
            "tools_text": tools.text if isinstance(tools, RowTools) else ""}


def _tools_of(tools: str, text: str) -> list[dict] | None:
    """The tools back from `_tool_columns`."""
    if not tools:
        return None
    return RowTools(json.loads(tools), text) if text else json.loads(tools)


def _columns(encoded: list) -> dict:
    return {
        "input_ids": [e.input_ids for e in encoded],
        "labels": [e.labels for e in encoded],
        "prompt_tokens": [e.prompt_tokens for e in encoded],
        "response_tokens": [e.response_tokens for e in encoded],
        "truncated": [e.truncated for e in encoded],
        "response_cut": [e.response_cut for e in encoded],
    }


def _encode_texts(batch: dict, template: ChatTemplate, options: EncodeOptions) -> dict:
    """Documents + eos, joined and cut into blocks of cutoff_len; the last block of a batch may be shorter.
    Only the template's tokenizer is used: plain text is not rendered."""
    tokenizer = template.tokenizer
    ids = tokenizer(batch["text"], add_special_tokens=False,
                    split_special_tokens=not options.allow_special_tokens)["input_ids"]
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream = [tok for doc in ids for tok in doc + end]
    size = options.cutoff_len
    blocks = [stream[i:i + size] for i in range(0, len(stream), size)]
    n = len(blocks)
    return {"input_ids": blocks, "labels": [list(b) for b in blocks], "prompt_tokens": [0] * n,
            "response_tokens": [len(b) for b in blocks], "truncated": [False] * n, "response_cut": [False] * n}


def _to_dataset(kind: Kind, items: list) -> Any:
    from datasets import Dataset

    if kind == "text":
        return Dataset.from_dict({"source": [s for s, _ in items], "text": [t for _, t in items]})
    tools = [_tool_columns(e) for e in items]
    columns = {
        "messages": [json.dumps(e.messages, ensure_ascii=False) for e in items],
        "tools": [t["tools"] for t in tools],
        "tools_text": [t["tools_text"] for t in tools],
        "source": [e.source for e in items],
    }
    if any(e.images for e in items):
        columns["images"] = [list(e.images) for e in items]
    return Dataset.from_dict(columns)


def tokenize_examples(name: str, items: list, args: DataArgs, template: ChatTemplate,
                      kind: Kind = "conversation", media: ImageInputs | None = None) -> TokenizedSet:
    """Encode every item (Examples, or (source, text) pairs for kind="text") into a Dataset, counting drops."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar

    options = EncodeOptions.from_args(args)
    raw = _to_dataset(kind, items)
    workers = min(args.preprocessing_num_workers or 1, os.cpu_count() or 1)
    num_proc = workers if workers > 1 and len(items) >= _MIN_PARALLEL else None
    fn, kwargs = ((_encode_texts, {"template": template, "options": options}) if kind == "text"
                  else (_encode_conversations, {"template": template, "options": options, "media": media}))
    disable_progress_bar()  # datasets' own bars: ours is the summary line
    try:
        encoded = _map_shards(raw, fn, kwargs, num_proc) if num_proc else _map(raw, fn, kwargs)
    finally:
        enable_progress_bar()
    # Whole columns through Arrow (indexing a column iterates it row by row, ~50 µs a row).
    stats = encoded.select_columns(["prompt_tokens", "response_tokens", "truncated", "response_cut"]).to_dict()
    summary = _summarize(stats)
    keep = [i for i, n in enumerate(stats["response_tokens"]) if n > 0]
    if len(keep) < len(encoded):
        encoded = encoded.select(keep)
    encoded = encoded.select_columns(["input_ids", "labels"] + (["images"] if "images" in encoded.column_names else []))
    if not len(encoded):
        why = ", ".join(f"{n} {r}" for r, n in summary.dropped.items())
        raise DataError(f"{name}: no valid samples left ({why}); raise cutoff_len or check the data")
    return TokenizedSet(name, encoded, summary)


def _map(raw: Any, fn: Any, kwargs: dict) -> Any:
    # new_fingerprint: our own cache key covers the inputs; datasets would otherwise hash the tokenizer
    # through dill for its own (unused) cache, ~13 s for Qwen2's.
    return raw.map(fn, fn_kwargs=kwargs, batched=True, batch_size=_BATCH, remove_columns=raw.column_names,
                   keep_in_memory=True, new_fingerprint=f"instill-{len(raw)}")


_WORK: dict[str, Any] = {}  # a worker's job, set once by the pool's initializer


def _start_worker(raw: Any, fn: Any, kwargs: dict) -> None:
    _WORK.update(raw=raw, fn=fn, kwargs=kwargs)


def _map_shard(index: int, shards: int, out: str) -> str:
    path = str(Path(out) / f"shard-{index}")
    _map(_WORK["raw"].shard(shards, index, contiguous=True), _WORK["fn"], _WORK["kwargs"]).save_to_disk(path)
    return path


def _map_shards(raw: Any, fn: Any, kwargs: dict, processes: int) -> Any:
    """`Dataset.map` on contiguous shards in `processes` forked workers, concatenated in order.

    Why not `map(num_proc=...)`: on a 2-core machine its manager process and result queue competed with
    the workers, and 2 processes tokenized slower than 1 (560 vs 830 samples/s, bench/bench_tokenize.py).
    Here each worker maps its shard and saves it; the parent only loads and concatenates. With fork the
    job (rows, the template with its tokenizer) reaches the workers through the pool's initializer without pickling.
    """
    import multiprocessing

    from datasets import concatenate_datasets, load_from_disk

    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with tempfile.TemporaryDirectory() as tmp, context.Pool(processes, _start_worker, (raw, fn, kwargs)) as pool:
        paths = pool.starmap(_map_shard, [(i, processes, tmp) for i in range(processes)])
        return concatenate_datasets([load_from_disk(p, keep_in_memory=True) for p in paths])


def _summarize(stats: dict[str, list]) -> EncodeSummary:
    summary = EncodeSummary()
    for p, r, t, c in zip(stats["prompt_tokens"], stats["response_tokens"], stats["truncated"],
                          stats["response_cut"]):
        if r == 0:
            summary.drop("with no answer token left within cutoff_len")
            continue
        summary.kept += 1
        summary.truncated += t
        summary.response_cut += c
        summary.prompt_lengths.append(p)
        summary.response_lengths.append(r)
    return summary


# ---------------------------------------------------------------- the cache


def _file_identity(spec: DatasetSpec, dataset_dir: str) -> list:
    """What identifies an entry's data: each local file's path, size and mtime; hub entries by url/revision."""
    if not spec.file_name:
        return [spec.hf_hub_url, spec.ms_hub_url, spec.script_url, spec.subset, spec.split, spec.revision]
    path = Path(dataset_dir) / spec.file_name
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]


def _source_digest() -> str:
    """This package's code: a change to how data is read, rendered or tokenized invalidates the cache."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


def _tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = [tokenizer.eos_token, tokenizer.pad_token, sorted(tokenizer.all_special_tokens)]
    return hashlib.sha256((text + json.dumps(extra)).encode()).hexdigest()


def fingerprint(args: DataArgs, template: ChatTemplate, seed: int, kind: Kind,
                media: ImageInputs | None = None) -> str:
    """A key for everything that decides the tokenized data."""
    names = list(args.dataset or []) + list(args.eval_dataset or [])
    specs = resolve(names, args.dataset_dir, kind) if names else []
    key = {
        "kind": kind,
        "datasets": [[asdict(s), _file_identity(s, args.dataset_dir)] for s in specs],
        "dataset": args.dataset, "eval_dataset": args.eval_dataset,
        "options": {**asdict(EncodeOptions.from_args(args)),
                    **{k: getattr(args, k) for k in ("max_samples", "val_size", "dataset_placeholders", "media_dir", "mix_strategy",
                                                     "interleave_probs", "disable_shuffling",
                                                     "eval_on_each_dataset")}},
        "seed": seed,
        "template": [template.name, template.jinja, template.end_of_turn],
        "tokenizer": _tokenizer_digest(template.tokenizer),
        "code": _source_digest(),
    }
    if media is not None:
        key["media"] = media.key()
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_dir_for(args: DataArgs, key: str) -> Path:
    """`tokenized_path` when set (LLaMA-Factory's key), else $INSTILL_TOKENIZED_CACHE or
    <INSTILL_CACHE>/tokenized, then /<fingerprint>."""
    if args.tokenized_path:
        return Path(args.tokenized_path)
    root = os.environ.get("INSTILL_TOKENIZED_CACHE")
    return (Path(root) if root else cache_root() / "tokenized") / key


def _save(path: Path, sets: dict[str, TokenizedSet | None], key: str) -> None:
    """Write to a temporary sibling and rename, so a reader never sees half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    meta = {"fingerprint": key, "splits": {}}
    for name, part in sets.items():
        if part is None:
            continue
        part.rows.save_to_disk(str(tmp / name))
        meta["splits"][name] = asdict(part.summary)
    (tmp / "instill_cache.json").write_text(json.dumps(meta), encoding="utf-8")
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    try:
        tmp.rename(path)
    except OSError:  # another process renamed its copy first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)


def _load(path: Path, key: str) -> dict[str, TokenizedSet] | None:
    from datasets import load_from_disk

    meta_path = path / "instill_cache.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("fingerprint") != key:
            return None
        return {name: TokenizedSet(name, load_from_disk(str(path / name)), EncodeSummary(**summary))
                for name, summary in meta["splits"].items()}
    except (OSError, ValueError, TypeError, KeyError):
        return None  # unreadable: rebuilt


def _pair_set(name: str, items: list, args: DataArgs, template: ChatTemplate, kind: Kind) -> TokenizedSet:
    from datasets import Dataset

    columns, summary = encode_items(items, template, EncodeOptions.from_args(args), kind)
    if not summary.kept:
        why = ", ".join(f"{n} {r}" for r, n in summary.dropped.items())
        raise DataError(f"{name}: no valid samples left ({why}); raise cutoff_len or check the data")
    return TokenizedSet(name, Dataset.from_dict(columns), summary)


def _build_pairs(args: DataArgs, template: ChatTemplate, seed: int, kind: Kind) -> dict[str, TokenizedSet | None]:
    def load(names: list[str]) -> list:
        return mix_datasets(names, lambda some: list(iter_items(some, args.dataset_dir, args.max_samples, seed, kind)),
                            args, seed)

    train_items, eval_items = split_examples(load(args.dataset or []), args.val_size, seed, args.disable_shuffling)
    if args.eval_dataset:
        eval_items = load(args.eval_dataset)
    return {"train": _pair_set("train", train_items, args, template, kind),
            "eval": _pair_set("eval", eval_items, args, template, kind) if eval_items else None}


def _build_prompts(args: DataArgs, template: ChatTemplate, seed: int) -> dict[str, TokenizedSet | None]:
    from datasets import Dataset

    def load(names: list[str]) -> list:
        return mix_datasets(names, lambda some: list(iter_prompts(some, args.dataset_dir, args.max_samples, seed)),
                            args, seed)

    def as_set(name: str, items: list) -> TokenizedSet:
        columns, summary = prompt_rows(items, template, args.allow_special_tokens_in_data)
        return TokenizedSet(name, Dataset.from_dict(columns), summary)

    train_items, eval_items = split_examples(load(args.dataset or []), args.val_size, seed, args.disable_shuffling)
    if args.eval_dataset:
        eval_items = load(args.eval_dataset)
    return {"train": as_set("train", train_items), "eval": as_set("eval", eval_items) if eval_items else None}


EACH = "eval."  # split names of eval_on_each_dataset's sets: "eval.<dataset>"


def _build(args: DataArgs, template: ChatTemplate, seed: int, kind: Kind,
           media: ImageInputs | None = None) -> dict[str, TokenizedSet | None]:
    if kind in PAIR_KINDS:
        return _build_pairs(args, template, seed, kind)
    if kind == "prompts":
        return _build_prompts(args, template, seed)
    load = load_texts if kind == "text" else load_examples
    train_items, eval_items = split_examples(load(args.dataset or [], args, seed), args.val_size, seed,
                                             args.disable_shuffling)
    if args.eval_dataset and args.eval_on_each_dataset:  # one set per dataset, evaluated apart (LLaMA-Factory's)
        return {"train": tokenize_examples("train", train_items, args, template, kind, media),
                **{EACH + name: tokenize_examples(f"eval {name}", load([name], args, seed), args, template, kind,
                                                  media) for name in args.eval_dataset}}
    if args.eval_dataset:
        eval_items = load(args.eval_dataset, args, seed)
    return {"train": tokenize_examples("train", train_items, args, template, kind, media),
            "eval": tokenize_examples("eval", eval_items, args, template, kind, media) if eval_items
            else None}


def _eval_part(sets: dict[str, TokenizedSet | None]) -> TokenizedSet | dict[str, TokenizedSet] | None:
    """The eval set, or {dataset: set} with eval_on_each_dataset."""
    each = {name.removeprefix(EACH): part for name, part in sets.items() if name.startswith(EACH) and part}
    return each or sets.get("eval")


def prepare_datasets(args: DataArgs, template: ChatTemplate, seed: int,
                     kind: Kind = "conversation", media: ImageInputs | None = None
                     ) -> tuple[TokenizedSet, TokenizedSet | dict[str, TokenizedSet] | None]:
    """The tokenized training set and, when asked for, the evaluation set (from the cache when it holds them);
    with eval_on_each_dataset, {eval dataset name: its set}.

    `media`: the model's image side, for datasets with an images column (rows then keep their image paths)."""
    key = fingerprint(args, template, seed, kind, media)
    path = cache_dir_for(args, key)
    # One process per machine tokenizes into the cache; the others wait on a gloo barrier, then load it.
    with main_first() as first:
        cached = None if (args.overwrite_cache and first) else _load(path, key)
        if cached is not None:
            say(f"tokenized data loaded from the cache: {path}", every_rank=not first)
            return cached["train"], _eval_part(cached)
        sets = _build(args, template, seed, kind, media)
        if not first:
            say(f"tokenized again: the cache in {path} was not readable", every_rank=True)
        if first:
            _save(path, sets, key)
            say(f"tokenized data cached in {path} (overwrite_cache: true rebuilds it)")
    return sets["train"], _eval_part(sets)


def iterable_dataset(args: DataArgs, template: ChatTemplate, seed: int, kind: Kind = "conversation") -> Any:
    """`streaming: true`: rows read, rendered and tokenized lazily as training consumes them.

    For data larger than memory; nothing is cached, there is no length to count epochs by (so
    `max_steps` is required) and the shuffle is a seeded buffer of `buffer_size` rows. Several datasets are
    concatenated or interleaved (`mix_strategy`, by `datasets.interleave_datasets`, as LLaMA-Factory streams
    them); a stream cannot count what interleave_under leaves unread. Samples left with no trained token are
    skipped.
    """
    from datasets import IterableDataset, interleave_datasets

    options = EncodeOptions.from_args(args)
    names = list(args.dataset or [])

    def rows(name: str = "") -> Iterator[dict]:
        some = [name] if name else names
        if kind == "text":
            for source, text in _iter_texts(some, args, seed):
                yield {"source": source, "text": text}
        else:
            for e in _iter_examples(some, args, seed):
                if e.images:
                    raise DataError(f"{e.source}: streaming: true does not carry images yet; set streaming: false")
                yield {"messages": json.dumps(e.messages, ensure_ascii=False), **_tool_columns(e), "source": e.source}

    fn = _encode_texts if kind == "text" else _encode_conversations
    if args.mix_strategy == "concat" or len(names) < 2:
        stream = IterableDataset.from_generator(rows)
    else:
        stream = interleave_datasets([IterableDataset.from_generator(rows, gen_kwargs={"name": name}) for name in names],
                                     probabilities=args.interleave_probs, seed=seed,
                                     stopping_strategy=STOPPING[args.mix_strategy])
        if args.mix_strategy == "interleave_under":
            say(f"mix_strategy interleave_under: the stream ends when the first of {len(names)} datasets runs out; "
                "the rows of the others not read by then are not used (a stream cannot count them)")
    stream = stream.shuffle(seed=seed, buffer_size=args.buffer_size)
    stream = stream.map(fn, fn_kwargs={"template": template, "options": options}, batched=True, batch_size=_BATCH,
                        remove_columns=["source", "text"] if kind == "text" else ["messages", "tools", "tools_text", "source"])
    stream = stream.filter(lambda row: row["response_tokens"] > 0)
    return stream.select_columns(["input_ids", "labels"])
