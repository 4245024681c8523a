"""Prompt-only rows for the online stages (`stage: grpo`, `rloo`): the model writes the answers while training.

A row is read with the SFT row formats (`formats.to_example`: the same columns, tags and errors):
alpaca with or without its response column, sharegpt / OpenAI messages ending on a user turn (or on
an assistant turn, which is then the reference answer). The prompt is rendered with the run's chat
template up to the assistant's turn (`add_generation_prompt`), so trl generates after exactly the
text SFT trains on. Every other column of the row travels with it by name, as trl hands dataset
columns to reward functions; the reference answer, when the row has one, travels as `output`
(LLaMA-Factory's alpaca name, whatever the entry maps it from).

Columns: `prompt` (the rendered text), `prompt_tokens` (its length, for `max_prompt_length`), and
the extras. A column whose values Arrow cannot hold in one type (a list in one row, a string in
another) travels as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from instill.data.example import Example
from instill.data.formats import to_example
from instill.data.registry import DatasetSpec, read_rows, resolve
from instill.data.templates import ChatTemplate
from instill.data.tokenize import EncodeSummary
from instill.errors import DataError

ANSWER_COLUMN = "output"
_PLACEHOLDER_ANSWER = "\u0000"  # stands in for a missing answer while the SFT formats read the row


def to_prompt(row: dict, spec: DatasetSpec, source: str) -> Example:
    """The row's conversation up to its last user turn; the reference answer (if any) in extras['output']."""
    if spec.formatting == "alpaca":
        response = spec.columns["response"]
        answer = row.get(response)
        given = isinstance(answer, str) and bool(answer.strip())
        example = to_example({**row, response: answer if given else _PLACEHOLDER_ANSWER}, spec, source)
    else:
        messages = spec.columns["messages"]
        turns = row.get(messages)
        if isinstance(turns, str):
            try:
                turns = json.loads(turns)
            except json.JSONDecodeError:
                pass  # to_example reports it
        ends_on_user = (isinstance(turns, list) and turns and isinstance(turns[-1], dict)
                        and turns[-1].get(spec.tags["role_tag"]) in (spec.tags["user_tag"],
                                                                     spec.tags["observation_tag"]))
        if ends_on_user:
            filler = {spec.tags["role_tag"]: spec.tags["assistant_tag"], spec.tags["content_tag"]: _PLACEHOLDER_ANSWER}
            row = {**row, messages: [*turns, filler]}
        example = to_example(row, spec, source)
        given = not ends_on_user
    last = example.messages[-1]
    extras = dict(example.extras)
    if given and isinstance(last.get("content"), str):
        extras[ANSWER_COLUMN] = last["content"]
    return replace(example, messages=example.messages[:-1], extras=extras)


def iter_prompts(names: list[str], dataset_dir: str, max_samples: int | None, seed: int) -> Iterator[Example]:
    """Every row of the named entries (max_samples each) as prompt Examples."""
    for spec in resolve(names, dataset_dir, "prompts"):
        for n, (source, row) in enumerate(read_rows(spec, dataset_dir, seed=seed)):
            if max_samples is not None and n >= max_samples:
                break
            yield to_prompt(row, spec, source)


def _column(values: list[Any]) -> list[Any]:
    """Values Arrow can hold as one column: as given when they share a type, else as JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 and not (kinds & {dict}):
        return values
    return [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]


def prompt_rows(examples: list[Example], template: ChatTemplate, allow_special_tokens: bool = False
                ) -> tuple[dict[str, list], EncodeSummary]:
    """Columns for trl's online trainers (prompt, prompt_tokens, each extra column) and the prompt lengths."""
    tokenizer = template.tokenizer
    texts = [template.render(e.messages, e.tools, add_generation_prompt=True) for e in examples]
    # trl tokenizes the text with the tokenizer's special tokens: a template that writes the BOS itself
    # would get a second one.
    bos = tokenizer.bos_token
    if bos and tokenizer("", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]:
        texts = [t.removeprefix(bos) for t in texts]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False,
                                             split_special_tokens=not allow_special_tokens)["input_ids"]]
    summary = EncodeSummary(kept=len(examples), prompt_lengths=list(lengths))
    names = list(dict.fromkeys(k for e in examples for k in e.extras if k not in ("prompt", "prompt_tokens")))
    columns: dict[str, list] = {"prompt": texts, "prompt_tokens": lengths}
    for name in names:
        columns[name] = _column([e.extras.get(name) for e in examples])
    if not examples:
        raise DataError("no prompts to train on")
    return columns, summary
