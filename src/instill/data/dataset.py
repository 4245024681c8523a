"""Registry entries -> Examples -> tokenized train / eval sets, with a summary of what was kept.

max_samples applies per dataset (first N rows, as LLaMA-Factory does); the concatenation is
shuffled with `seed`; `val_size` holds out a fraction or a count after shuffling. Tokenized data
is not cached (tokenizing runs at ~300 multi-turn samples/s per process), so `overwrite_cache`
has nothing to overwrite.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from instill.config import DataArgs
from instill.data.example import Example
from instill.data.formats import fill_placeholders, to_example
from instill.data.registry import read_rows, resolve
from instill.data.templates import ChatTemplate
from instill.data.tokenize import IGNORE_INDEX, Encoded, EncodeSummary, encode
from instill.errors import DataError


def load_examples(names: list[str], args: DataArgs, seed: int) -> list[Example]:
    """Every row of the named datasets as Examples (max_samples each, placeholders filled)."""
    examples: list[Example] = []
    for spec in resolve(names, args.dataset_dir):
        taken = 0
        for source, row in read_rows(spec, args.dataset_dir, seed=seed):
            if args.max_samples is not None and taken >= args.max_samples:
                break
            example = to_example(row, spec, source)
            if args.dataset_placeholders:
                example = fill_placeholders(example, args.dataset_placeholders)
            examples.append(example)
            taken += 1
    return examples


def split_examples(examples: list[Example], val_size: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Shuffle with `seed`, then hold out `val_size` (fraction < 1, or a count)."""
    examples = list(examples)
    random.Random(seed).shuffle(examples)
    if not val_size:
        return examples, []
    n_val = int(val_size) if val_size >= 1 else max(1, round(len(examples) * val_size))
    if n_val >= len(examples):
        raise DataError(f"val_size {val_size} leaves no training samples out of {len(examples)}")
    return examples[n_val:], examples[:n_val]


@dataclass
class TokenizedSet:
    name: str
    rows: list[dict[str, list[int]]] = field(default_factory=list)
    summary: EncodeSummary = field(default_factory=EncodeSummary)


# Set in the parent right before forking workers: templates hold closures and cannot be pickled,
# but forked workers inherit them.
_WORKER_ARGS: tuple = ()
_MIN_PARALLEL = 1000  # below this, starting processes costs more than it saves


def _encode_in_worker(example: Example) -> Encoded:
    return encode(example, *_WORKER_ARGS)


def _encoded(examples: list[Example], args: DataArgs, template: ChatTemplate, tokenizer: Any) -> Iterator[Encoded]:
    global _WORKER_ARGS
    encode_args = (template, tokenizer, args.cutoff_len, args.train_on_prompt, args.mask_history)
    workers = min(args.preprocessing_num_workers or 1, os.cpu_count() or 1)
    if workers > 1 and len(examples) >= _MIN_PARALLEL and "fork" in multiprocessing.get_all_start_methods():
        _WORKER_ARGS = encode_args
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_encode_in_worker, examples, chunksize=64)
        return
    for example in examples:
        yield encode(example, *encode_args)


def tokenize_examples(name: str, examples: list[Example], args: DataArgs, template: ChatTemplate, tokenizer: Any) -> TokenizedSet:
    """Encode every example (in `preprocessing_num_workers` processes for large sets), counting drops."""
    out = TokenizedSet(name)
    items = _encoded(examples, args, template, tokenizer)
    for item in tqdm(items, total=len(examples), desc=f"Tokenizing {name}", unit="sample", leave=False):
        if not any(label != IGNORE_INDEX for label in item.labels):
            out.summary.drop("with no answer token left within cutoff_len")
            continue
        out.rows.append({"input_ids": item.input_ids, "labels": item.labels})
        out.summary.add(item)
    if not out.rows:
        why = ", ".join(f"{n} {r}" for r, n in out.summary.dropped.items())
        raise DataError(f"{name}: no valid samples left ({why}); raise cutoff_len or check the data")
    return out


def prepare_datasets(args: DataArgs, template: ChatTemplate, tokenizer: Any, seed: int) -> tuple[TokenizedSet, TokenizedSet | None]:
    """The tokenized training set and, when asked for, the evaluation set."""
    train_examples, eval_examples = split_examples(load_examples(args.dataset or [], args, seed), args.val_size, seed)
    if args.eval_dataset:
        eval_examples = load_examples(args.eval_dataset, args, seed)
    train = tokenize_examples("train", train_examples, args, template, tokenizer)
    evaluation = tokenize_examples("eval", eval_examples, args, template, tokenizer) if eval_examples else None
    return train, evaluation
