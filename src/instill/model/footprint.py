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
from typing import TYPE_CHECKING

from instill.config import RunConfig
from instill.errors import ConfigError
from instill.stage_facts import STAGE_FACTS

if TYPE_CHECKING:
    from torch import nn

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
    optimizer_state: float = 0.0  # bytes of the configured optimizer's state (optimizer_state_bytes)
    with_gradient: int = 0  # trainable parameters that hold a gradient at once (BAdam: one block)
    reference: float = 0.0  # bytes of a frozen second copy of the model (DPO/KTO/GRPO/ASFT with full or freeze)


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
        state, with_gradient = optimizer_state_bytes(model, config)
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd")
    return ModelShape(
        base_params=base, trainable=trainable, with_method=total, hidden=hidden,
        intermediate=getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden,
        layers=getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer"),
        vocab=text.vocab_size, optimizer_state=state, with_gradient=with_gradient,
        reference=base * weight_bytes(config) if keeps_reference(config) else 0.0,
    )


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's, AdamW's) trainable parameters: Muon takes the 2-D weights of the hidden layers; the input
    embeddings, the output head (a reward model's score too), norms and biases go to AdamW."""
    edges = {id(layer.weight) for layer in (model.get_input_embeddings(), model.get_output_embeddings())
             if layer is not None}
    hidden, rest = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        edge = id(param) in edges or any(part in name for part in ("embed", "lm_head", "score"))
        (hidden if param.ndim == 2 and not edge else rest).append(param)
    return hidden, rest


def _low_rank_state(model: nn.Module, targets: list[str], rank: int) -> float:
    """GaLore / APOLLO: Adam's two moments on each targeted (m, n) weight's rank-r projection (r x max(m, n))
    plus its projector (r x min(m, n)); plain Adam on every other trainable parameter."""
    from torch import nn

    from instill.model.adapters import linear_module_names

    names = linear_module_names(model) if targets == ["all"] else targets
    projected, state = set(), 0.0
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if (isinstance(module, nn.Linear) and weight is not None and weight.requires_grad
                and any(t in module_name for t in names)):
            m, n = weight.shape
            state += 4 * (2 * min(rank, m, n) * max(m, n) + min(rank, m, n) * min(m, n))
            projected.add(id(weight))
    rest = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in projected)
    return state + 8.0 * rest


def _layer_blocks(model: nn.Module) -> list[int]:
    """Trainable parameters of each numbered layer: BAdam's blocks (with no block list, badam trains only those;
    the embeddings and the head stay frozen, in both its layer and ratio modes)."""
    blocks: dict[str, int] = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if param.requires_grad and index is not None:
            key = ".".join(parts[:index + 1])
            blocks[key] = blocks.get(key, 0) + param.numel()
    return list(blocks.values())


def optimizer_state_bytes(model: nn.Module, config: RunConfig) -> tuple[float, int]:
    """(bytes of optimizer state, trainable parameters holding a gradient at once) for the configured optimizer,
    estimated from the trainable parameters' shapes as each optimizer's paper and package keep them."""
    m = config.method
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if m.use_galore:
        return _low_rank_state(model, m.galore_target, m.galore_rank), trainable
    if m.use_apollo:
        return _low_rank_state(model, m.apollo_target, m.apollo_rank), trainable
    if m.use_badam:
        blocks = _layer_blocks(model)
        if m.badam_mode == "ratio":  # update_ratio of every layer's weights, their states kept sparse
            active = math.ceil(sum(blocks) * m.badam_update_ratio)
        else:  # one layer at a time
            active = max(blocks, default=0)
        return 8.0 * active, active
    if m.use_adam_mini:  # one second moment per block: about the first moment's bytes
        return 4.0 * trainable, trainable
    if m.use_muon:  # momentum only on the hidden matrices, AdamW on the rest
        hidden, rest = muon_split(model)
        return 4.0 * sum(p.numel() for p in hidden) + 8.0 * sum(p.numel() for p in rest), trainable
    return trainable * optimizer_bytes(config.train.optim), trainable


def keeps_reference(config: RunConfig) -> bool:
    """Whether the run holds a frozen second copy of the model: a reference for DPO / KTO, GRPO with beta > 0 or
    ASFT, with full or freeze fine-tuning (with an adapter the reference is the base with it disabled)."""
    m = config.method
    if m.finetuning_type not in ("full", "freeze"):
        return False
    own = STAGE_FACTS[m.stage].own_keys
    return (("pref_loss" in own and m.pref_loss not in ("orpo", "simpo")) or "kto_chosen_weight" in own
            or ("reward_funcs" in own and (m.beta or 0) > 0) or ("use_asft_loss" in own and m.use_asft_loss))


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
