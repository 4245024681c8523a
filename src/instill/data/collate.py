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
