"""Evaluation samples: a row's conversation without its final assistant turn, and that turn.

Rows come from `eval_dataset`, else the `val_size` split of `dataset` (the same held-out rows
training used), else an `--input` file whose rows may lack the answer (predict only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instill.config import DataArgs, RunConfig
from instill.data.dataset import load_examples, split_examples
from instill.data.example import Example
from instill.data.formats import fill_placeholders, to_example
from instill.data.media import attach_media
from instill.data.registry import DatasetSpec, read_rows
from instill.errors import ConfigError, DataError


@dataclass
class Sample:
    id: str  # the row's source, e.g. data/x.jsonl:17
    prompt: list[dict]
    answer: str | None  # the final assistant content; None when the row has none
    tools: list[dict] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)  # absolute paths, one per <image> in the prompt


def _sample(example: Example, answered: bool = True) -> Sample:
    messages = example.messages
    if answered:
        if messages[-1].get("tool_calls"):
            raise DataError(f"{example.source}: the final answer is a tool call; eval scores text answers only")
        return Sample(example.source, messages[:-1], messages[-1]["content"], example.tools, example.extras,
                      example.images)
    return Sample(example.source, messages[:-1], None, example.tools, example.extras, example.images)


def has_eval_source(data: DataArgs) -> bool:
    """Whether the config names evaluation rows: eval_dataset, or a val_size split of dataset."""
    return bool(data.eval_dataset or (data.val_size and data.dataset))


def load_samples(config: RunConfig, input_path: str | Path | None = None) -> list[Sample]:
    """The evaluation samples the config (or an --input file) names, capped at eval_max_samples."""
    data, seed = config.data, config.train.seed
    if input_path is not None:
        samples = _input_samples(Path(input_path), config)
    elif not has_eval_source(data):
        raise ConfigError("nothing to evaluate: set eval_dataset (or val_size with dataset), or pass --input FILE")
    elif data.eval_dataset:
        samples = [_sample(e) for e in load_examples(data.eval_dataset, data, seed)]
    else:
        samples = [_sample(e) for e in split_examples(load_examples(data.dataset, data, seed), data.val_size, seed)[1]]
    return samples[: config.eval.eval_max_samples] if config.eval.eval_max_samples else samples


def _input_samples(path: Path, config: RunConfig) -> list[Sample]:
    """Rows of a json/jsonl/csv/parquet file in openai, sharegpt or alpaca shape; the answer is optional."""
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    rows = list(read_rows(DatasetSpec(name=path.name, file_name=str(path.resolve())), path.parent))
    keys = rows[0][1]
    if "messages" in keys or "conversations" in keys:
        column = "messages" if "messages" in keys else "conversations"
        images = {"images": "images"} if "images" in keys else {}  # LLaMA-Factory's mllm rows, paths beside the file
        spec = DatasetSpec(name=path.name, formatting="openai" if column == "messages" else "sharegpt",
                           columns={"messages": column, **images})
    elif "instruction" in keys:
        extra = {k: k for k in ("system", "history") if k in keys}
        spec = DatasetSpec(name=path.name, formatting="alpaca", columns=extra)
    else:
        raise DataError(f"{rows[0][0]}: cannot tell the row format from its keys ({', '.join(map(str, keys))}); "
                        "expected 'messages' (openai), 'conversations' (sharegpt) or 'instruction'/'input'/'output'")
    samples = []
    for source, row in rows:
        row, answered = _with_placeholder_answer(row, spec)
        example = attach_media(to_example(row, spec, source), spec, path.parent)
        if config.data.dataset_placeholders:
            example = fill_placeholders(example, config.data.dataset_placeholders)
        samples.append(_sample(example, answered))
    return samples


def _with_placeholder_answer(row: dict, spec: DatasetSpec) -> tuple[dict, bool]:
    """The row, with a stand-in final answer if it has none (dropped again after parsing)."""
    if spec.formatting == "alpaca":
        column = spec.columns["response"]
        if isinstance(row.get(column), str) and row[column].strip():
            return row, True
        return {**row, column: "-"}, False
    turns = row.get(spec.columns["messages"])
    if not isinstance(turns, list) or not turns or not isinstance(turns[-1], dict):
        return row, True  # let the format report what is wrong
    role_key = "role" if "role" in turns[0] else spec.tags["role_tag"]
    content_key = "content" if role_key == "role" else spec.tags["content_tag"]
    assistant = "assistant" if role_key == "role" else spec.tags["assistant_tag"]
    if turns[-1].get(role_key) == assistant:
        return row, True
    return {**row, spec.columns["messages"]: [*turns, {role_key: assistant, content_key: "-"}]}, False
