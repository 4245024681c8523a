"""What a run weighs: parameter counts from a weightless model, bytes of stored weights and optimizer
state, and the disk a run's output_dir needs (final weights + kept checkpoints).

Shared by `instill doctor` (which estimates before anything loads) and `instill train` (which checks free
disk before training starts, with the counts of the model it loaded). Estimates, said so where printed.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from instill.config import RunConfig
from instill.errors import ConfigError

GIB = 2**30


@dataclass
class ModelShape:
    base_params: int
    trainable: int
    with_method: int  # base + what the method adds (LoRA A/B, DoRA magnitudes)
    hidden: int
    intermediate: int
    layers: int
    vocab: int


def model_shape(model_dir: Path, config: RunConfig, total_steps: int) -> ModelShape:
    """Counts of the base and of what the configured method trains, without loading any weight."""
    import torch
    from transformers import AutoConfig

    from instill.model.adapters import apply_method, count_parameters
    from instill.model.processor import auto_model_class

    trust = config.model.trust_remote_code
    model_config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust)
    text = model_config.get_text_config()
    with torch.device("meta"):
        model = auto_model_class(model_dir).from_config(model_config, trust_remote_code=trust)
        _, base = count_parameters(model)
        # PiSSA changes how adapters start, not their size; an SVD of meta tensors is not possible.
        method = config.method.model_copy(update={"pissa_init": False})
        model = apply_method(model, method, None, max(total_steps, 1))
        trainable, total = count_parameters(model)
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd")
    return ModelShape(
        base_params=base, trainable=trainable, with_method=total, hidden=hidden,
        intermediate=getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden,
        layers=getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer"),
        vocab=text.vocab_size,
    )


def size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB" if n_bytes >= 0.95 * GIB else f"{n_bytes / 2**20:.0f} MiB"


def weight_bytes(config: RunConfig) -> float:
    """Bytes per frozen parameter as stored."""
    if config.model.quantization_bit == 4:
        return 0.5 + 0.06  # nf4 plus (double-quantised) scales
    if config.model.quantization_bit == 8:
        return 1.0
    if config.method.finetuning_type == "full":
        return 4.0
    return 2.0 if (config.train.bf16 or config.train.fp16) else 4.0


def optimizer_bytes(optim: str) -> float:
    """Optimizer state per trainable parameter."""
    name = optim.lower()
    if "8bit" in name:
        return 2.0
    if name.startswith(("sgd", "adafactor")):
        return 0.0
    if "lion" in name:
        return 4.0
    return 8.0  # Adam family: two fp32 moments


def checkpoint_bytes(base_params: int, trainable: int, config: RunConfig, steps: int,
                     kept: int = 0) -> tuple[float, int]:
    """Bytes the run writes to output_dir (final weights + the checkpoints it adds) and how many checkpoints.

    `steps`: optimizer steps still to run; `kept`: checkpoints already there (a resumed run), which
    count toward save_total_limit. base_params is not used for lora / adalora / oft (only the adapter is saved).
    """
    t, method = config.train, config.method.finetuning_type
    if method in ("lora", "adalora", "oft"):
        saved = trainable * 4.0  # adapters are saved in fp32
    elif method == "full":
        saved = base_params * 4.0
    else:  # freeze saves the whole model: frozen part in the stored dtype, trained layers in fp32
        saved = (base_params - trainable) * weight_bytes(config) + trainable * 4.0
    per_checkpoint = saved + trainable * optimizer_bytes(t.optim)
    if t.save_strategy == "no":
        count = 0
    elif t.save_strategy == "epoch":
        count = math.ceil(t.num_train_epochs)
    else:
        count = math.ceil(steps / t.save_steps)  # the Trainer also saves at the last step
    if t.save_total_limit:
        count = max(min(count + kept, t.save_total_limit) - kept, 0)
    return saved + count * per_checkpoint, count


def existing_parent(path: Path) -> Path:
    """`path`, or its nearest parent that exists (where a not-yet-created output_dir will live)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_disk(output_dir: str | Path, need: float, count: int) -> None:
    """Raise ConfigError in one line when output_dir's disk has less free space than `need` bytes."""
    where = existing_parent(Path(output_dir))
    free = shutil.disk_usage(where).free
    if need > free:
        raise ConfigError(
            f"output_dir {output_dir}: the run writes ≈ {size(need)} (final weights + {count} "
            f"checkpoint{'s' * (count != 1)}) but only {size(free)} is free at {where}; free space there, point "
            "output_dir at a larger disk, or lower save_total_limit")
