"""Optimizers beyond transformers' `optim`: GaLore, APOLLO, BAdam, Adam-mini, Muon and LoRA+.

A config chooses at most one (`config_rules.chosen_optimizer`; which methods each allows is checked in
config.py's rules, as LLaMA-Factory allows them). Each has one small function here that builds it from
the model and the run's TrainingArguments, through the library that owns it:

- GaLore / APOLLO: transformers' own `galore_*` / `apollo_*` optim values (its layer-wise variants too),
  with `optim_target_modules` and `optim_args` filled from the galore_* / apollo_* keys;
- BAdam: the badam package's BlockOptimizer (layer) or BlockOptimizerRatio (ratio) around `optim`;
- Adam-mini: the adam-mini package;
- Muon: torch.optim.Muon on the 2-D hidden weights, AdamW on the embeddings, head, norms and biases;
- LoRA+: peft's create_loraplus_optimizer around `optim`.

The Trainer builds it where it builds its own, in `create_optimizer` (the public seam transformers
documents for this): `with_chosen_optimizer` gives a stage's Trainer class the `ChosenOptimizer` mixin.
The packages are optional extras (`pip install 'instill[galore]'`); `check_optimizer` names the missing one
before anything loads.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from instill.config import MethodArgs, RunConfig
from instill.config_rules import chosen_optimizer
from instill.console import say
from instill.errors import ConfigError
from instill.model.adapters import linear_module_names
from instill.model.footprint import muon_split
from instill.model.load import native_bf16
from instill.ranks import world_size


def _low_rank(trainer: Any, model: nn.Module, optim: str, targets: list[str], options: dict[str, Any]) -> Any:
    """transformers' optimizer for a galore_* / apollo_* optim value, as its Trainer builds it."""
    from transformers.training_args import OptimizerNames

    available = linear_module_names(model)
    names = available if targets == ["all"] else targets
    linear = [n for n, module in model.named_modules() if isinstance(module, nn.Linear)]
    missing = [t for t in names if not any(t in n for n in linear)]  # transformers' rule: a part of the name
    if missing:
        raise ConfigError(f"{optim.split('_')[0]}_target: {', '.join(missing)} not found in the model (linear "
                          f"layers: {', '.join(available)}; or all)")
    low = copy.copy(trainer.args)  # the run's arguments with the low-rank optimizer's own values
    low.optim = OptimizerNames(optim)
    low.optim_target_modules = names
    low.optim_args = ",".join(f"{key}={value}" for key, value in options.items())
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(low, model)
    params = kwargs.pop("params")
    return cls(kwargs.pop("optimizer_dict", params), **kwargs)


def _inner_groups(optimizer: Any) -> list[dict[str, Any]]:
    """Parameter groups of an optimizer, or of each per-parameter optimizer of a layer-wise one."""
    inner = getattr(optimizer, "optimizer_dict", None)
    return [group for opt in (inner.values() if inner else [optimizer]) for group in opt.param_groups]


def galore(trainer: Any, model: nn.Module, m: MethodArgs) -> Any:
    args = trainer.args
    base = {"adamw_torch": "galore_adamw", "adafactor": "galore_adafactor"}.get(args.optim, "galore_adamw_8bit")
    optimizer = _low_rank(trainer, model, base + ("_layerwise" if m.galore_layerwise else ""), m.galore_target, {
        "rank": m.galore_rank, "update_proj_gap": m.galore_update_interval, "scale": m.galore_scale,
        "proj_type": m.galore_proj_type})
    for group in _inner_groups(optimizer):  # transformers passes GaLore no betas / eps (its defaults: eps 1e-6)
        if "betas" in group:
            group.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    return optimizer


def apollo(trainer: Any, model: nn.Module, m: MethodArgs) -> Any:
    optim = "apollo_adamw" + ("_layerwise" if m.apollo_layerwise else "")
    return _low_rank(trainer, model, optim, m.apollo_target, {
        "rank": m.apollo_rank, "proj": m.apollo_proj, "scale_type": m.apollo_scale_type,
        "update_proj_gap": m.apollo_update_interval, "scale": m.apollo_scale, "proj_type": m.apollo_proj_type})


def _decay_groups(trainer: Any, model: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters in the Trainer's two groups: weight decay, and none (norms, biases)."""
    decay, args = set(trainer.get_decay_parameter_names(model)), trainer.args
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            {"params": [p for n, p in named if n in decay], "weight_decay": args.weight_decay}]


