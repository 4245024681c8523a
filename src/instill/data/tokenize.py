"""Example -> input_ids + labels: label masks from prefix rendering, truncation that keeps the answer.

Masks. The conversation is rendered once in full. For each assistant message i we also
render messages[:i] with the generation prompt and messages[:i+1] without: the text
between the two is what the assistant says, *including* the end-of-turn token the
template writes after it, so the model learns to stop. A template whose prefixes do not
line up is reported, not guessed around. Each prompt run and each answer of the rendered text is
tokenized on its own (no token straddles the start or end of an answer, as in LLaMA-Factory and trl);
characters map to tokens through the fast tokenizer's offsets.

Truncation. Tokens are grouped into turns (prompt run, response run). Each turn gets
what is left of `cutoff_len`, split between prompt and response as LLaMA-Factory does
(`infer_seqlen`): the prompt is cut first and the response only when it alone exceeds
its share (at least half the budget). Unlike LLaMA-Factory we cut the prompt *in the middle*, so the head (system,
instruction) and the tail (the candidate labels after a long text, and the template's
"assistant" header) survive. The seeds' `input_ids[:MAX_LENGTH]` silently cut the label
off long news; here a sample left with no trained token is dropped and counted.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instill.config import DataArgs
from instill.console import percentile_line
from instill.data.example import Example
from instill.data.templates import ChatTemplate
from instill.errors import DataError, TemplateError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodeOptions:
    """The data config's keys that decide ids and labels, taken by every encoder (conversations, images,
    plain text, preference pairs, KTO rows); the tokenizer travels in the template."""

    cutoff_len: int
    train_on_prompt: bool = False
    mask_history: bool = False  # labels on the last assistant turn only
    allow_special_tokens: bool = False  # allow_special_tokens_in_data: text spelling a control token becomes it

    @classmethod
    def from_args(cls, args: DataArgs) -> EncodeOptions:
        return cls(args.cutoff_len, args.train_on_prompt, args.mask_history, args.allow_special_tokens_in_data)


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
    """The full text and the [start, end) character span of every assistant turn in it.

    A conversation that ends with an assistant turn is its own last prefix, so it is rendered once less.
    """
    messages, tools = example.messages, example.tools
    pairs = [(i, template.render(messages[:i], tools, add_generation_prompt=True), template.render(messages[: i + 1], tools))
             for i, msg in enumerate(messages) if msg["role"] == "assistant"]
    ends_with_answer = bool(pairs) and pairs[-1][0] == len(messages) - 1
    full = pairs[-1][2] if ends_with_answer else template.render(messages, tools)
    for i, prompt, upto in pairs:
        if not upto.startswith(prompt) or not full.startswith(upto):
            raise TemplateError(
                f"{example.source}: template '{template.name}' is not prefix-stable at message {i} "
                "(rendering a shorter conversation is not a prefix of the longer one); "
                "choose a named template that is (e.g. template: qwen)"
            )
    return full, [(len(prompt), len(upto)) for _, prompt, upto in pairs]


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


def cut_middle(ids: list[int], keep: int) -> list[int]:
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


@contextlib.contextmanager
def _control_tokens(tokenizer: Any, as_text: bool) -> Iterator[Any]:
    """The Rust tokenizer, reading special-token text as text (or not) for the duration.

    The flag is state on the shared backend: transformers' `split_special_tokens=True` sets it and leaves
    it set until its next call, so direct backend calls must set it themselves.
    """
    backend = tokenizer.backend_tokenizer
    before = backend.encode_special_tokens
    backend.encode_special_tokens = as_text
    try:
        yield backend
    finally:
        backend.encode_special_tokens = before


def _special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's control tokens (added tokens flagged special), longest first."""
    found = {tok.content for tok in getattr(tokenizer, "added_tokens_decoder", {}).values() if tok.special}
    return tuple(sorted(found, key=len, reverse=True))


@functools.lru_cache(maxsize=8)
def _pattern(specials: tuple[str, ...]) -> re.Pattern | None:
    return re.compile("|".join(map(re.escape, specials))) if specials else None


def _data_ranges(full: str, example: Example, pattern: re.Pattern) -> list[tuple[int, int]]:
    """[start, end) of each message content in the rendered text that spells a special token."""
    ranges, pos = [], 0
    for i, msg in enumerate(example.messages):
        content = msg.get("content")
        if not isinstance(content, str) or not content:
            continue
        at = full.find(content, pos)
        spells = pattern.search(content) is not None
        if at < 0:
            if spells:
                raise DataError(f"{example.source}: message {i} contains the special token "
                                f"'{pattern.search(content).group()}' and the template changes the message text, "
                                "so it cannot be kept as plain text; remove it, or set allow_special_tokens_in_data: true")
            continue
        if spells:
            ranges.append((at, at + len(content)))
        pos = at + len(content)
    return ranges


