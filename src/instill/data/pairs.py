"""Preference rows (`ranking: true`) and KTO rows (`kto_tag`) -> prompt and answer token ids.

A preference row becomes two conversations that differ only in their last assistant turn (the
chosen and the rejected answer). Each goes through the SFT row formats (`formats.to_example`: the
same checks and errors) and the SFT tokenizer (`tokenize.encode_batch`, labels on the last turn
only), so `prompt_ids + chosen_ids` are exactly the ids SFT gives the chosen conversation, and both
answers end with the template's end-of-turn tokens. A KTO row is one conversation and a boolean.

Forms read (LLaMA-Factory's): alpaca, `instruction`/`input` + `chosen`/`rejected` strings;
sharegpt/openai, `conversations` ending on a user turn + `chosen`/`rejected` messages; KTO,
a conversation ending on the answer + a `kto_tag` column holding true/false.

Truncation (written here because trl cuts the joined sequence from the end, losing the
end-of-turn token): the prompt is cut first, in the middle as in SFT; an answer only when it
alone exceeds its share (`infer_seqlen` on the longer answer), keeping its closing tokens. A pair
left with no answer token is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from instill.data.example import Example
from instill.data.formats import to_example
from instill.data.registry import DatasetSpec, read_rows, resolve
from instill.data.templates import ChatTemplate
from instill.data.tokenize import IGNORE_INDEX, EncodeOptions, EncodeSummary, cut_middle, encode_batch, infer_seqlen
from instill.errors import DataError
from instill.stage_facts import PAIR_KINDS, DataKind

__all__ = ["PAIR_KINDS"]  # re-exported: the data layer's callers read it here
_NO_CUT = 1 << 30
_BATCH = 256


@dataclass
class PairItem:
    """One row: the chosen (or, for KTO, the only) conversation, the rejected one, the KTO label."""

    chosen: Example
    rejected: Example | None = None
    label: bool | None = None

    @property
    def conversations(self) -> list[Example]:
        """What is tokenized: chosen then rejected (pairs), or the one conversation (KTO)."""
        return [c for c in (self.chosen, self.rejected) if c is not None]


# ---------------------------------------------------------------- rows -> conversations


def _answer_column(spec: DatasetSpec, which: str) -> str:
    return spec.columns.get(which, which)


def _answer(row: dict, column: str, source: str) -> Any:
    if column not in row:
        raise DataError(f"{source}: missing column '{column}' (a preference row needs chosen and rejected answers)")
    value = row[column]
    text = value if isinstance(value, str) else value.get("value", value.get("content")) if isinstance(value, dict) else None
    if text is None and not isinstance(value, dict):
        raise DataError(f"{source}: column '{column}' must be a string or a message, got {type(value).__name__}")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{source}: empty answer in column '{column}'")
    return value


def _with_answer(row: dict, spec: DatasetSpec, column: str, source: str) -> Example:
    """The row's conversation ending with the answer in `column`, converted as SFT converts rows."""
    answer = _answer(row, column, source)
    if spec.formatting == "alpaca":
        if not isinstance(answer, str):
            raise DataError(f"{source}: column '{column}' must be a string in an alpaca entry")
        return to_example(row, replace(spec, columns={**spec.columns, "response": column}), source)
    messages = spec.columns["messages"]
    turns = row.get(messages)
    if not isinstance(turns, list):
        raise DataError(f"{source}: column '{messages}' must be a list of messages")
    message = answer if isinstance(answer, dict) else {spec.tags["role_tag"]: spec.tags["assistant_tag"],
                                                       spec.tags["content_tag"]: answer}
    return to_example({**row, messages: [*turns, message]}, spec, source)


def to_pair(row: dict, spec: DatasetSpec, source: str) -> PairItem:
    """A `ranking: true` row as its chosen and rejected conversations."""
    chosen = _with_answer(row, spec, _answer_column(spec, "chosen"), source)
    rejected = _with_answer(row, spec, _answer_column(spec, "rejected"), source)
    if chosen.messages[-1] == rejected.messages[-1]:
        raise DataError(f"{source}: the chosen and rejected answers are identical")
    return PairItem(chosen, rejected)


def to_kto(row: dict, spec: DatasetSpec, source: str) -> PairItem:
    """A KTO row: its conversation (ending on the judged answer) and the `kto_tag` boolean."""
    column = spec.columns["kto_tag"]
    if column not in row:
        raise DataError(f"{source}: missing column '{column}' (kto_tag: true or false)")
    label = row[column]
    if not isinstance(label, bool):
        raise DataError(f"{source}: column '{column}' (kto_tag) must be true or false, got {label!r}")
    example = to_example(row, spec, source)
    if example.messages[-1]["role"] != "assistant":
        raise DataError(f"{source}: a KTO conversation must end with the answer being judged")
    return PairItem(example, label=label)


