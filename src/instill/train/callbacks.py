"""Trainer callbacks: a JSON-lines log with throughput, and the one-line progress the user reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from instill.stage_facts import EVAL_METRIC, StageFacts
from instill.tracking import hardware
from instill.train.checkpoint import save_failures

# Logged by the Trainer subclass at every log step (samples, padding) and once after training (train/throughput.py).
THROUGHPUT_KEYS = ("samples_seen", "padding_ratio", "train_seconds", "eval_seconds", "train_tokens_per_s",
                   "train_samples_per_s", "train_s_per_step", "peak_rss_mb", "gpu_peak_mem_mb", "mfu", "peak_tflops")


class JsonlLogCallback(TrainerCallback):
    """Appends every log event to `trainer_log.jsonl`: step, epoch, loss, lr, grad_norm, tokens/s,
    and on training steps the hardware sample (cpu_percent, rss_mb, peak_rss_mb, gpu_* with CUDA).

    Tokens are non-padding input tokens (Trainer's `num_input_tokens_seen`). `rate` gives a training log's
    tokens/s (`TrainClock.interval_rate`: non-padding tokens over training time since the previous log,
    evaluation left out). The stage's own metrics (trl's rewards/..., KTO's kl, the reward model's accuracy
    and margin) are kept too, as its facts name them.
    """

    def __init__(self, path: str | Path, stage: StageFacts, rate: Callable[[Any], float | None] | None = None) -> None:
        self.path = Path(path)
        self.stage = stage
        self.rate = rate

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key in logs:  # eval_loss / eval_accuracy, or eval_<dataset>_... for each eval dataset (eval_on_each_dataset)
            if key in ("loss", "learning_rate", "grad_norm", *THROUGHPUT_KEYS) or EVAL_METRIC.fullmatch(key):
                record[key] = logs[key]
        # None: trl's mean of a reward function that had no opinion on any answer of the interval.
        record.update({k: v for k, v in logs.items() if self.stage.logs_metric(k) and v is not None})
        rate = self.rate(state) if "loss" in logs and self.rate is not None else None
        if rate is not None:
            record["tokens_per_s"] = rate
        if "loss" in logs:  # CPU %, RSS, GPU memory/utilisation (train.hardware), shared with the trackers
            record.update(hardware.sample(state.global_step))
        record["tokens_seen"] = state.num_input_tokens_seen
        if len(record) > 3:
            with save_failures(self.path.parent, str(self.path)), self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


class AdaLoraCallback(TrainerCallback):
    """Reallocates AdaLoRA's rank budget after every optimizer step.

    transformers' Trainer never calls `update_and_allocate`; without this callback AdaLoRA trains
    as a plain LoRA of rank `adalora_init_r`. `on_optimizer_step` runs after `optimizer.step()` and
    before `zero_grad()`, which is where peft needs the call (the importance scores use the grads).
    """

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


class LogLineProgress(ProgressCallback):
    """transformers' progress bars, with each log event as one `[instill]` line instead of a printed dict.

    `ProgressCallback.on_log` writes `str(logs)` (`{'loss': '3.192', 'grad_norm': ...}`) into the
    output; here the same numbers read as a sentence, and the full record stays in trainer_log.jsonl.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or self.training_bar is None:
            return
        shown = [f"{k.removeprefix('eval_').replace('_', ' ') if k.startswith('eval_') else k} {v:.4g}"
                 for k, v in logs.items() if isinstance(v, float) and (k in _SHOWN or EVAL_METRIC.fullmatch(k))]
        if shown:
            self.training_bar.write(f"[instill] step {state.global_step}/{state.max_steps}: {' · '.join(shown)}")


_SHOWN = ("rewards/margins", "rewards/accuracies", "loss", "grad_norm", "learning_rate", "train_loss")
