"""LoRA dropout on a CPU without torch's serial mask: the dropout and `lora_A` as one autograd function.

peft computes `lora_B(lora_A(dropout(x)))`. On a CPU torch draws a dropout mask one element at a time from
its Mersenne Twister (about 6.7 ns an element here, on one thread however many there are), and autograd keeps
the dropped copy of `x` (4 bytes an element) and the mask (1 more) for the backward pass. With LoRA on
every linear layer that was 43% of SmolLM2-135M's forward and backward (bench/README.md). `FusedDropoutA`:

- draws the mask from 64-bit words of the same generator, three 16-bit draws a word (about 1.4 ns an
  element), so a dropout probability is taken to the nearest 1/65536 (0.05 -> 0.0500031) and the kept
  values are scaled by the exact inverse of the kept probability: the expectation is unchanged;
- keeps `x` itself (autograd keeps it anyway) and a 1-byte mask, and scales the rank-r side, not `x`.

Only peft's vanilla LoRA `Linear` layers change (not DoRA or other variants, not embeddings or
convolutions), and only in training: evaluation and merging do not see it. The state dict is unchanged.
Masks come from torch's default CPU generator, so a seed repeats a run, and activation checkpointing
(which restores that generator before it recomputes) draws the same masks again. GPUs keep torch's
dropout, which draws masks in parallel.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import nn

_LEVELS = 1 << 16  # one draw: 16 bits


def dropped_fraction(p: float) -> float:
    """The dropout probability a mask of 16-bit draws gives for p: p to the nearest 1/65536."""
    return round(p * _LEVELS) / _LEVELS


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A bool mask, True with probability 1 - dropped_fraction(p), from torch's default CPU generator.

    `random_()` on int64 gives the low 63 bits of one 64-bit draw; its three low 16-bit quarters are uniform
    and independent, so one word serves three elements."""
    n = math.prod(shape)
    words = torch.empty((n + 2) // 3, dtype=torch.int64).random_()
    quarters = slice(0, 3) if sys.byteorder == "little" else slice(1, 4)  # the top quarter has 15 random bits
    threshold = -(_LEVELS // 2) + round(p * _LEVELS)  # int16 draws are uniform on [-32768, 32767]
    return (words.view(torch.int16).view(-1, 4)[:, quarters] >= threshold).view(-1)[:n].view(shape)


class FusedDropoutA(torch.autograd.Function):
    """(dropout(x) @ weight.T): the mask drawn by `keep_mask`, 1 / kept probability applied to the output."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p)
        scale = 1.0 / (1.0 - dropped_fraction(p))
        ctx.save_for_backward(x, weight, keep)
        ctx.scale = scale
        return nn.functional.linear(torch.where(keep, x, 0.0), weight) * scale

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight, keep = ctx.saved_tensors
        grad = grad * ctx.scale  # rank-r wide: cheaper to scale than x
        kept = keep.to(grad.dtype)  # once: a float mask multiplies 2.5x faster than a bool one
        grad_x = (grad @ weight.to(grad.dtype)) * kept if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1, grad.shape[-1])
            grad_w = (flat.t() @ (x.to(grad.dtype) * kept).reshape(-1, x.shape[-1])).to(weight.dtype)
        return grad_x, grad_w, None


class DroppedInputLinear(nn.Linear):
    """peft's `lora_A` with the adapter's dropout inside (`p`); a plain linear layer outside training."""

    p: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            return FusedDropoutA.apply(x, self.weight, self.p)
        return super().forward(x)


def fuse_lora_dropout(model: nn.Module) -> int:
    """Move the dropout of every vanilla peft LoRA `Linear` layer into its `lora_A`; return how many moved."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    moved = 0
    for module in model.modules():
        if not isinstance(module, LoraLinear):
            continue
        for name, dropout in list(module.lora_dropout.items()):
            lora_a = module.lora_A[name]
            if (name in getattr(module, "lora_variant", {}) or type(dropout) is not nn.Dropout or dropout.p <= 0
                    or type(lora_a) is not nn.Linear):
                continue
            lora_a.__class__ = DroppedInputLinear
            lora_a.p = dropout.p
            module.lora_dropout[name] = nn.Identity()
            moved += 1
    return moved


def lora_dropout_p(module: nn.Module) -> float:
    """The dropout probability a module applies in training (nn.Dropout or a fused lora_A), else 0."""
    if isinstance(module, DroppedInputLinear):
        return module.p
    return module.p if isinstance(module, nn.Dropout) else 0.0