def iter_items(names: list[str], dataset_dir: str, max_samples: int | None, seed: int, kind: DataKind
               ) -> Iterator[PairItem]:
    """Every row of the named entries (max_samples each) as PairItems."""
    convert = to_pair if kind == "pairs" else to_kto
    for spec in resolve(names, dataset_dir, kind):
        for n, (source, row) in enumerate(read_rows(spec, dataset_dir, seed=seed)):
            if max_samples is not None and n >= max_samples:
                break
            yield convert(row, spec, source)


# ---------------------------------------------------------------- conversations -> ids


def closing_tokens(template: ChatTemplate) -> int:
    """How many tokens the template writes after an answer's text (e.g. `<|im_end|>` and a newline)."""
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    text = template.render(probe)
    after = text[text.rindex("pong") + len("pong"):]
    return max(len(template.tokenizer(after, add_special_tokens=False)["input_ids"]), 1)


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def split_prompt(examples: list[Example], template: ChatTemplate, group: int, options: EncodeOptions
                 ) -> list[tuple[list[int], list[list[int]]]]:
    """SFT ids of conversations taken `group` at a time (2: chosen, rejected; 1: a KTO conversation):
    for each group, (the shared prompt ids, each conversation's last-answer ids). Uncut: `truncate` cuts later."""
    whole = replace(options, cutoff_len=_NO_CUT, train_on_prompt=False, mask_history=True)
    encoded = encode_batch(examples, template, whole)
    return [_split(encoded[i:i + group]) for i in range(0, len(encoded), group)]


def _split(group: list) -> tuple[list[int], list[list[int]]]:
    prompts = [e.input_ids[:next(i for i, label in enumerate(e.labels) if label != IGNORE_INDEX)] for e in group]
    # Tokens that merged across the prompt/answer boundary count as answer (trl's rule too).
    n = min(_common_prefix(prompts[0], p) for p in prompts)
    return prompts[0][:n], [e.input_ids[n:] for e in group]


def truncate(prompt: list[int], answers: list[list[int]], cutoff_len: int, closing: int
             ) -> tuple[list[int], list[list[int]], bool, bool]:
    """(prompt, answers, anything cut, an answer cut): prompt first, answers keep their closing tokens."""
    longest = max(len(a) for a in answers)
    if len(prompt) + longest <= cutoff_len:
        return prompt, answers, False, False
    keep_prompt, keep_answer = infer_seqlen(len(prompt), longest, cutoff_len)
    cut = [a if len(a) <= keep_answer else a[:max(keep_answer - closing, 0)] + a[len(a) - closing:]
           for a in answers]
    return cut_middle(prompt, keep_prompt), cut, True, any(len(a) > keep_answer for a in answers)


def fit(prompt: list[int], answers: list[list[int]], cutoff_len: int, closing: int, summary: EncodeSummary
        ) -> tuple[list[int], list[list[int]]] | None:
    """One row truncated to `cutoff_len` and counted in `summary`: (prompt, answers), or None when dropped
    (an answer left with no token but its closing ones)."""
    prompt, answers, truncated, answer_cut = truncate(prompt, answers, cutoff_len, closing)
    if min(len(a) for a in answers) <= closing:
        summary.drop("with no answer token left within cutoff_len")
        return None
    summary.kept += 1
    summary.truncated += truncated
    summary.response_cut += answer_cut
    summary.prompt_lengths.append(len(prompt))
    summary.response_lengths.append(sum(len(a) for a in answers))
    return prompt, answers


def encode_items(items: list[PairItem], template: ChatTemplate, options: EncodeOptions, kind: DataKind
                 ) -> tuple[dict[str, list], EncodeSummary]:
    """Columns for trl (pairs: prompt_ids/chosen_ids/rejected_ids; kto: prompt_ids/completion_ids/label)
    and what was kept, cut and dropped."""
    closing = closing_tokens(template)
    columns: dict[str, list] = ({"prompt_ids": [], "chosen_ids": [], "rejected_ids": []} if kind == "pairs"
                                else {"prompt_ids": [], "completion_ids": [], "label": []})
    summary = EncodeSummary()
    for item, (prompt, answers) in zip(items, _encoded(items, template, options)):
        fitted = fit(prompt, answers, options.cutoff_len, closing, summary)
        if fitted is None:
            continue
        prompt, answers = fitted
        columns["prompt_ids"].append(prompt)
        if kind == "pairs":
            columns["chosen_ids"].append(answers[0])
            columns["rejected_ids"].append(answers[1])
        else:
            columns["completion_ids"].append(answers[0])
            columns["label"].append(item.label)
    return columns, summary


def _encoded(items: list[PairItem], template: ChatTemplate, options: EncodeOptions
             ) -> Iterator[tuple[list[int], list[list[int]]]]:
    for i in range(0, len(items), _BATCH):
        chunk = items[i:i + _BATCH]
        conversations = [c for item in chunk for c in item.conversations]
        yield from split_prompt(conversations, template, 1 if items[0].rejected is None else 2, options)
