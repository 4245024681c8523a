"""Batching: token rows -> padded tensors. Owns padding so packing and padding-free batches have one home.

Pads to the longest row of the batch (never to cutoff_len: padding every row to the cutoff cost
3-4x on CPU, STACK.md), rounded up to `pad_to_multiple_of` where that helps the kernels (8 on
CUDA for tensor cores). Padding sits on the right, carries label -100 and attention 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from instill.data.tokenize import IGNORE_INDEX


@dataclass
class PadCollator:
    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.as_tensor(f["labels"], dtype=torch.long)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class PackCollator:
    """`packing` / `neat_packing`: the batch's rows packed into as few rows of `capacity` tokens as fit.

    Each packed sequence keeps its own `position_ids` (restarting at 0) and sees only itself through
    a 4-D float block-diagonal causal mask (0 = attend, dtype min = blocked), which is exact under
    SDPA and eager attention (|Δ| ~1e-7 against unpacked rows); a 4-D bool mask is wrong under eager
    attention and "position_ids without a mask" leaks across sequences. The 4-D mask travels as
    `packed_attention_mask` (the Trainer subclass hands it to the model) so `attention_mask` stays
    the 2-D padding mask that token counting reads. The first token of each sequence carries no label
    (unpacked, nothing predicts it either). Written by hand: transformers' DataCollatorWithFlattening
    relies on flash-attention varlen, which CPUs lack.
    """

    pad_id: int
    capacity: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows: list[list[dict[str, Any]]] = []
        room: list[int] = []
        for f in sorted(features, key=lambda f: -len(f["input_ids"])):  # first-fit decreasing
            n = len(f["input_ids"])
            slot = next((i for i, r in enumerate(room) if r >= n), None)
            if slot is None:
                rows.append([])
                room.append(max(self.capacity, n))
                slot = len(rows) - 1
            rows[slot].append(f)
            room[slot] -= n
        width = max(sum(len(f["input_ids"]) for f in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        blocked = torch.finfo(torch.float32).min
        packed = torch.full((len(rows), 1, width, width), blocked)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        for i, row in enumerate(rows):
            start = 0
            for f in row:
                n = len(f["input_ids"])
                end = start + n
                ids[i, start:end] = torch.as_tensor(f["input_ids"], dtype=torch.long)
                labels[i, start + 1:end] = torch.as_tensor(f["labels"][1:], dtype=torch.long)
                mask[i, start:end] = 1
                positions[i, start:end] = torch.arange(n)
                packed[i, 0, start:end, start:end].masked_fill_(causal[:n, :n], 0.0)
                start = end
            packed[i, 0, range(start, width), range(start, width)] = 0.0  # padding sees itself: no empty rows
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": positions,
                "packed_attention_mask": packed}


def padding_ratio(lengths: list[int], batch_size: int, grouped: bool, seed: int = 0,
                  group_size: int | None = None) -> float:
    """Padded tokens / all tokens when `lengths` are batched `batch_size` at a time, padding to the longest,
    in the order the Trainer's sampler takes them: random, or grouped by length (transformers groups
    `group_size` = batch x accumulation rows at a time)."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    if not lengths:
        return 0.0
    g = torch.Generator().manual_seed(seed)
    order = (get_length_grouped_indices(lengths, group_size or batch_size, generator=g) if grouped
             else torch.randperm(len(lengths), generator=g).tolist())
    padded = 0
    for i in range(0, len(order), batch_size):
        batch = [lengths[j] for j in order[i:i + batch_size]]
        padded += max(batch) * len(batch)
    return 1.0 - sum(lengths) / padded
