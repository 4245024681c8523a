"""Example -> input_ids + labels: label masks from prefix rendering, truncation that keeps the answer.

Masks. The conversation is rendered once in full. For each assistant message i we also
render messages[:i] with the generation prompt and messages[:i+1] without: the text
between the two is what the assistant says, *including* the end-of-turn token the
template writes after it, so the model learns to stop. A template whose prefixes do not
line up is reported, not guessed around. Characters map to tokens through the fast
tokenizer's offsets, so the ids are exactly those of the full rendered text.

Truncation. Tokens are grouped into turns (prompt run, response run). Each turn gets
what is left of `cutoff_len`, split between prompt and response as LLaMA-Factory does
(`infer_seqlen`): the prompt is cut first and the response only when it alone exceeds
its share (at least half the budget). Unlike LLaMA-Factory we cut the prompt *in the middle*, so the head (system,
instruction) and the tail (the candidate labels after a long text, and the template's
"assistant" header) survive. The seeds' `input_ids[:MAX_LENGTH]` silently cut the label
off long news; here a sample left with no trained token is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instill.console import percentile_line
from instill.data.example import Example
from instill.data.templates import ChatTemplate
from instill.errors import TemplateError

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int  # untrained tokens kept
    response_tokens: int  # trained tokens kept
    original_tokens: int  # before truncation
    truncated: bool  # anything cut
    response_cut: bool  # part of an answer cut


def assistant_spans(example: Example, template: ChatTemplate) -> tuple[str, list[tuple[int, int]]]:
    """The full text and the [start, end) character span of every assistant turn in it."""
    messages, tools = example.messages, example.tools
    full = template.render(messages, tools)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = template.render(messages[:i], tools, add_generation_prompt=True)
        upto = template.render(messages[: i + 1], tools)
        if not upto.startswith(prompt) or not full.startswith(upto):
            raise TemplateError(
                f"{example.source}: template '{template.name}' is not prefix-stable at message {i} "
                "(rendering a shorter conversation is not a prefix of the longer one); "
                "choose a named template that is (e.g. template: qwen)"
            )
        spans.append((len(prompt), len(upto)))
    return full, spans


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How many prompt and response tokens to keep (LLaMA-Factory's `infer_seqlen`, answer-favouring)."""
    if target_len * 2 < cutoff_len:  # the response fits in half: cut the prompt only
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:  # the prompt fits in half: the response gets the rest
        max_target_len = cutoff_len - source_len
    else:  # both long: share in proportion, but the answer keeps at least half
        # (LLaMA-Factory's plain proportion gives a 40-token answer after a 10k-token text 0 tokens.)
        max_target_len = max(int(cutoff_len * (target_len / (source_len + target_len))), cutoff_len // 2)
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def _cut_middle(ids: list[int], keep: int) -> list[int]:
    if keep >= len(ids):
        return ids
    if keep <= 0:
        return []
    tail = keep // 2
    return ids[: keep - tail] + (ids[len(ids) - tail:] if tail else [])


def _turns(ids: list[int], trained: list[bool]) -> list[tuple[list[int], list[int]]]:
    """Split into (prompt run, response run) pairs; a trailing prompt run gets an empty response."""
    turns: list[tuple[list[int], list[int]]] = []
    prompt: list[int] = []
    response: list[int] = []
    for tok, is_trained in zip(ids, trained):
        if is_trained:
            response.append(tok)
        else:
            if response:
                turns.append((prompt, response))
                prompt, response = [], []
            prompt.append(tok)
    if prompt or response:
        turns.append((prompt, response))
    return turns


def encode(
    example: Example,
    template: ChatTemplate,
    tokenizer: Any,
    cutoff_len: int,
    train_on_prompt: bool = False,
    mask_history: bool = False,
) -> Encoded:
    """Tokenize one conversation with its label mask, truncated to `cutoff_len` tokens."""
    full, spans = assistant_spans(example, template)
    if mask_history:
        spans = spans[-1:]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    starts = np.array([start for start, _ in enc["offset_mapping"]], dtype=np.int64)
    trained = np.zeros(len(ids), dtype=bool)
    for begin, end in spans:
        trained |= (starts >= begin) & (starts < end)

    out_ids: list[int] = []
    out_labels: list[int] = []
    total = kept_response = 0
    truncated = response_cut = False
    for prompt, response in _turns(ids, trained.tolist()):
        budget = cutoff_len - total
        if budget <= 0:
            truncated = True
            response_cut = response_cut or bool(response)
            break
        keep_prompt, keep_response = infer_seqlen(len(prompt), len(response), budget)
        if keep_prompt < len(prompt) or keep_response < len(response):
            truncated = True
        if keep_response < len(response):
            response_cut = True
        prompt, response = _cut_middle(prompt, keep_prompt), response[:keep_response]
        out_ids += prompt + response
        out_labels += (prompt if train_on_prompt else [IGNORE_INDEX] * len(prompt)) + response
        total += len(prompt) + len(response)
        kept_response += len(response)

    return Encoded(
        input_ids=out_ids,
        labels=out_labels,
        prompt_tokens=total - kept_response,
        response_tokens=kept_response,
        original_tokens=len(ids),
        truncated=truncated,
        response_cut=response_cut,
    )


@dataclass
class EncodeSummary:
    """Counts for the data summary printed before training."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    response_cut: int = 0
    prompt_lengths: list[int] = field(default_factory=list)
    response_lengths: list[int] = field(default_factory=list)

    def add(self, item: Encoded) -> None:
        self.kept += 1
        self.truncated += item.truncated
        self.response_cut += item.response_cut
        self.prompt_lengths.append(item.prompt_tokens)
        self.response_lengths.append(item.response_tokens)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def tokens(self) -> int:
        return sum(self.prompt_lengths) + sum(self.response_lengths)

    def lines(self, name: str) -> list[str]:
        dropped = sum(self.dropped.values())
        why = ", ".join(f"{n} {reason}" for reason, n in self.dropped.items())
        return [
            f"{name}: {self.kept} samples kept, {dropped} dropped{f' ({why})' if why else ''}; {self.tokens:,} tokens",
            f"  prompt tokens   {percentile_line(self.prompt_lengths)}",
            f"  response tokens {percentile_line(self.response_lengths)}",
            f"  truncated to cutoff_len: {self.truncated} (answer shortened in {self.response_cut})",
        ]
