"""Trainer callbacks: a JSON-lines log with throughput, the one-line progress the user reads, and the profilers."""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from instill.console import say
from instill.errors import ConfigError
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


class TorchProfilerCallback(TrainerCallback):
    """torch.profiler over training, stepped once per optimizer step (LLaMA-Factory's TorchProfilerCallback).

    The schedule is wait / warmup / active steps, `repeat` cycles (0: until training ends); each recorded cycle
    is written by `tensorboard_trace_handler` as a Chrome / TensorBoard JSON trace into `<folder>/rank_<N>/`
    (open it with TensorBoard's profiler plugin, chrome://tracing or Perfetto). CUDA kernels are traced too on
    a GPU."""

    def __init__(self, folder: str | Path, args: Any) -> None:
        self.folder, self.args, self.profiler = Path(folder), args, None

    def on_train_begin(self, args, state, control, **kwargs):
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        if self.profiler is not None:  # auto_find_batch_size starts the loop again
            self.profiler.stop()
        a = self.args
        trace_dir = self.folder / f"rank_{args.process_index}"
        trace_dir.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.profiler = profile(
            activities=activities,
            schedule=schedule(wait=a.profiler_wait_steps, warmup=a.profiler_warmup_steps,
                              active=a.profiler_active_steps, repeat=a.profiler_repeat),
            on_trace_ready=tensorboard_trace_handler(str(trace_dir)),
            record_shapes=a.profiler_record_shapes, profile_memory=a.profiler_profile_memory,
            with_stack=a.profiler_with_stack)
        self.profiler.start()
        if state.is_world_process_zero:
            say(f"torch profiler: wait {a.profiler_wait_steps}, warmup {a.profiler_warmup_steps}, active "
                f"{a.profiler_active_steps} steps, {a.profiler_repeat or 'unlimited'} cycle(s); traces in "
                f"{self.folder}")

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is not None:
            self.profiler.step()

    def on_train_end(self, args, state, control, **kwargs):
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None


class ModuleTimingCallback(TrainerCallback):
    """Mean forward and backward time of the modules whose names match `patterns` (fnmatch), printed at every
    log step (LLaMA-Factory's profile_modules).

    LLaMA-Factory times with CUDA / NPU events and does nothing elsewhere; here a CUDA run uses CUDA events
    and a CPU run the wall clock (CPU kernels run synchronously, so the clock measures them)."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = patterns
        self.handles: list[Any] = []
        self.pending: dict[tuple[str, str], Any] = {}
        self.times: dict[tuple[str, str], list[float]] = {}
        self.cuda = False

    def _clock(self) -> Any:
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _elapsed_ms(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1000

    def _start(self, name: str, phase: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self.pending[(name, phase)] = [self._clock(), None]
        return hook

    def _end(self, name: str, phase: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if (name, phase) in self.pending:
                self.pending[(name, phase)][1] = self._clock()
        return hook

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch

        self.on_train_end(args, state, control)
        self.cuda = torch.cuda.is_available() and next(model.parameters()).is_cuda
        matched = [(name, module) for name, module in model.named_modules()
                   if name and any(fnmatch.fnmatch(name, p) for p in self.patterns)]
        if not matched:
            names = [n for n, _ in model.named_modules() if n]
            raise ConfigError(f"profile_modules: no module name matches {', '.join(self.patterns)} (names look like "
                              f"{names[len(names) // 2] if names else 'nothing: the model has no submodules'})")
        for name, module in matched:
            self.handles += [module.register_forward_pre_hook(self._start(name, "forward")),
                             module.register_forward_hook(self._end(name, "forward")),
                             module.register_full_backward_pre_hook(self._start(name, "backward")),
                             module.register_full_backward_hook(self._end(name, "backward"))]
        if state.is_world_process_zero:
            say(f"profile_modules: timing {len(matched)} module(s): {', '.join(n for n, _ in matched[:4])}"
                + (f" and {len(matched) - 4} more" if len(matched) > 4 else ""))

    def on_step_end(self, args, state, control, **kwargs):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        for key, (start, end) in self.pending.items():
            if end is not None:
                self.times.setdefault(key, []).append(self._elapsed_ms(start, end))
        self.pending.clear()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.times or not state.is_world_process_zero:
            return
        names = sorted({name for name, _ in self.times})
        mean = {key: sum(v) / len(v) for key, v in self.times.items()}
        say(f"module times at step {state.global_step} (ms, mean forward / backward): " + "; ".join(
            f"{n} {mean.get((n, 'forward'), 0.0):.3f} / {mean.get((n, 'backward'), 0.0):.3f}" for n in names))
        self.times.clear()

    def on_train_end(self, args, state, control, **kwargs):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
