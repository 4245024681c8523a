"""Batched generation that streams every row on its own: sampling, stops, token budget, cancel.

transformers' `generate` runs the batch (left padding, KV cache, position ids). Two of its hooks do the
per-row work it has no option for, which is why they are written here:

- `RowSampler` (a LogitsProcessor): generate samples a whole batch with one temperature/top_p and the
  global RNG, so a request's seeded output would depend on who shared its batch. Here each row first gets
  its own repetition penalty (transformers' formula), then each sampled row draws its token with its own
  temperature, top_k, top_p and seeded `torch.Generator`, then leaves only that token, which generate's
  greedy pick takes. Greedy rows are otherwise untouched.
- `RowStops` (a StoppingCriteria): after every step it hands each live row its new token. The row decodes
  it incrementally, checks its own stop tokens (each served model has its template's end-of-turn), stop
  strings, token budget and cancel flag, and sends finished text to its callback. generate's own eos
  handling is switched off (`eos_token_id=None`) so one row's stop token never ends another's turn.

A row's tokens are the same in a batch of 1 or of N: padding is masked and nothing is shared across rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria

from instill.data.multimodal import ImageInputs, image_batch
from instill.infer.engine import pad_batch

# Events a row sends: ("text", str), then exactly one of ("end", finish_reason) or ("error", message).
Emit = Callable[[str, Any], None]


class IncrementalDecoder:
    """Text of a growing token list, delta by delta (the offsets method of TGI and vLLM).

    Decoding only a window of recent tokens keeps each step O(1) and keeps the space a SentencePiece
    tokenizer puts before a word; a delta that ends in an incomplete UTF-8 character waits for more tokens.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer, self.ids, self.skip = tokenizer, [], skip_special_tokens
        self.prefix, self.read = 0, 0
        self._before = ""  # the text of ids[prefix:read]

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        after = self.tokenizer.decode(self.ids[self.prefix:], skip_special_tokens=self.skip)
        if len(after) > len(self._before) and not after.endswith("\ufffd"):
            delta = after[len(self._before):]
            self.prefix, self.read = self.read, len(self.ids)
            self._before = self.tokenizer.decode(self.ids[self.prefix:self.read], skip_special_tokens=self.skip)
            return delta
        return ""


def partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that begins some stop string (text to hold back)."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


