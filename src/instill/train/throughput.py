"""What a training run achieved per second and per GiB: the figures of the summary line,
all_results.json, trainer_log.jsonl, the report and the trackers, all computed here.

- tokens/s: non-padding input tokens trained (Trainer's `num_input_tokens_seen`, this run's share when it
  resumed) ÷ training time, where training time is `TrainClock`'s: wall time from the start to the end of
  training less each evaluation run during it (eval loss, task metrics). The per-logging-interval rate of
  trainer_log.jsonl and the trackers is the same quotient over one interval;
- samples/s, s/step (over the same training time), padding ratio (padded slots / all slots, from the batches
  the Trainer ran);
- shared prefix: the fraction of tokens that a prefix common to a batch's rows let run once;
- peak RSS (and peak CUDA memory);
- MFU = train_flops_per_token × tokens computed/s ÷ peak FLOP/s of the compute dtype (tracking/compute.py
  states the formula; CPU peak from a cached matmul probe, GPU peak from a spec table). Tokens computed
  leave out those a shared prefix saved, so MFU is what the hardware did, and tokens/s what was trained.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import TrainerCallback

from instill.data.collate import padding_ratio
from instill.tracking import hardware
from instill.tracking.compute import peak_flops, train_flops_per_token


def model_flops_per_token(model: Any, labelled_fraction: float, full: bool) -> float:
    """`train_flops_per_token` for this model: body = every matmul weight except embedding and head."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    embedding = inner.get_input_embeddings().weight
    output = inner.get_output_embeddings()  # None for a reward model: its one-output score head is in the body
    head = output.weight if output is not None else None
    total = sum(p.numel() for p in inner.parameters() if full or not p.requires_grad)
    body = total - embedding.numel() - (0 if head is None or head is embedding else head.numel())
    return train_flops_per_token(body, 0 if head is None else head.numel(), labelled_fraction, full)