def _adam_kwargs(args: Any) -> dict[str, Any]:
    return {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}


def badam(trainer: Any, model: nn.Module, m: MethodArgs) -> Any:
    from badam import BlockOptimizer, BlockOptimizerRatio

    named, args = list(model.named_parameters()), trainer.args
    with warnings.catch_warnings():  # "BAdam expect model to be loaded in fp16/bf16": fp32 training is ours to pick
        warnings.filterwarnings("ignore", message="BAdam expect")
        if m.badam_mode == "ratio":
            # It freezes the embeddings and the lm_head parameter; a head tied to the embeddings has none of its
            # own (include_lm_head=True: nothing more to freeze).
            tied = not any("lm_head" in n for n, _ in named)
            return BlockOptimizerRatio(param_groups=_decay_groups(trainer, model), named_parameters_list=named,
                                       update_ratio=m.badam_update_ratio, mask_mode=m.badam_mask_mode,
                                       verbose=m.badam_verbose, include_embedding=False, include_lm_head=tied,
                                       **_adam_kwargs(args))
        cls, kwargs = trainer.get_optimizer_cls_and_kwargs(args)
        return BlockOptimizer(base_optimizer=cls(_decay_groups(trainer, model), **kwargs), named_parameters_list=named,
                              block_prefix_list=None, switch_block_every=m.badam_switch_interval,
                              start_block=m.badam_start_block, switch_mode=m.badam_switch_mode,
                              verbose=m.badam_verbose)


def _badam_trainer(trainer: Any, m: MethodArgs) -> None:
    """What badam asks of a Trainer: its callback, and (ratio mode: sparse gradients) its gradient clipping."""
    from types import MethodType

    from badam import BAdamCallback, clip_grad_norm_old_version

    if m.badam_mode == "ratio":
        trainer.accelerator.clip_grad_norm_ = MethodType(clip_grad_norm_old_version, trainer.accelerator)
    trainer.add_callback(BAdamCallback)


