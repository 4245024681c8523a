"""Continuous batching: requests join the running batch at every decode step and leave as they finish.

`RunningBatch` holds the rows decoding together and one KV cache (transformers' `DynamicCache` whose layers
are `GrowingLayer`s, which append a step in place; rows left-padded to a common length, an attention mask
marking the padding). Each step of
`ContinuousBatcher`'s worker:

1. admit: queued rows, up to the free slots, are prefilled as a left-padded batch of their own; their
   first token is picked and their cache is merged into the running one (the shorter side is left-padded
   with masked zeros, then the batch dimensions are concatenated);
2. decode: one forward of every running row's last token (per-row positions, per-row adapter);
3. retire: rows that finished (stop token, stop string, budget) or whose client left are dropped from
   the cache, and columns that only padding still uses are cut off.

Tokens are picked as `rows.generate_rows` picks them (greedy argmax, or `RowSampler` with the row's
own temperature, top_p and seeded generator), and each row streams, stops and counts through `Row.push`,
so an answer is the same as from the one-at-a-time server. A prefill that fails is retried row by row,
so only the failing request fails; a row whose own handling fails is retired alone; a failed decode
step fails the rows in it.

Why not transformers' continuous batching (`generate_batch`, `init_continuous_batching`, paged
attention)? With transformers 5.23 on this CPU it returned the same greedy tokens, but one
`generate_batch` call took 48-73 s for two 8-token answers of the 2-layer test model (`generate`: 0.6 s);
and it runs one adapter per manager, without per-request seeded sampling, where the server mixes
adapters in one batch (peft's `adapter_names`). Models whose cache is not plain full attention (sliding window, hybrid, recurrent)
and vision-language models (M-RoPE positions) are served with static batches (`continuous_reason`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from instill.infer.engine import pad_batch
from instill.infer.serve.batching import BaseBatcher
from instill.infer.serve.rows import Row, RowSampler, repetition_penalties

log = logging.getLogger("instill.serve")


def continuous_reason(model: Any, media: Any = None) -> str | None:
    """Why `model` cannot be batched continuously here, or None when it can."""
    if media is not None:
        return "a vision-language model's image positions need static batches"
    layers = DynamicCache(config=model.config).layers
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return "its KV cache is not plain full attention (sliding window, hybrid or recurrent layers)"
    return None


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views of a buffer with room to grow.

    `DynamicLayer.update` concatenates the new position onto the whole cache, copying every cached key
    and value of the batch at each decode step: 19% of a 12-row step of SmolLM2-135M on a CPU (torch
    profiler). Here the new position is written into spare room (the buffer doubles when full), so a
    step copies nothing. Whatever replaces `keys`/`values` from outside (a merge, a row or column cut)
    is taken over into a new buffer at the next update: one copy per event, not per step.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        views = self._views
        ours = views is not None and self.keys is views[0] and self.values is views[1]
        length = self.keys.shape[-2] if self.keys.numel() else 0
        needed = length + key_states.shape[-2]
        if not ours or needed > self._buffers[0].shape[-2]:  # a cut or merge replaced the views, or no room left
            room = max(2 * needed, 64)
            buffers = []
            for old, new in ((self.keys, key_states), (self.values, value_states)):
                buffer = new.new_empty((*new.shape[:-2], room, new.shape[-1]))
                if length:
                    buffer[..., :length, :] = old
                buffers.append(buffer)
            self._buffers = (buffers[0], buffers[1])
        keys, values = self._buffers
        keys[..., length:needed, :] = key_states
        values[..., length:needed, :] = value_states
        self.keys, self.values = keys[..., :needed, :], values[..., :needed, :]
        self._views = (self.keys, self.values)
        return self.keys, self.values


def _growing_cache(config: Any) -> DynamicCache:
    """A DynamicCache for `config` (plain full attention: `continuous_reason` is None) of GrowingLayers."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` padded with zeros on the left of `dim` (-1 or -2) to `width`."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    return F.pad(t, (missing, 0) if dim == -1 else (0, 0, missing, 0))