@dataclass(eq=False)
class Row:
    """One request in a batch: its prompt, how to decode and stop, and where its text goes."""

    prompt: list[int]
    tokenizer: Any
    stop_ids: frozenset[int]
    max_new_tokens: int
    emit: Emit
    adapter: str | None = None  # peft adapter name; None = the base weights
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None  # with temperature > 0; None or 0: no top-k cut
    repetition_penalty: float | None = None  # None: the model's generation_config value (1.0: none)
    skip_special_tokens: bool = True
    seed: int | None = None
    stop: tuple[str, ...] = ()
    images: tuple[str, ...] = ()  # image paths or data URLs, one per image block in `prompt`
    tokens: int = 0  # generated so far, the stop token included
    generated: list[int] = field(default_factory=list, repr=False)  # those tokens (the repetition penalty's)
    finish_reason: str | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self._decoder = IncrementalDecoder(self.tokenizer, self.skip_special_tokens)
        self._text, self._sent = "", 0
        self.rng: torch.Generator | None = None
        if self.temperature > 0:
            self.rng = torch.Generator()
            self.rng.manual_seed(self.seed) if self.seed is not None else self.rng.seed()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop at the next step (thread-safe); nothing more is emitted."""
        self._cancel.set()

    def push(self, token_id: int) -> bool:
        """Take one generated token; True once the row is finished."""
        if self.done:
            return True
        if self.cancelled:
            self.finish_reason = "cancelled"
            return True
        self.tokens += 1
        self.generated.append(token_id)
        if token_id in self.stop_ids:
            return self.finish("stop")
        self._text += self._decoder.push(token_id)
        if self.stop:
            start = max(0, self._sent - max(map(len, self.stop)) + 1)
            hits = [i for i in (self._text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self._send(min(hits))
                return self.finish("stop")
        self._send(len(self._text) - partial_stop(self._text, self.stop))
        if self.tokens >= self.max_new_tokens:
            return self.finish("length")
        return False

    def finish(self, reason: str) -> bool:
        if reason == "length":
            self._send(len(self._text))  # a held-back partial stop string is text after all
        self.finish_reason = reason
        self.emit("end", reason)
        return True

    def fail(self, message: str) -> None:
        if not self.done:
            self.finish_reason = "error"
            self.emit("error", message)

    def _send(self, upto: int) -> None:
        if upto > self._sent:
            self.emit("text", self._text[self._sent:upto])
            self._sent = upto


class RowSampler(LogitsProcessor):
    """Applies each row's repetition penalty, and samples each row with temperature > 0 from its own settings and
    generator; see the module doc. `width`: the padded prompt length of the batch; `penalties`: each row's
    repetition penalty, resolved. Called with `input_ids` None (the continuous batcher), a row's prompt and
    answer so far come from the row itself."""

    def __init__(self, rows: Sequence[Row], width: int = 0, penalties: Sequence[float] = ()) -> None:
        self.rows, self.width, self.penalties = rows, width, list(penalties) or [1.0] * len(rows)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for i, row in enumerate(self.rows):
            penalty = self.penalties[i]
            if penalty != 1.0 and not row.done:  # the row's prompt and answer so far, its left padding left out
                seen = (input_ids[i, self.width - len(row.prompt):] if input_ids is not None
                        else torch.tensor(row.prompt + row.generated, device=scores.device))
                score = scores[i, seen]
                scores[i, seen] = torch.where(score < 0, score * penalty, score / penalty)
            if row.rng is None or row.done:
                continue
            logits = scores[i].float() / row.temperature
            if row.top_k and row.top_k < logits.numel():
                logits[logits < torch.topk(logits, row.top_k).values[-1]] = -float("inf")
            if row.top_p < 1.0:
                sorted_logits, order = torch.sort(logits, descending=True)
                probs = sorted_logits.softmax(-1)
                drop = probs.cumsum(-1) - probs >= row.top_p  # keeps the smallest set reaching top_p (>= 1 token)
                logits[order[drop]] = -float("inf")
            # drawn on the CPU with the row's CPU generator: the same token for a seed on any device
            token = int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=row.rng))
            scores[i] = -float("inf")
            scores[i, token] = 0.0
        return scores


def repetition_penalties(model: Any, rows: Sequence[Row]) -> list[float]:
    """Each row's repetition penalty: its own, else the model's generation_config value (1.0: none)."""
    own = getattr(getattr(model, "generation_config", None), "repetition_penalty", None) or 1.0
    return [own if row.repetition_penalty is None else row.repetition_penalty for row in rows]


class RowStops(StoppingCriteria):
    """Feeds each row its new token and reports which rows are finished; see the module doc."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        return torch.tensor([row.push(token) for row, token in zip(self.rows, last)], dtype=torch.bool,
                            device=input_ids.device)


@torch.inference_mode()
def generate_rows(model: Any, rows: Sequence[Row], pad_id: int, adapter_names: bool = False,
                  media: ImageInputs | None = None) -> None:
    """Run `rows` as one left-padded batch; each row's events go to its callback.

    `adapter_names`: the model is a PeftModel holding several adapters; each row runs with its own
    (peft's mixed-adapter batches), the base weights for `adapter=None`. On an exception every
    unfinished row gets an "error" event and the exception propagates.
    """
    try:
        ids, mask = pad_batch([row.prompt for row in rows], pad_id, "left")
        kwargs: dict[str, Any] = {}
        if adapter_names:
            kwargs["adapter_names"] = [row.adapter or "__base__" for row in rows]
        if media is not None:  # a vision-language model: its image inputs (and M-RoPE types) for the batch
            extra = image_batch(media, ids, [image for row in rows for image in row.images])
            kwargs.update({k: v.to(model.device) for k, v in extra.items()})
        penalties = repetition_penalties(model, rows)
        per_row = any(row.rng is not None for row in rows) or any(p != 1.0 for p in penalties)
        model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
            max_new_tokens=max(row.max_new_tokens for row in rows), do_sample=False,
            temperature=None, top_p=None, top_k=None, repetition_penalty=1.0,  # per row, in RowSampler
            logits_processor=[RowSampler(rows, ids.shape[1], penalties)] if per_row else None,
            stopping_criteria=[RowStops(rows)],
            eos_token_id=None, pad_token_id=pad_id, **kwargs,
        )
    except Exception as err:
        for row in rows:
            row.fail(f"generation failed: {type(err).__name__}: {err}")
        raise
    for row in rows:  # generate can end before a row's own budget only through RowStops; be sure anyway
        if not row.done:
            row.finish("length")