def adam_mini(trainer: Any, model: nn.Module, m: MethodArgs) -> Any:
    from adam_mini import Adam_mini

    config, args = model.config, trainer.args
    return Adam_mini(named_parameters=[(n, p) for n, p in model.named_parameters() if p.requires_grad],
                     lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                     weight_decay=args.weight_decay, model_sharding=world_size() > 1,
                     dim=getattr(config, "hidden_size", None), n_heads=getattr(config, "num_attention_heads", None),
                     n_kv_heads=getattr(config, "num_key_value_heads", None), verbose=False)


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the 2-D hidden weights and torch.optim.AdamW on the rest, stepped as one optimizer.

    Both share this optimizer's parameter groups (the schedule sets their learning rates); Muon's update is
    scaled to AdamW's RMS (`adjust_lr_fn="match_rms_adamw"`, Moonshot's rule, LLaMA-Factory's too), so one
    learning rate serves both."""

    def __init__(self, muon_params: list[nn.Parameter], adamw_params: list[nn.Parameter], *, lr: float,
                 weight_decay: float, betas: tuple[float, float], eps: float) -> None:
        self.muon = torch.optim.Muon(muon_params, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        self.adamw = (torch.optim.AdamW(adamw_params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
                      if adamw_params else None)
        self.parts = [opt for opt in (self.muon, self.adamw) if opt is not None]
        super().__init__([group for opt in self.parts for group in opt.param_groups], {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.parts:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [opt.state_dict() for opt in self.parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for opt, state in zip(self.parts, state_dict["parts"], strict=True):
            opt.load_state_dict(state)


def muon(trainer: Any, model: nn.Module, m: MethodArgs) -> Any:
    hidden, rest, args = *muon_split(model), trainer.args
    if not hidden:
        raise ConfigError("use_muon: no trainable 2-D hidden weight to optimize with Muon")
    if hidden[0].device.type == "cpu" and not native_bf16():
        say("use_muon: torch.optim.Muon orthogonalizes every update in bf16, which this CPU emulates (no AMX or "
            "AVX512-BF16): steps are several times slower than with AdamW")
    return MuonWithAdamW(hidden, rest, lr=args.learning_rate, weight_decay=args.weight_decay,
                         betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


def loraplus(trainer: Any, model: nn.Module, m: MethodArgs) -> Any:
    from peft.optimizers import create_loraplus_optimizer

    args = trainer.args
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(args)
    kwargs.pop("lr")
    return create_loraplus_optimizer(model, cls, lr=args.learning_rate, loraplus_lr_ratio=m.loraplus_lr_ratio,
                                     loraplus_lr_embedding=m.loraplus_lr_embedding,
                                     loraplus_weight_decay=args.weight_decay, **kwargs)


@dataclass(frozen=True)
class Optimizer:
    """One optimizer a config key chooses: how it is built, and the package and extra it needs."""

    build: Callable[[Any, nn.Module, MethodArgs], Any]  # (trainer, model, method) -> optimizer
    package: str | None = None  # the module to import; None: it ships with torch / peft
    extra: str | None = None  # pip install 'instill[extra]'
    distribution: str | None = None  # the package's name on the index
    prepare_trainer: Callable[[Any, MethodArgs], None] | None = None


OPTIMIZERS: dict[str, Optimizer] = {
    "use_galore": Optimizer(galore, "galore_torch", "galore", "galore-torch"),
    "use_apollo": Optimizer(apollo, "apollo_torch", "apollo", "apollo-torch"),
    "use_badam": Optimizer(badam, "badam", "badam", "badam", _badam_trainer),
    "use_adam_mini": Optimizer(adam_mini, "adam_mini", "adam-mini", "adam-mini"),
    "use_muon": Optimizer(muon),
    "loraplus_lr_ratio": Optimizer(loraplus),
}


def state_bytes(optimizer: Any) -> int:
    """Bytes of every tensor an optimizer holds in its state (GaLore's projectors, each optimizer of a
    layer-wise one, BAdam's inner Adam included); step counters left out."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # inside accelerate's wrapper
    inner = (list(optimizer.optimizer_dict.values()) if hasattr(optimizer, "optimizer_dict")
             else getattr(optimizer, "parts", [optimizer]))
    seen: set[int] = set()

    def walk(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            if id(obj) in seen or obj.ndim == 0:
                return 0
            seen.add(id(obj))
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            return sum(walk(v) for v in obj.values())
        if isinstance(obj, list | tuple):
            return sum(walk(v) for v in obj)
        return sum(walk(v) for v in vars(obj).values()) if hasattr(obj, "__dict__") else 0

    return sum(walk(dict(getattr(opt, "base_optimizer", opt).state)) for opt in inner)


def check_optimizer(config: RunConfig) -> None:
    """Before anything loads: the chosen optimizer's package is installed, and it fits this many processes."""
    m, key = config.method, chosen_optimizer(config.method)
    if key is None:
        return
    chosen = OPTIMIZERS[key]
    if chosen.package and importlib.util.find_spec(chosen.package) is None:
        raise ConfigError(f"{key}: needs the {chosen.distribution} package: pip install 'instill[{chosen.extra}]'")
    if world_size() > 1:
        layerwise = next((k for k in ("galore_layerwise", "apollo_layerwise") if getattr(m, k)
                          and getattr(m, "use_" + k.split("_")[0])), None)
        if layerwise:
            raise ConfigError(f"{layerwise}: steps parameters during the backward pass, which one process only can "
                              f"do (as in LLaMA-Factory); set {layerwise}: false")
        if m.use_badam and (m.badam_mode == "ratio" or not config.train.deepspeed):
            raise ConfigError("use_badam: with several processes BAdam needs badam_mode: layer and DeepSpeed ZeRO-3 "
                              "(as in LLaMA-Factory)")


class ChosenOptimizer:
    """Trainer mixin: `create_optimizer` builds the optimizer the config chose (`OPTIMIZERS`)."""

    method: MethodArgs  # set by with_chosen_optimizer

    def create_optimizer(self, model: Any = None) -> Any:
        if self.optimizer is None:
            chosen = OPTIMIZERS[chosen_optimizer(self.method)]
            self.optimizer = chosen.build(self, self.model if model is None else model, self.method)
            if chosen.prepare_trainer is not None:
                chosen.prepare_trainer(self, self.method)
        return super().create_optimizer(model)


def with_chosen_optimizer(trainer_cls: type, method: MethodArgs) -> type:
    """`trainer_cls`, building the optimizer `method` chooses (`trainer_cls` itself when it chooses none)."""
    if chosen_optimizer(method) is None:
        return trainer_cls
    return type(trainer_cls.__name__, (ChosenOptimizer, trainer_cls), {"method": method})
