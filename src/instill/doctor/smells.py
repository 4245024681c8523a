"""Config smells: settings that validate but usually mean a mistake, each with its reason."""

from __future__ import annotations

from instill.config import RunConfig
from instill.doctor.table import PASS, WARN, Check

AREA = "config"
# Usual learning rates per method (LLaMA-Factory's examples, peft's docs, our benchmarks); "far outside"
# is a factor of 10 beyond either end.
USUAL_LR = {
    "lora": (1e-5, 1e-3),
    "adalora": (1e-4, 1e-2),  # its singular values start at zero: it wants ~10x LoRA's rate (README, Methods)
    "oft": (1e-5, 1e-3),  # LLaMA-Factory's OFT examples: 1e-4
    "full": (1e-6, 5e-5),
    "freeze": (1e-6, 1e-4),
}
_FAR = 10.0
_MIN_EVAL = 10  # fewer held-out samples than this make eval loss noise


def _fmt(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def lr_check(config: RunConfig) -> Check:
    method = config.method.finetuning_type
    low, high = USUAL_LR[method]
    lr = config.train.learning_rate
    usual = f"{method}'s usual range {_fmt(low)} – {_fmt(high)}"
    if lr > high * _FAR:
        return Check(WARN, AREA, "learning rate", f"{lr:g} is far above {usual}: the loss is likely to diverge or "
                     "the model to forget what it knew", f"try learning_rate: {_fmt(high)}")
    if lr < low / _FAR:
        return Check(WARN, AREA, "learning rate", f"{lr:g} is far below {usual}: the model will barely move",
                     f"try learning_rate: {_fmt(low)}")
    return Check(PASS, AREA, "learning rate", f"{lr:g} (within a factor of {_FAR:g} of {usual})")


def val_size_check(config: RunConfig, n_val: int, n_total: int | None) -> Check | None:
    if not config.data.val_size or config.data.eval_dataset or n_total is None:
        return None
    if n_val >= n_total:
        return Check(WARN, AREA, "val_size", f"val_size {config.data.val_size:g} holds out {n_val} of {n_total} samples, "
                     "leaving none to train on", "lower val_size, or give a separate eval_dataset")
    if n_val < _MIN_EVAL:
        return Check(WARN, AREA, "val_size", f"val_size {config.data.val_size:g} holds out {n_val} of {n_total} samples: "
                     f"an eval loss over {n_val} samples is noise, and they are taken from an already tiny training set",
                     "set val_size: 0 and evaluate on a separate eval_dataset, or collect more data")
    return Check(PASS, AREA, "val_size", f"{n_val} of {n_total} samples held out for evaluation")


def batch_check(config: RunConfig, n_train: int | None) -> Check | None:
    if n_train is None:
        return None
    t = config.train
    effective = t.per_device_train_batch_size * t.gradient_accumulation_steps
    what = (f"per_device_train_batch_size {t.per_device_train_batch_size} × gradient_accumulation_steps "
            f"{t.gradient_accumulation_steps} = {effective}")
    if effective > n_train:
        return Check(WARN, AREA, "batch", f"{what} samples per optimizer step, but the training set has {n_train}: "
                     "every epoch is a single, partial step", "lower gradient_accumulation_steps (or the batch size)")
    return Check(PASS, AREA, "batch", f"{what} per step; {n_train} training samples")


def reasoning_check(reasoning_template: bool, thinking_data: bool) -> Check | None:
    if not reasoning_template:
        return None
    if not thinking_data:
        return Check(WARN, AREA, "reasoning", "the chat template writes <think> blocks, but no answer in the data has "
                     "<think>…</think>: the model learns to answer without thinking, or to emit empty thinking",
                     "add reasoning to the answers, or set enable_thinking: false (thinking off, as LLaMA-Factory's "
                     "key does), or train with a template without thinking (e.g. template: qwen)")
    return Check(PASS, AREA, "reasoning", "reasoning template, and the data has <think> answers")


def smell_checks(config: RunConfig, n_train: int | None, n_val: int, reasoning_template: bool,
                 thinking_data: bool) -> list[Check]:
    total = None if n_train is None else n_train + n_val
    found = [lr_check(config), val_size_check(config, n_val, total), batch_check(config, n_train),
             reasoning_check(reasoning_template, thinking_data)]
    return [c for c in found if c is not None]
