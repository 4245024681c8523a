"""Will the run fit? Parameter counts from a weightless model, an estimate of memory, disk for checkpoints.

The counts and the disk estimate live in model/footprint.py, where `instill train` checks the disk
too. The model is built on torch's `meta` device (shapes only, no memory) and the configured method
is applied to it, so trainable counts are exact for LoRA / DoRA / AdaLoRA / freeze / full. Memory is
an *estimate*, said so wherever it is printed:

- weights: frozen parameters in the stored dtype (bf16/fp16 for lora and freeze with bf16/fp16,
  fp32 otherwise, 0.5 byte for 4-bit, 1 byte for 8-bit);
- trainable parameters: fp32 weight + fp32 gradient + the optimizer's state, per optimizer
  (model/footprint.py `optimizer_state_bytes`: 8 bytes for Adam, GaLore / APOLLO on low-rank projections,
  BAdam one block at a time, Adam-mini about half of Adam, Muon momentum only on hidden matrices);
- a frozen reference copy where DPO / KTO / GRPO (beta > 0) / ASFT keep one (full or freeze fine-tuning;
  an adapter's reference is the base with it disabled). A distillation teacher is not counted;
- activations per token and layer ≈ (9·hidden + 4·intermediate) values kept for backward (one
  layer input only with gradient checkpointing), plus the logits, their fp32 copy, log-softmax
  and gradient;
- a fixed runtime (the Python process with its libraries and the memory-mapped checkpoint, or the
  CUDA context).
Batches are padded to their longest sample, so activations are counted at batch × the longest
sample (capped at cutoff_len). Checked once against a measured run on this project's 2-vCPU
machine: SmolLM2-135M, LoRA r=16 on all linear layers, fp32, batch 8 × 75 tokens: estimate
2.9 GiB, peak RSS 2.83 GiB.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instill.config import RunConfig
from instill.doctor.environment import Device
from instill.doctor.table import FAIL, PASS, WARN, Check
from instill.errors import InstillError
from instill.model.footprint import (
    GIB,
    ModelShape,
    checkpoint_bytes,
    existing_parent,
    model_shape,
    size,
    weight_bytes,
)

AREA = "environment"
_CPU_RUNTIME = 1.0 * GIB  # imports alone (torch, transformers, peft, datasets) ≈ 0.5 GiB RSS; + trainer, mmapped weights
_CUDA_RUNTIME = 0.5 * GIB  # CUDA context and allocator slack


@dataclass
class MemoryEstimate:
    weights: float
    trainable: float
    activations: float
    logits: float
    runtime: float
    batch: int
    tokens: int
    reference: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.activations + self.logits + self.runtime + self.reference

    def parts(self) -> str:
        ref = f" · frozen reference copy {size(self.reference)}" if self.reference else ""
        return (f"weights {size(self.weights)}{ref} · trainable + grads + optimizer {size(self.trainable)} · "
                f"activations {size(self.activations)} + logits {size(self.logits)} at {self.batch} × "
                f"{self.tokens} tokens · runtime {size(self.runtime)}")


def estimate_memory(shape: ModelShape, config: RunConfig, tokens: int, device: Device) -> MemoryEstimate:
    """Peak training memory, estimated (see the module docstring for the terms)."""
    t = config.train
    act_bytes = 2 if (t.bf16 or t.fp16) else 4
    frozen = shape.with_method - shape.trainable
    per_token_layer = (9 * shape.hidden + 4 * shape.intermediate) * act_bytes + 8 * shape.hidden
    n_tokens = t.per_device_train_batch_size * tokens
    if t.gradient_checkpointing:
        activations = n_tokens * (shape.layers * shape.hidden * act_bytes + per_token_layer)
    else:
        activations = n_tokens * shape.layers * per_token_layer
    return MemoryEstimate(
        weights=frozen * weight_bytes(config),
        trainable=shape.trainable * 4 + shape.with_gradient * 4 + shape.optimizer_state,
        reference=shape.reference,
        activations=float(activations),
        logits=float(n_tokens * shape.vocab * (act_bytes + 12)),
        runtime=_CUDA_RUNTIME if device.kind == "cuda" else _CPU_RUNTIME,
        batch=t.per_device_train_batch_size,
        tokens=tokens,
    )


def available_ram() -> int:
    """Bytes of RAM this process can still take: the system's available memory, or the cgroup's limit if lower."""
    import psutil

    free = psutil.virtual_memory().available
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


_FIT_FIX = ("lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch) "
            "or cutoff_len, set gradient_checkpointing: true, or use quantization_bit: 4 with lora")


def memory_check(estimate: MemoryEstimate, device: Device) -> Check:
    """The estimate against free VRAM (CUDA) or available RAM."""
    if device.kind == "cuda" and device.memory_free is not None:
        where, free = f"of free memory on {device.name}", device.memory_free
    else:
        where, free = "of available RAM", available_ram()
    detail = f"needs ≈ {size(estimate.total)} (estimate: {estimate.parts()}); {size(free)} {where}"
    if estimate.total > free:
        return Check(WARN, AREA, "memory", detail, _FIT_FIX)
    return Check(PASS, AREA, "memory", detail)


def total_steps(n_samples: int, config: RunConfig) -> int:
    """Optimizer steps of the run (as the Trainer counts them: a last partial accumulation is a step)."""
    t = config.train
    if t.max_steps > 0:
        return t.max_steps
    per_epoch = max(math.ceil(math.ceil(n_samples / t.per_device_train_batch_size) / t.gradient_accumulation_steps), 1)
    return math.ceil(per_epoch * t.num_train_epochs)


def disk_check(shape: ModelShape, config: RunConfig, steps: int, output_dir: Path) -> Check:
    """The disk the run writes (model/footprint.py, the same estimate `instill train` checks) against free space."""
    need, count = checkpoint_bytes(shape.base_params, shape.trainable, config, steps)
    where = existing_parent(output_dir)
    free = shutil.disk_usage(where).free
    detail = (f"the run writes ≈ {size(need)} (final weights + {count} checkpoint{'s' * (count != 1)}); "
              f"{size(free)} free at {where}")
    if need > free:
        return Check(FAIL, AREA, "disk", detail,
                     "free space there, point output_dir at a larger disk, or lower save_total_limit")
    return Check(PASS, AREA, "disk", detail)


def resource_checks(model_dir: Path, config: RunConfig, device: Device, tokens: int, n_train: int | None,
                    output_dir: Path) -> tuple[list[Check], Any]:
    """Memory and disk checks; also the memory estimate (None when the model could not be measured)."""
    steps = total_steps(n_train or 1, config)
    try:
        shape = model_shape(model_dir, config, steps)
    except InstillError as err:  # e.g. lora_target names no layer of this model
        return [Check(FAIL, "config", "method", str(err), "fix the key named above")], None
    except (ValueError, KeyError, AttributeError, NotImplementedError, RuntimeError, OSError) as err:
        # An architecture transformers cannot build on the meta device: say so rather than guess.
        return [Check(WARN, AREA, "memory", f"cannot estimate: building {model_dir.name} without weights failed "
                      f"({type(err).__name__}: {str(err).splitlines()[0][:160]})",
                      "check free memory by hand against the model's size")], None
    estimate = estimate_memory(shape, config, tokens, device)
    return [memory_check(estimate, device), disk_check(shape, config, steps, output_dir)], estimate
