"""Fine-tuning methods: one small function per method, one registry (`METHODS`).

Each method takes the loaded base model and the method section of the config and returns
the model to train, with exactly the parameters to train left requiring grad.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from instill.config import MethodArgs
from instill.errors import ConfigError, ModelError
from instill.hub import check_json
from instill.model.processor import PROJECTOR, freeze_vision, frozen_parts
from instill.model.vocab import embedding_modules


def linear_module_names(model: nn.Module) -> list[str]:
    """Leaf names of every linear layer except the output head; GPT-2 style Conv1D included."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if module is head or not isinstance(module, (nn.Linear, Conv1D)):
            continue
        names.add(name.split(".")[-1])
    names.discard("lm_head")
    names.discard("score")  # a reward model's value head is trained whole (peft's SEQ_CLS modules_to_save)
    return sorted(names)


def _uses_conv1d(model: nn.Module, targets: list[str]) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) and n.split(".")[-1] in targets for n, m in model.named_modules())


def _task_type(model: nn.Module) -> str:
    """peft's task: SEQ_CLS for a reward model (its `score` head is then saved whole), else CAUSAL_LM."""
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


def _lora_targets(model: nn.Module, args: MethodArgs, key: str = "lora_target") -> list[str]:
    """The modules named by `key` (lora_target, or oft_target): leaf names, or full names where some are excluded
    (a frozen vision tower, LLaMA Pro's original layers)."""
    targets = _named_targets(model, args, getattr(args, key), key)
    return _expanded_only(model, targets, args.freeze_trainable_layers) if args.use_llama_pro else targets


def _named_targets(model: nn.Module, args: MethodArgs, wanted: list[str], key: str) -> list[str]:
    available = linear_module_names(model)
    frozen = frozen_parts(model, args)
    if frozen:  # a vision-language model: full module names, none inside a frozen part
        return _unfrozen_targets(model, available if wanted == ["all"] else wanted, frozen, available)
    if wanted == ["all"]:
        return available
    missing = [t for t in wanted if t not in available]
    if missing:
        near = [n for t in missing for n in difflib.get_close_matches(t, available, n=2, cutoff=0.5)]
        shown = list(dict.fromkeys(near + available))[:5]
        more = f" and {len(available) - len(shown)} more" if len(available) > len(shown) else ""
        hint = f"did you mean {', '.join(near[:2])}? " if near else ""
        raise ConfigError(f"{key}: {', '.join(missing)} not found in the model ({hint}linear layers: "
                          f"{', '.join(shown)}{more}; or {key}: all)")
    return wanted


def llama_pro_layers(n_layers: int, n_expanded: int) -> range:
    """The blocks `instill export --expand-layers` added: the last of every n_layers / n_expanded (LLaMA-Factory's
    `use_llama_pro`)."""
    if n_layers % n_expanded:
        raise ConfigError(f"use_llama_pro: the model's {n_layers} layers are not divisible by freeze_trainable_layers "
                          f"({n_expanded}), the number of expanded blocks")
    stride = n_layers // n_expanded
    return range(stride - 1, n_layers, stride)


_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


def _expanded_only(model: nn.Module, targets: list[str], n_expanded: int) -> list[str]:
    """Full names of the target linear layers inside LLaMA Pro's expanded blocks."""
    ids = llama_pro_layers(_num_layers(model), n_expanded)
    head = model.get_output_embeddings()
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module is not head and (m := _LAYER.search(name))
            and int(m.group(1)) in ids and (name in targets or name.split(".")[-1] in targets)]


def _unfrozen_targets(model: nn.Module, leaves: list[str], frozen: tuple[str, ...], available: list[str]
                      ) -> list[str]:
    """Full names of the linear layers named by `leaves` outside the frozen parts (peft matches full names)."""
    head = model.get_output_embeddings()
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module is not head and name.split(".")[-1] in leaves
             and not any(part in name + "." for part in frozen)]
    if not names:
        raise ConfigError(f"lora_target: {', '.join(leaves)} matches no linear layer outside the frozen vision "
                          f"tower/projector/language model (linear layers: {', '.join(available[:8])}); set freeze_vision_tower: "
                          "false to put LoRA on the vision tower")
    return names


def check_adapters(paths: list[str] | None, subfolder: str | None = None) -> None:
    """Each adapter must be a folder (or its `subfolder`, adapter_folder) holding a peft adapter_config.json with a
    peft_type; else one line naming it."""
    for path in paths or []:
        folder = Path(path) / (subfolder or "")
        path = str(folder)
        if not folder.exists():
            raise ModelError(f"adapter '{path}' does not exist")
        if not folder.is_dir():
            raise ModelError(f"adapter '{path}' is a file; give the adapter's folder")
        config = folder / "adapter_config.json"
        if not config.is_file():
            raise ModelError(f"adapter '{path}' is not a peft adapter: no adapter_config.json in it")
        if not check_json(config).get("peft_type"):
            raise ModelError(f"adapter '{path}' is not a peft adapter: {config} has no peft_type")