def tokenize_rendered(full: str, example: Example, tokenizer: Any, allow_special_tokens: bool = False
                      ) -> tuple[list[int], np.ndarray]:
    """Token ids of a rendered conversation and each token's start character.

    The template's own markup becomes control tokens; text inside a message that merely spells
    one (a scraped page quoting `<|im_end|>`) is split into ordinary tokens, so data can never
    end a turn or fake a role by accident. Whole-text tokenization is kept (identical ids when no
    message spells a special token); only the offending tokens are re-tokenized as text.
    """
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    return _escape_data_tokens(full, example, tokenizer, enc["input_ids"], enc["offset_mapping"],
                               allow_special_tokens)


def _escape_data_tokens(full: str, example: Example, tokenizer: Any, ids: list[int], offsets: list,
                        allow_special_tokens: bool) -> tuple[list[int], np.ndarray]:
    starts = [start for start, _ in offsets]
    pattern = None if allow_special_tokens else _pattern(_special_tokens(tokenizer))
    spelled = pattern is not None and any(isinstance(m.get("content"), str) and pattern.search(m["content"])
                                          for m in example.messages)
    ranges = _data_ranges(full, example, pattern) if spelled else []
    if ranges:
        out_ids, out_starts = [], []
        for tok, (start, end) in zip(ids, offsets):
            inside = any(lo <= start and end <= hi for lo, hi in ranges)
            if inside and pattern.fullmatch(full[start:end]):
                with _control_tokens(tokenizer, as_text=True) as backend:
                    pieces = backend.encode(full[start:end], add_special_tokens=False).ids
                out_ids += pieces
                out_starts += [start] * len(pieces)
            else:
                out_ids.append(tok)
                out_starts.append(start)
        ids, starts = out_ids, out_starts
    return ids, np.asarray(starts, dtype=np.int64)


def encode(example: Example, template: ChatTemplate, options: EncodeOptions) -> Encoded:
    """Tokenize one conversation with its label mask, truncated to `options.cutoff_len` tokens.

    Text in a message that spells a special token (`<|im_end|>` typed by a user) stays text
    unless `options.allow_special_tokens`; see `tokenize_rendered`.
    """
    return encode_batch([example], template, options)[0]


def encode_batch(examples: list[Example], template: ChatTemplate, options: EncodeOptions) -> list[Encoded]:
    """`encode` for many conversations: rendered one by one, tokenized in one call."""
    tokenizer = template.tokenizer
    rendered = [assistant_spans(example, template) for example in examples]
    # Each prompt run and each answer is tokenized on its own (as LLaMA-Factory and trl do): no token straddles
    # the boundary where an answer starts, so training sees the prompt's tokens exactly as generation does
    # (whole-text BPE merges `:` + `The` into `:The` after "Assistant:", a token the prompt never ends with).
    pieces = [_pieces(len(full), spans) for full, spans in rendered]
    # The Rust tokenizer directly (what the fast tokenizer's __call__ runs, without converting every
    # encoding to Python dicts first): tokenizing is most of the time spent here.
    with _control_tokens(tokenizer, as_text=False) as backend:
        encodings = iter(backend.encode_batch([full[a:b] for (full, _), cuts in zip(rendered, pieces)
                                               for a, b in cuts], add_special_tokens=False))
    out = []
    for example, (full, spans), cuts in zip(examples, rendered, pieces):
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for a, _ in cuts:
            enc = next(encodings)
            ids += enc.ids
            offsets += [(a + s, a + e) for s, e in enc.offsets]
        ids, starts = _escape_data_tokens(full, example, tokenizer, ids, offsets, options.allow_special_tokens)
        out.append(_mask_and_truncate(ids, starts, spans, options))
    return out


def _pieces(length: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) of the prompt runs and answers that make up a rendered text of `length` characters."""
    bounds = sorted({0, length, *(x for span in spans for x in span)})
    return list(zip(bounds, bounds[1:]))


def _mask_and_truncate(ids: list[int], starts: np.ndarray, spans: list[tuple[int, int]], options: EncodeOptions
                       ) -> Encoded:
    """Labels on the tokens that start inside `spans` (the last one under `mask_history`), then truncation."""
    cutoff_len, train_on_prompt = options.cutoff_len, options.train_on_prompt
    trained = np.zeros(len(ids), dtype=bool)
    for begin, end in spans[-1:] if options.mask_history else spans:
        trained |= (starts >= begin) & (starts < end)
    if len(ids) <= cutoff_len:  # nothing to cut: the turn-by-turn walk below would keep everything
        n_trained = int(trained.sum())
        labels = list(ids) if train_on_prompt else np.where(trained, ids, IGNORE_INDEX).tolist()
        return Encoded(list(ids), labels, len(ids) - n_trained, n_trained, len(ids), False, False)

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
        prompt, response = cut_middle(prompt, keep_prompt), response[:keep_response]
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
