"""The SFT losses LLaMA-Factory 0.9.5 offers besides cross-entropy: DFT, EAFT and ASFT (`use_*_loss`).

Each is computed on the labelled positions only (train/trainer.py asks the model for logits there):
`logits` is (N, vocab) and `labels` (N,), one row per labelled position, so they keep the speed of the
labelled-only cross-entropy. `denominator` is what the token sum is divided by: the accumulated batch's
labelled-token count (`num_items_in_batch`) when the Trainer gives one, else N (a mean).

- DFT (Wu et al., "On the Generalization of SFT"): each token's cross-entropy times its own probability,
  detached: -p(y) log p(y), LLaMA-Factory's `_dft_cross_entropy`.
- EAFT: each token's cross-entropy times (H / 3) ** alpha, H the entropy of the top-20 logits renormalised,
  detached: LLaMA-Factory's `_eaft_cross_entropy`.
- ASFT: DFT plus alpha x KL(reference || model) summed over the vocabulary, averaged over labelled tokens:
  LLaMA-Factory's `_asft_cross_entropy` (its reference is ref_model, or the base; with LoRA the base is the
  model with its adapter disabled). LLaMA-Factory averages both terms per micro-batch; here they are divided
  by the same `denominator` as the others, which is that mean when the batch is not accumulated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

EAFT_TOP_K = 20  # LLaMA-Factory's: the entropy is taken over the 20 largest logits
EAFT_SCALE = 3.0  # and divided by 3 before the power


def _token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, reduction="none")


def dft_loss(logits: torch.Tensor, labels: torch.Tensor, denominator: torch.Tensor | float) -> torch.Tensor:
    """sum over tokens of CE x p(label) (p detached), / denominator."""
    ce = _token_ce(logits, labels)
    return (ce * torch.exp(-ce).detach()).sum() / denominator


def eaft_loss(logits: torch.Tensor, labels: torch.Tensor, denominator: torch.Tensor | float,
              alpha: float = 1.0) -> torch.Tensor:
    """sum over tokens of CE x (top-20 entropy / 3) ** alpha (detached), / denominator."""
    ce = _token_ce(logits, labels)
    with torch.no_grad():
        top = torch.topk(logits.detach().float(), k=min(EAFT_TOP_K, logits.shape[-1]), dim=-1).values
        log_p = top - torch.logsumexp(top, dim=-1, keepdim=True)
        entropy = -(log_p.exp() * log_p).sum(-1)
        weight = torch.pow(entropy / EAFT_SCALE, alpha)
    return (ce * weight).sum() / denominator


def reference_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) at each position, summed over the vocabulary (torch's kl_div(log p, q))."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    q = F.softmax(ref_logits.float(), dim=-1)
    return F.kl_div(log_p, q, reduction="none").sum(-1)


def asft_loss(logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor,
              denominator: torch.Tensor | float, alpha: float = 0.1) -> torch.Tensor:
    """DFT + alpha x KL(reference || model), both summed over tokens and divided by denominator."""
    return dft_loss(logits, labels, denominator) + alpha * reference_kl(logits, ref_logits).sum() / denominator


@dataclass(frozen=True)
class SftLoss:
    """The configured loss: `compute(logits, labels, ref_logits, denominator)`; `reference`: needs ref logits."""

    name: str
    compute: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | float], torch.Tensor]
    reference: bool = False


def sft_loss(use_dft: bool, use_eaft: bool, eaft_alpha: float, use_asft: bool, asft_alpha: float) -> SftLoss | None:
    """The loss the method section asks for (config.py allows one), or None for plain cross-entropy."""
    if use_dft:
        return SftLoss("dft", lambda lg, lb, _ref, d: dft_loss(lg, lb, d))
    if use_eaft:
        return SftLoss("eaft", lambda lg, lb, _ref, d: eaft_loss(lg, lb, d, eaft_alpha))
    if use_asft:
        return SftLoss("asft", lambda lg, lb, ref, d: asft_loss(lg, lb, ref, d, asft_alpha), reference=True)
    return None