def _load_adapters(model: nn.Module, adapter_paths: list[str], args: MethodArgs, subfolder: str | None = None
                   ) -> tuple[nn.Module, bool]:
    """LLaMA-Factory's adapter stacking: earlier adapters are merged into the base and the last one keeps training;
    with create_new_adapter every one is merged and a new adapter is made on top. Returns (model, resumed)."""
    from peft import PeftModel

    check_adapters(adapter_paths, subfolder)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    merged = adapter_paths if args.create_new_adapter else adapter_paths[:-1]
    if merged and getattr(model, "is_quantized", False):
        raise ConfigError("a 4/8-bit base takes one adapter, trained further: merging into quantized weights is lossy "
                          "(merge them with instill export first, or remove create_new_adapter)")
    for path in merged:
        model = PeftModel.from_pretrained(model, path, **kwargs).merge_and_unload()
    if args.create_new_adapter:
        return model, False
    return PeftModel.from_pretrained(model, adapter_paths[-1], is_trainable=True, **kwargs), True


def _tie(model: nn.Module, modules_to_save: list[str] | None) -> dict[str, bool]:
    """peft's ensure_weight_tying where the embeddings are tied and both are trained whole (new tokens): the
    trained copies stay one matrix, as the merged model's config says."""
    tied = getattr(model.config, "tie_word_embeddings", False) or getattr(
        getattr(model.config, "text_config", None), "tie_word_embeddings", False)
    both = len(embedding_modules(model)) == 2 and set(embedding_modules(model)) <= set(modules_to_save or [])
    return {"ensure_weight_tying": True} if tied and both else {}


def apply_lora(model: nn.Module, args: MethodArgs, adapter_paths: list[str] | None = None, total_steps: int = 0,
               subfolder: str | None = None) -> nn.Module:
    """LoRA, with DoRA (use_dora), rsLoRA (use_rslora) and PiSSA initialisation (pissa_init) as options."""
    from peft import LoraConfig, get_peft_model

    if adapter_paths:
        model, resumed = _load_adapters(model, adapter_paths, args, subfolder)
        if resumed:
            return model
    targets = _lora_targets(model, args)
    init: bool | str = True
    if args.pissa_init:
        init = "pissa" if args.pissa_iter == -1 else f"pissa_niter_{args.pissa_iter}"
    config = LoraConfig(
        task_type=_task_type(model),
        r=args.lora_rank,
        lora_alpha=args.lora_alpha or args.lora_rank * 2,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=args.additional_target,
        use_rslora=args.use_rslora,
        use_dora=args.use_dora,
        init_lora_weights=init,
        fan_in_fan_out=_uses_conv1d(model, targets),
        **_tie(model, args.additional_target),
    )
    return get_peft_model(model, config)


def apply_oft(model: nn.Module, args: MethodArgs, adapter_paths: list[str] | None = None, total_steps: int = 0,
               subfolder: str | None = None) -> nn.Module:
    """OFT: a trained block-diagonal orthogonal rotation of each target layer's input (peft's OFTConfig)."""
    from peft import OFTConfig, get_peft_model

    if adapter_paths:
        model, resumed = _load_adapters(model, adapter_paths, args, subfolder)
        if resumed:
            return model
    if _tie(model, args.additional_target):
        raise ConfigError("finetuning_type: oft cannot train tied embeddings whole (peft's OFT cannot keep them tied), "
                          "which new tokens need; use lora")
    config = OFTConfig(
        task_type=_task_type(model),
        r=args.oft_rank,
        oft_block_size=args.oft_block_size,
        module_dropout=args.module_dropout,
        target_modules=_lora_targets(model, args, "oft_target"),
        modules_to_save=args.additional_target,
    )
    return get_peft_model(model, config)


def apply_adalora(model: nn.Module, args: MethodArgs, adapter_paths: list[str] | None = None, total_steps: int = 0,
               subfolder: str | None = None) -> nn.Module:
    """AdaLoRA: ranks start at adalora_init_r and are pruned by importance during training.

    peft needs the total number of optimizer steps up front, and someone must call
    `update_and_allocate` after each optimizer step (`train.callbacks.AdaLoraCallback`).
    """
    from peft import AdaLoraConfig, get_peft_model

    if adapter_paths:
        model, resumed = _load_adapters(model, adapter_paths, args, subfolder)
        if resumed:
            return model
    if total_steps <= 0:
        raise ConfigError("adalora: the total number of training steps is unknown; set max_steps or num_train_epochs")
    tinit, tfinal = args.adalora_tinit, args.adalora_tfinal
    if tinit + tfinal >= total_steps:
        raise ConfigError(f"adalora: adalora_tinit ({tinit}) + adalora_tfinal ({tfinal}) must be below the "
                          f"{total_steps} training steps, or no budgeting phase is left")
    targets = _lora_targets(model, args)
    config = AdaLoraConfig(
        task_type=_task_type(model),
        init_r=args.adalora_init_r,
        target_r=args.adalora_target_r,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=args.adalora_delta_t,
        total_step=total_steps,
        orth_reg_weight=args.adalora_orth_reg_weight,
        lora_alpha=args.lora_alpha or args.adalora_init_r * 2,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=args.additional_target,
        fan_in_fan_out=_uses_conv1d(model, targets),
        **_tie(model, args.additional_target),
    )
    return get_peft_model(model, config)


