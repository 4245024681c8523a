"""`stage: dpo` and `stage: kto`: preference training on trl's trainers (the losses are trl's).

`pref_loss` (LLaMA-Factory's names) picks the trl trainer that implements it:
sigmoid / ipo / hinge -> `trl.DPOTrainer` (`loss_type`), orpo -> `trl.experimental.orpo.ORPOTrainer`,
simpo -> `trl.experimental.cpo.CPOTrainer` with `loss_type="simpo"`. `pref_ftx` mixes in the SFT
loss on the chosen answer: for DPO it is trl's `sft` loss term (a token mean over the chosen
answers, weight `pref_ftx`; LLaMA-Factory's is a per-sequence length average), for SimPO trl's
`cpo_alpha`. ORPO's own SFT term is part of its loss (`pref_beta` weighs the odds-ratio term).

The ids are ours (data/pairs.py: the SFT template and truncation); each trainer's own dataset
preparation is replaced by one that passes them through (mixins in train/patches.py). Every training
argument is passed from our config explicitly (trl's configs default to bf16, gradient checkpointing
and lr 1e-6).

Reference model: LoRA/AdaLoRA -> none loaded, trl runs the reference pass with the adapter disabled
(one copy of the base weights); full/freeze -> `ref_model` when given, else trl loads a frozen copy
of the base from `model_name_or_path`; ORPO and SimPO need none.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from instill.console import say
from instill.model.load import Precision, load_reference
from instill.train.optimizers import with_chosen_optimizer
from instill.train.patches import IdsAsGiven, KLPairs, PairRowsAsGiven
from instill.train.stage import Stage, StageInputs

DPO_LOSSES = ("sigmoid", "ipo", "hinge")
REFERENCE_FREE = ("orpo", "simpo")


def trl_config(config_cls: type, training_args: Any, **extra: Any) -> Any:
    """A trl config holding every value of our TrainingArguments, plus the stage's own."""
    values = {f.name: getattr(training_args, f.name) for f in fields(training_args) if f.init}
    values.update(extra)
    return config_cls(**values)


def _megabytes(model: Any) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def reference_model(inputs: StageInputs) -> Any:
    """The reference model to hand trl (None: adapter disabled, or trl's copy of the base), said once."""
    m = inputs.config.method
    if m.finetuning_type in ("lora", "adalora", "oft"):
        say("reference model: the base with the adapter disabled (no second copy of the weights)")
        return None
    if not m.ref_model:
        say(f"reference model: a frozen copy of {inputs.config.model.model_name_or_path} loaded by trl "
            f"(+{_megabytes(inputs.model):,.0f} MiB)")
        return None
    t = inputs.config.train
    ref = load_reference(m.ref_model, m.ref_model_adapters, m.ref_model_quantization_bit, inputs.config.model,
                         Precision(t.bf16, t.fp16, t.pure_bf16), inputs.model.dtype)
    extra = "".join(f" + {a}" for a in m.ref_model_adapters or [])
    bits = f", {m.ref_model_quantization_bit}-bit" if m.ref_model_quantization_bit else ""
    say(f"reference model: {m.ref_model}{extra}{bits}, frozen ({_megabytes(ref):,.0f} MiB)")
    return ref


def _frozen_reference(trainer: Any) -> Any:
    """trl runs its reference copy under no_grad but leaves its parameters trainable; freeze them, so the
    copy is frozen as the run says (and no later code can train it by mistake)."""
    if trainer.ref_model is not None:
        trainer.ref_model.requires_grad_(False)
    return trainer


def _common(inputs: StageInputs) -> dict[str, Any]:
    return {"model": inputs.model, "train_dataset": inputs.train_dataset, "eval_dataset": inputs.eval_dataset,
            "processing_class": inputs.tokenizer, "callbacks": inputs.callbacks}


def dpo_losses(m: Any) -> dict[str, list]:
    """trl's loss_type / loss_weights for LLaMA-Factory's keys: the preference loss, the BCO term mixed in as
    LLaMA-Factory does ((loss + w·bco) / (1 + w), `pref_bco_weight`), the SFT term on the chosen answer
    (`pref_ftx`)."""
    losses, weights = [m.pref_loss], [1.0]
    if m.pref_bco_weight > 0:
        w = m.pref_bco_weight
        losses, weights = [m.pref_loss, "bco_pair"], [1 / (1 + w), w / (1 + w)]
    if m.pref_ftx > 0:
        losses, weights = [*losses, "sft"], [*weights, m.pref_ftx]
    return {"loss_type": losses, "loss_weights": weights}


def build_dpo(inputs: StageInputs) -> Any:
    m = inputs.config.method
    if m.pref_loss == "orpo":
        return _build_orpo(inputs)
    if m.pref_loss == "simpo":
        return _build_simpo(inputs)
    from trl import DPOConfig, DPOTrainer

    args = trl_config(DPOConfig, inputs.training_args, beta=m.pref_beta, **dpo_losses(m),
                      label_smoothing=m.dpo_label_smoothing, ld_alpha=m.ld_alpha, max_length=None,
                      gradient_checkpointing=False)
    trainer_cls = with_chosen_optimizer(type("InstillDPOTrainer", (IdsAsGiven, DPOTrainer), {}), m)
    return _frozen_reference(trainer_cls(ref_model=reference_model(inputs), args=args, **_common(inputs)))


def _legacy_trainer(trainer_cls: type, config_cls: type, inputs: StageInputs, **extra: Any) -> Any:
    say(f"reference model: none ({inputs.config.method.pref_loss} is reference-free)")
    args = trl_config(config_cls, inputs.training_args, max_length=None, gradient_checkpointing=False, **extra)
    patched = with_chosen_optimizer(type(f"Instill{trainer_cls.__name__}", (PairRowsAsGiven, trainer_cls), {}),
                                    inputs.config.method)
    return patched(args=args, **_common(inputs))


def _build_orpo(inputs: StageInputs) -> Any:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return _legacy_trainer(ORPOTrainer, ORPOConfig, inputs, beta=inputs.config.method.pref_beta)


def _build_simpo(inputs: StageInputs) -> Any:
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    m = inputs.config.method
    return _legacy_trainer(CPOTrainer, CPOConfig, inputs, loss_type="simpo", beta=m.pref_beta,
                           simpo_gamma=m.simpo_gamma, cpo_alpha=m.pref_ftx, label_smoothing=m.dpo_label_smoothing)


def build_kto(inputs: StageInputs) -> Any:
    from trl import KTOConfig, KTOTrainer

    m = inputs.config.method
    args = trl_config(KTOConfig, inputs.training_args, beta=m.pref_beta, desirable_weight=m.kto_chosen_weight,
                      undesirable_weight=m.kto_rejected_weight, max_length=None, gradient_checkpointing=False,
                      train_sampling_strategy="sequential")
    if args.per_device_train_batch_size == 1:
        say("kto, batch 1: each prompt's KL answer is the previous row's (rotated across the dataset, "
            "as LLaMA-Factory does)")
    trainer_cls = with_chosen_optimizer(type("InstillKTOTrainer", (KLPairs, KTOTrainer), {}), m)
    return _frozen_reference(trainer_cls(ref_model=reference_model(inputs), args=args, **_common(inputs)))


DPO = Stage.named("dpo", build_dpo)
KTO = Stage.named("kto", build_kto)