class RunningBatch:
    """The rows decoding together and their cache; see the module doc."""

    def __init__(self, model: Any, pad_id: int, adapter_names: bool = False) -> None:
        self.model, self.pad_id, self.adapter_names = model, pad_id, adapter_names
        self._reset()

    def _reset(self) -> None:
        self.rows: list[Row] = []
        self.started: list[float] = []  # when each row was admitted
        self.cache: DynamicCache | None = None
        self.mask = self.last = self.positions = None  # [B, L] attention mask; [B] last tokens; [B] next positions

    def __len__(self) -> int:
        return len(self.rows)

    def _forward(self, rows: Sequence[Row], **inputs: Any) -> torch.Tensor:
        """float32 logits of the last position of each row (as generate takes them)."""
        if self.adapter_names:
            inputs["adapter_names"] = [row.adapter or "__base__" for row in rows]
        device = self.model.device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].to(dtype=torch.float32)

    def _pick(self, rows: Sequence[Row], logits: torch.Tensor) -> list[int]:
        # each row's repetition penalty; sampled rows keep only their drawn token; greedy rows are untouched
        RowSampler(rows, penalties=repetition_penalties(self.model, rows))(None, logits)
        return logits.argmax(-1).tolist()

    @torch.inference_mode()
    def admit(self, rows: Sequence[Row]) -> list[Row]:
        """Prefill `rows`, take their first tokens and add them to the batch; the rows that finished at once.

        On an exception it propagates, and the running rows and their cache are untouched.
        """
        rows = list(rows)
        ids, mask = pad_batch([row.prompt for row in rows], self.pad_id, "left")
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate
        cache = _growing_cache(self.model.config)
        logits = self._forward(rows, input_ids=ids, attention_mask=mask, position_ids=positions,
                               past_key_values=cache)
        tokens = self._pick(rows, logits)
        mask = mask.to(self.model.device)
        now = time.perf_counter()
        if self.cache is None:
            self.cache, self.mask = cache, mask
            self.last = torch.tensor(tokens, device=mask.device)
            self.positions = mask.sum(-1)
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            for old, new in zip(self.cache.layers, cache.layers):
                old.keys = torch.cat([_left_pad(old.keys, width, -2), _left_pad(new.keys, width, -2)])
                old.values = torch.cat([_left_pad(old.values, width, -2), _left_pad(new.values, width, -2)])
            self.mask = torch.cat([_left_pad(self.mask, width, -1), _left_pad(mask, width, -1)])
            self.last = torch.cat([self.last, torch.tensor(tokens, device=mask.device)])
            self.positions = torch.cat([self.positions, mask.sum(-1)])
        self.rows += rows
        self.started += [now] * len(rows)
        return self._push(tokens, offset=len(self.rows) - len(rows))

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """One decode step of every running row; the rows that finished (already retired)."""
        cancelled = self._retire()  # clients that left since the last step cost no compute
        if not self.rows:
            return cancelled
        mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        try:
            logits = self._forward(self.rows, input_ids=self.last[:, None], attention_mask=mask,
                                   position_ids=self.positions[:, None], past_key_values=self.cache)
            tokens = self._pick(self.rows, logits)
        except Exception as err:
            for row in self.rows:
                row.fail(f"generation failed: {type(err).__name__}: {err}")
            self._retire()
            raise
        self.mask, self.positions = mask, self.positions + 1
        self.last = torch.tensor(tokens, device=mask.device)
        return cancelled + self._push(tokens)

    def _push(self, tokens: Sequence[int], offset: int = 0) -> list[Row]:
        """Hand rows[offset:] their tokens; retire the finished ones and return them."""
        for row, token in zip(self.rows[offset:], tokens):
            try:
                row.push(token)
            except Exception as err:  # this row's own decoding or stop handling; the others go on
                log.exception("a row failed")
                row.fail(f"generation failed: {type(err).__name__}: {err}")
        return self._retire()

    def _retire(self) -> list[Row]:
        """Drop finished and cancelled rows from the batch and the cache; the rows dropped."""
        for row in self.rows:
            if row.cancelled and not row.done:
                row.finish_reason = "cancelled"  # as Row.push does: nothing more is sent
        keep = [i for i, row in enumerate(self.rows) if not row.done]
        gone = [row for row in self.rows if row.done]
        if not gone:
            return []
        if not keep:
            self._reset()
            return gone
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.last, self.positions = self.mask[index], self.last[index], self.positions[index]
        self.rows = [self.rows[i] for i in keep]
        self.started = [self.started[i] for i in keep]
        first = int(self.mask.any(0).nonzero()[0])  # columns left of this are padding in every row
        if first:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]
        return gone


class ContinuousBatcher(BaseBatcher):
    """Runs queued rows with continuous batching on one worker thread; see the module doc."""

    kind = "continuous"

    def __init__(self, model: Any, pad_id: int, adapter_names: bool = False, max_batch: int = 8,
                 max_queue: int = 64, window_s: float = 0.01) -> None:
        self.batch = RunningBatch(model, pad_id, adapter_names)
        super().__init__(max_batch, max_queue, window_s)

    def _admit(self, rows: list[Row]) -> list[Row]:
        """Admit `rows`; if their prefill fails, admit them one by one, so only a failing request fails."""
        try:
            return self.batch.admit(rows)
        except Exception as err:
            if len(rows) > 1:
                return [row for one in rows for row in self._admit([one])]
            self.stats.failed_batches += 1
            log.exception("prefill failed for a request")
            rows[0].fail(f"generation failed: {type(err).__name__}: {err}")
            return rows

    def _loop(self) -> None:
        batch = self.batch
        while True:
            free = self.max_batch - len(batch)
            new = self._take(free, wait=not batch.rows) if free > 0 else []
            if new is None:
                return
            start = time.perf_counter()
            ended: list[Row] = []
            if new:
                with self._lock:
                    self._running = batch.rows + new
                    self.stats.batches += 1
                    self.stats.batch_sizes[len(batch) + len(new)] += 1
                ended += self._admit(new)
            started = dict(zip(map(id, batch.rows), batch.started))
            stepping = list(batch.rows)
            if stepping:
                try:
                    ended += batch.step()
                except Exception:  # every row in the step has its error event; the batch is empty now
                    self.stats.failed_batches += 1
                    log.exception("a decode step failed for %d request(s)", len(stepping))
                    ended += [row for row in stepping if row.done and row not in ended]
            now = time.perf_counter()
            with self._lock:
                self._running = list(batch.rows)
                self.stats.busy_s += now - start
                if stepping:
                    self.stats.steps += 1
                    self.stats.row_steps += len(stepping)
                for row in ended:
                    self._finished([row], now - started.get(id(row), start))
            for row in ended:
                log.info("answer of %d tokens (%s) in %.2f s; %d running, %d waiting", row.tokens, row.finish_reason,
                         now - started.get(id(row), start), len(batch), len(self._pending))
