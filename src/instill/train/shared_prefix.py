"""Shared prefix (`share_prefix`): the part every row of a batch begins with runs once.

Rows that begin alike (a classification set's system prompt and instruction) share that prefix's
work: the longest unlabelled prefix common to every row of a batch runs once (one row) into a key/value
cache, and the rest of the rows runs on it, each row reading the one prefix (`PrefixLayer`). Causal
attention makes this the same computation, and gradients reach the prefix's adapters through the cache.

Under activation checkpointing the prefix pass runs with checkpointing off (its activations are one
row's, shared anyway) and the rows' pass through the checkpointed layers, which read the prefix cache
(it stores nothing, so a layer's recompute reads what its forward read) with torch's non-reentrant
checkpoint (a reentrant one would not send gradients into the prefix it read): the same loss and
gradients. Active dropout gives every row the prefix's one dropout mask, which differs from per-row
masks (measured within seed noise: bench/bench_prefix_dropout.py); `share_prefix_with_dropout: false` turns
sharing off under dropout.

It is off where it would not be exact or not apply: DeepSpeed / FSDP (the prefix pass runs outside their
forward), packed rows, images, sliding-window attention, router losses, a checkpointing function other
than torch's, and any cache other than plain full-attention keys and values. train/trainer.py asks
`PrefixSharing` for the inputs of each batch and runs the rows' pass inside `PrefixSharing.rows_pass`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from instill.model.lora_dropout import lora_dropout_p

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


class PrefixLayer(DynamicLayer):
    """One layer's prefix keys and values (one row) that every row reads and none extends: `update` returns them
    ahead of the rows' own and stores nothing, so a checkpointed layer's recompute reads what its forward read."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        rows = key_states.shape[0]
        return (torch.cat([self.keys.expand(rows, *self.keys.shape[1:]), key_states], -2),
                torch.cat([self.values.expand(rows, *self.values.shape[1:]), value_states], -2))


def torch_checkpointing(func: Any) -> bool:
    """Whether a layer's checkpointing function is torch's checkpoint, to which use_reentrant=False can be given
    (as transformers' activation_checkpointing_enable builds it: a partial of it, or of its offloading wrapper)."""
    return func is checkpoint or (isinstance(func, partial) and (func.func is checkpoint
                                                                 or "use_reentrant" in func.keywords))


@contextmanager
def _set(changes: list[tuple[nn.Module, str, Any]]) -> Iterator[None]:
    """Set instance attributes for the duration, then restore them (or remove those the instance did not have)."""
    saved = [(m, name, m.__dict__.get(name, _set)) for m, name, _ in changes]
    try:
        for m, name, value in changes:
            setattr(m, name, value)
        yield
    finally:
        for m, name, old in reversed(saved):
            if old is _set:
                delattr(m, name)
            else:
                setattr(m, name, old)


def checkpointed(model: nn.Module) -> list[nn.Module]:
    """The modules whose activation checkpointing is on (transformers sets their `gradient_checkpointing`)."""
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]


def has_dropout(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return (any(lora_dropout_p(m) > 0 for m in model.modules())
            or bool(getattr(config, "attention_dropout", 0)))


class PrefixSharing:
    """One trainer's prefix sharing: whether it is on, and each batch's inputs after its prefix ran once."""

    min_length = 16  # tokens; a shorter common prefix is not worth a second forward call

    def __init__(self, model: nn.Module, *, wanted: bool, with_dropout: bool = True, processes: str) -> None:
        """model: unwrapped; with_dropout: share under active dropout too (one mask for every row's prefix);
        processes: accelerate's distributed type (one process or plain DDP can share)."""
        self.on = (wanted and can_share_prefix(model) and (processes == "NO" or processes.startswith("MULTI_")))
        self.dropout = has_dropout(model) and not with_dropout

    def applies(self, training: bool, inputs: Mapping[str, Any]) -> bool:
        return self.on and (not training or not self.dropout) and inputs.keys() <= PLAIN_KEYS

    def after_prefix(self, inner: nn.Module, fast: dict[str, Any], keep: torch.Tensor) -> tuple[dict[str, Any], int]:
        """The inputs for the rows' remainders after the batch's common prefix has run once into a cache, and the
        tokens that saved; `fast` and 0 where no prefix ran. inner: the unwrapped model (not a second DDP forward).
        The remainders' forward must run inside `rows_pass`."""
        ids = fast["input_ids"]
        length = shared_prefix_length(ids, fast.get("attention_mask"), keep)
        if length < self.min_length:
            return fast, 0
        layers = [m for m in checkpointed(inner) if isinstance(m, GradientCheckpointingLayer)]
        if not all(torch_checkpointing(getattr(m, "_gradient_checkpointing_func", None)) for m in layers):
            return fast, 0  # another checkpointing function (DeepSpeed's): use_reentrant=False cannot be asked of it
        with _set([(m, "gradient_checkpointing", False) for m in checkpointed(inner)]):  # checkpointing drops caches
            cache = inner(input_ids=ids[:1, :length], use_cache=True, logits_to_keep=1).past_key_values
        if not plain_attention_cache(cache, length):
            self.on = False  # the model's caches will not change: stop trying
            return fast, 0
        prefix = Cache(layers=[PrefixLayer(layer.keys, layer.values) for layer in cache.layers])
        remainders = {**fast, "input_ids": ids[:, length:], "past_key_values": prefix, "use_cache": True,
                      "logits_to_keep": keep[:, length:]}
        return remainders, length * (ids.shape[0] - 1)

    @contextmanager
    def rows_pass(self, inner: nn.Module, spared: int) -> Iterator[None]:
        """Where the rows' remainders run (spared > 0): checkpointed layers keep the prefix cache and checkpoint
        non-reentrantly (gradients then reach the prefix through the cache); other modules' own checkpointing
        flags are off for the pass (transformers' models read them only to drop the cache)."""
        modules = checkpointed(inner) if spared else []
        changes = []
        for m in modules:
            if isinstance(m, GradientCheckpointingLayer):
                changes += [(m, "_can_checkpoint_with_cache", True),
                            (m, "_gradient_checkpointing_func", partial(m._gradient_checkpointing_func,
                                                                        use_reentrant=False))]
            else:
                changes.append((m, "gradient_checkpointing", False))
        with _set(changes):
            yield