def apply_full(model: nn.Module, args: MethodArgs, adapter_paths: list[str] | None = None, total_steps: int = 0,
               subfolder: str | None = None) -> nn.Module:
    if adapter_paths:
        raise ConfigError("adapter_name_or_path is set but finetuning_type is full; merge the adapter first (instill export)")
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def _num_layers(model: nn.Module) -> int:
    config = getattr(model.config, "text_config", None) or model.config  # a vision-language model: its LM's layers
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ConfigError("freeze: cannot tell how many layers this model has (no num_hidden_layers in its config)")


def apply_freeze(model: nn.Module, args: MethodArgs, adapter_paths: list[str] | None = None, total_steps: int = 0,
               subfolder: str | None = None) -> nn.Module:
    """Train only the last N layers (first N when negative), optionally only some of their modules."""
    if adapter_paths:
        raise ConfigError("adapter_name_or_path is set but finetuning_type is freeze; merge the adapter first")
    n_layers = _num_layers(model)
    n = args.freeze_trainable_layers
    if abs(n) > n_layers:
        raise ConfigError(f"freeze_trainable_layers: {n} but the model has {n_layers} layers")
    if args.use_llama_pro:
        layer_ids = llama_pro_layers(n_layers, n)
    else:
        layer_ids = range(n_layers - n, n_layers) if n > 0 else range(-n)
    modules = args.freeze_trainable_modules
    extra = args.freeze_extra_modules or []
    # a vision-language model's projector trains whole when unfrozen, as in LLaMA-Factory
    vision = getattr(model.config, "vision_config", None) is not None
    projector = PROJECTOR if vision and not args.freeze_multi_modal_projector else ()
    matched = 0
    for name, param in model.named_parameters():
        m = _LAYER.search(name)
        in_layer = bool(m) and int(m.group(1)) in layer_ids
        module_ok = modules == ["all"] or any(f".{mod}." in name for mod in modules)
        is_extra = any(name.startswith(e + ".") or f".{e}." in name for e in extra) or any(p in name for p in projector)
        trainable = (in_layer and module_ok) or is_extra
        param.requires_grad_(trainable)
        matched += trainable
    if not matched:
        raise ConfigError("freeze: no parameter matched freeze_trainable_layers / freeze_trainable_modules")
    return model


METHODS: dict[str, Callable[..., nn.Module]] = {
    "lora": apply_lora,
    "adalora": apply_adalora,
    "oft": apply_oft,
    "full": apply_full,
    "freeze": apply_freeze,
}


def apply_method(model: nn.Module, args: MethodArgs, adapter_paths: list[str] | None = None, total_steps: int = 0,
                 subfolder: str | None = None, upcast: bool = True) -> nn.Module:
    """Apply `args.finetuning_type`; `total_steps` is the number of optimizer steps (AdaLoRA needs it);
    `subfolder`: adapter_folder; `upcast`: false keeps trained weights in the base's dtype (pure_bf16)."""
    if args.freeze_language_model and getattr(model.config, "vision_config", None) is None:
        raise ConfigError("freeze_language_model: true is for vision-language models; this model is all language model")
    model = METHODS[args.finetuning_type](model, args, adapter_paths, total_steps, subfolder)
    if args.finetuning_type in ("full", "freeze"):
        freeze_vision(model, args)
    # Trainable weights live in fp32 even when the frozen base is bf16/fp16: optimizer updates
    # of ~1e-5 vanish in bf16's 8-bit mantissa. Not with BAdam: it keeps fp32 copies of the block it
    # trains (its memory saving), as in LLaMA-Factory; nor with pure_bf16, which asks for bf16 throughout.
    if args.use_badam or not upcast:
        return model
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32 and param.is_floating_point():
            param.data = param.data.float()
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


def describe_parameters(model: nn.Module) -> str:
    trainable, total = count_parameters(model)
    memory = model.get_memory_footprint() / 2**20 if hasattr(model, "get_memory_footprint") else float("nan")
    return (f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / max(total, 1):.4f}"
            f" || weights in memory: {memory:,.0f} MiB")
