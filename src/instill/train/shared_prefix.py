"""Shared prefix (`share_prefix`): the part every row of a batch begins with runs once.

Rows that begin alike (a classification set's system prompt and instruction) share that prefix's
work: the longest unlabelled prefix common to every row of a batch runs once, its key/value cache is
repeated for each row, and the rest of the rows runs on it. Causal attention makes this the same
computation, and gradients reach the prefix's adapters through the cache. It is off where it would
not be exact or not apply: active dropout (one mask for all rows), activation checkpointing (no
cache), DeepSpeed / FSDP (the prefix pass runs outside their forward), packed rows, images,
sliding-window attention, router losses, and any cache other than plain full-attention keys and
values. train/trainer.py asks `PrefixSharing` for the inputs of each batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer

PLAIN_KEYS = {"input_ids", "attention_mask", "labels"}  # batches with more (positions, images) run in one pass


def base_forward(model: nn.Module) -> Any:
    """The forward of the model under PEFT / DDP / compile wrappers."""
    inner = model
    for attr in ("module", "_orig_mod"):
        inner = getattr(inner, attr, inner)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner.forward


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, keep: torch.Tensor) -> int:
    """How many leading tokens every row of the batch has in common, none of them scored (keep: the
    shifted-label mask: position t scores token t + 1); at least one position is left to each row."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(0) & ~keep.any(0)
    if attention_mask is not None:
        same &= (attention_mask == 1).all(0)
    return min(int(same.long().cumprod(0).sum()), input_ids.shape[1] - 1)


def can_share_prefix(model: nn.Module) -> bool:
    """Whether a prefix pass plus a cached pass computes exactly what one pass does for this model."""
    params = inspect.signature(base_forward(model)).parameters
    config = getattr(model, "config", None)
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return ("past_key_values" in params and config is not None and not sliding
            and not hasattr(config, "vision_config") and not getattr(config, "output_router_logits", False))


def plain_attention_cache(cache: Any, length: int) -> bool:
    """A cache holding the `length` prefix tokens as full-attention keys and values only, which repeating
    per row repeats exactly (not none, not a sliding-window, recurrent-state or remote-code cache)."""
    return (type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers)
            and cache.get_seq_length() == length)


def checkpointed(model: nn.Module) -> bool:
    """Whether activation checkpointing is on in any layer (checkpointed layers drop the cache)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def has_dropout(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return (any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
            or bool(getattr(config, "attention_dropout", 0)))


class PrefixSharing:
    """One trainer's prefix sharing: whether it is on, and each batch's inputs after its prefix ran once."""

    min_length = 16  # tokens; a shorter common prefix is not worth a second forward call

    def __init__(self, model: nn.Module, *, wanted: bool, gradient_checkpointing: bool, processes: str) -> None:
        """model: unwrapped; processes: accelerate's distributed type (one process or plain DDP can share)."""
        self.on = (wanted and can_share_prefix(model) and not gradient_checkpointing and not checkpointed(model)
                   and (processes == "NO" or processes.startswith("MULTI_")))
        self.dropout = has_dropout(model)

    def applies(self, training: bool, inputs: Mapping[str, Any]) -> bool:
        return self.on and (not training or not self.dropout) and inputs.keys() <= PLAIN_KEYS

    def after_prefix(self, inner: nn.Module, fast: dict[str, Any], keep: torch.Tensor) -> tuple[dict[str, Any], int]:
        """The inputs for the rows' remainders after the batch's common prefix has run once into a cache, and the
        tokens that saved; `fast` and 0 where no prefix ran. inner: the unwrapped model (not a second DDP forward)."""
        ids = fast["input_ids"]
        length = shared_prefix_length(ids, fast.get("attention_mask"), keep)
        if length < self.min_length:
            return fast, 0
        cache = inner(input_ids=ids[:1, :length], use_cache=True, logits_to_keep=1).past_key_values
        if not plain_attention_cache(cache, length):
            self.on = False  # the model's caches will not change: stop trying
            return fast, 0
        cache.batch_repeat_interleave(ids.shape[0])
        remainders = {**fast, "input_ids": ids[:, length:], "past_key_values": cache, "use_cache": True,
                      "logits_to_keep": keep[:, length:]}
        return remainders, length * (ids.shape[0] - 1)