class TrainClock(TrainerCallback):
    """Training time with evaluation left out: the seconds every tokens/s figure divides by.

    It runs from `on_train_begin` to `on_train_end`, less each evaluation during training: one starts after
    the step's last training event (step end, training log, checkpoint save, epoch end) and ends at
    `on_evaluate`. Put this callback after the task-metrics one, whose generation is evaluation too.
    """

    def __init__(self) -> None:
        self.began: float | None = None
        self.ended: float | None = None
        self.eval_seconds = 0.0
        self.first_tokens = self.first_step = 0
        self._last_event = 0.0
        self._logged: tuple[int, int, float, float | None] = (-1, 0, 0.0, None)  # step, tokens, seconds, rate

    def _running(self) -> bool:
        return self.began is not None and self.ended is None

    def _event(self, args, state, control, **kwargs):
        if self._running():
            self._last_event = time.perf_counter()

    on_step_end = on_save = on_epoch_end = _event

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = self._last_event = time.perf_counter()
        self.ended, self.eval_seconds = None, 0.0
        self.first_tokens, self.first_step = state.num_input_tokens_seen, state.global_step
        self._logged = (-1, state.num_input_tokens_seen, 0.0, None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:  # a training log; an evaluation's own log comes inside the evaluation
            self._event(args, state, control)

    def on_evaluate(self, args, state, control, **kwargs):
        if self._running():
            now = time.perf_counter()
            self.eval_seconds += now - self._last_event
            self._last_event = now

    def on_train_end(self, args, state, control, **kwargs):
        self.ended = time.perf_counter()

    def train_seconds(self) -> float:
        if self.began is None:
            return 0.0
        end = self.ended if self.ended is not None else time.perf_counter()
        return end - self.began - self.eval_seconds

    def tokens(self, state: Any) -> int:
        """Non-padding input tokens trained since `on_train_begin` (a resumed run counts its own share)."""
        return state.num_input_tokens_seen - self.first_tokens

    def interval_rate(self, state: Any) -> float | None:
        """Tokens/s since the previous training log, evaluation left out; every caller at one step gets the
        same figure (trainer_log.jsonl and the trackers both ask)."""
        step, tokens, seconds, rate = self._logged
        if state.global_step != step:
            now_tokens, now_seconds = state.num_input_tokens_seen, self.train_seconds()
            gained, took = now_tokens - tokens, now_seconds - seconds
            rate = round(gained / took, 1) if took > 0 and gained > 0 else None
            self._logged = (state.global_step, now_tokens, now_seconds, rate)
        return rate


def throughput(trainer: Any, clock: TrainClock, compute_dtype: torch.dtype, full: bool) -> dict[str, float]:
    """The run's throughput figures (keys as logged); MFU only where a peak is known.

    Under N processes the token count is already summed over them; this process's batch counts are
    scaled by N (every rank sees batches of the same shape) and MFU is against N devices' peak."""
    ranks = max(1, int(getattr(trainer.args, "world_size", 1) or 1))
    counts = {key: value * ranks for key, value in (getattr(trainer, "batch_counts", None) or {}).items()}
    tokens = clock.tokens(trainer.state)
    seconds = clock.train_seconds()
    steps = trainer.state.global_step - clock.first_step
    out: dict[str, float] = {"train_seconds": round(seconds, 4), "eval_seconds": round(clock.eval_seconds, 4)}
    if seconds > 0:
        out["train_tokens_per_s"] = round(tokens / seconds, 1)
        if counts.get("samples"):
            out["train_samples_per_s"] = round(counts["samples"] / seconds, 3)
        if steps:
            out["train_s_per_step"] = round(seconds / steps, 3)
    if counts.get("slots"):
        out["padding_ratio"] = round(1 - tokens / counts["slots"], 4)
    if counts.get("shared") and tokens:
        out["shared_prefix_ratio"] = round(counts["shared"] / tokens, 4)
    memory = hardware.sample(trainer.state.global_step)
    for key in ("peak_rss_mb", "gpu_peak_mem_mb"):
        if key in memory:
            out[key] = memory[key]
    peak = peak_flops(compute_dtype)
    if peak and tokens and seconds > 0:
        computed = tokens - counts.get("shared", 0)
        fraction = counts.get("labelled", 0) / computed if counts.get("labelled") else 1.0
        flops = model_flops_per_token(trainer.accelerator.unwrap_model(trainer.model), fraction, full)
        out["mfu"] = round(flops * computed / seconds / (peak * ranks), 4)
        out["peak_tflops"] = round(peak / 1e12, 3)
    return out


_TEXT = (  # (key, how the summary line shows it)
    ("train_tokens_per_s", lambda v: f"{v:.1f} tokens/s"),
    ("train_samples_per_s", lambda v: f"{v:.2f} samples/s"),
    ("train_s_per_step", lambda v: f"{v:.2f} s/step"),
    ("padding_ratio", lambda v: f"padding {100 * v:.1f}%"),
    ("shared_prefix_ratio", lambda v: f"shared prefix {100 * v:.1f}% of tokens (run once a batch)"),
    ("peak_rss_mb", lambda v: f"peak RSS {v / 1024:.2f} GiB"),
    ("gpu_peak_mem_mb", lambda v: f"peak GPU memory {v / 1024:.2f} GiB"),
    ("mfu", lambda v: f"MFU {100 * v:.1f}%"),
)


def train_time_text(figures: dict[str, float]) -> str:
    """The summary line's training time, the seconds tokens/s divides by: '180 s', '180 s + 4.5 s evaluation'."""
    def show(seconds: float) -> str:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"

    text = show(figures.get("train_seconds", 0))
    return text + (f" + {show(figures['eval_seconds'])} evaluation" if figures.get("eval_seconds") else "")


def throughput_text(figures: dict[str, float]) -> str:
    """The summary line's part: '237.4 tokens/s, 1.43 samples/s, 11.20 s/step, padding 3.1%, peak RSS 4.11 GiB, MFU 2.3%
    of 0.044 TFLOP/s'."""
    text = ", ".join(show(figures[key]) for key, show in _TEXT if key in figures)
    return text + (f" of {figures['peak_tflops']:g} TFLOP/s" if "mfu" in figures else "")


def expected_padding(config: Any, summary: Any) -> dict[str, Any]:
    """How the training rows will be batched and the padding ratio that gives (data_summary.json's `batching`)."""
    t, d = config.train, config.data
    lengths = [p + r for p, r in zip(summary.prompt_lengths, summary.response_lengths)]
    out: dict[str, Any] = {"batch_size": t.per_device_train_batch_size, "group_by_length": t.group_by_length,
                           "packing": d.packing or d.neat_packing}
    if out["packing"]:
        return out  # packed rows: padding is measured during training
    group = t.per_device_train_batch_size * t.gradient_accumulation_steps
    out["padding_ratio"] = round(padding_ratio(lengths, t.per_device_train_batch_size, t.group_by_length,
                                               t.seed, group), 4)
    if t.group_by_length:
        out["padding_ratio_random_order"] = round(padding_ratio(lengths, t.per_device_train_batch_size, False,
                                                                t.seed), 4)
    return out


def padding_line(batching: dict[str, Any]) -> str:
    if batching["packing"]:
        return (f"batching: {batching['batch_size']} rows a batch packed into rows of cutoff_len tokens "
                "(exact per-sequence masks); padding is measured during training")
    line = (f"batching: {batching['batch_size']} rows a batch, padded to the longest: "
            f"padding {100 * batching['padding_ratio']:.1f}% of batch tokens")
    if batching["group_by_length"]:
        line += f" grouped by length (random order: {100 * batching['padding_ratio_random_order']:.1f}%)"
    return line + " (estimate from the sampler's order)"
