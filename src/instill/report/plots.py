"""Plots from a run's trainer_log.jsonl (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend needed


def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _smooth(values: list[float], weight: float = 0.6) -> list[float]:
    out, last = [], values[0] if values else 0.0
    for v in values:
        last = last * weight + (1 - weight) * v
        out.append(last)
    return out


def plot_loss(log_path: str | Path, out_dir: str | Path) -> Path | None:
    """training_loss.png: train loss (raw and smoothed) and eval loss when logged. None if no loss yet."""
    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    fig = Figure(figsize=(7, 4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="#9ecae1", linewidth=1, label="train loss")
        if len(losses) > 3:
            ax.plot(steps, _smooth(list(losses)), color="#08519c", linewidth=2, label="train loss (smoothed)")
    if evals:
        steps, losses = zip(*evals)
        ax.plot(steps, losses, "o-", color="#d94801", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, Path(out_dir) / "training_loss.png")


# ---------------------------------------------------------------- report figures
# Each returns the PNG written, or None when the log has nothing to draw. Chinese text (dataset
# or label names) needs a CJK font: found with instill.evaluate.classify.find_cjk_font, with one
# warning per process when there is none (the plot is drawn anyway; CJK glyphs become boxes).

_warned_no_cjk = False


def _font_rc(texts: list[str]) -> dict:
    """matplotlib rc settings that make `texts` readable (a CJK font when they hold CJK)."""
    global _warned_no_cjk
    if not any(ord(ch) > 0x2E7F for text in texts for ch in str(text)):
        return {}
    from instill.evaluate.classify import find_cjk_font

    font = find_cjk_font()
    if font is not None:
        return {"font.family": "sans-serif", "font.sans-serif": [font, "DejaVu Sans"]}
    if not _warned_no_cjk:
        _warned_no_cjk = True
        import warnings

        warnings.warn("no CJK font found (install e.g. fonts-noto-cjk or fonts-wqy-microhei); "
                      "Chinese text in plots will render as boxes", stacklevel=3)
    return {}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_learning_rate(log_path: str | Path, out_dir: str | Path) -> Path | None:
    """learning_rate.png: the schedule as logged, with grad norm on a second axis when logged."""
    records = read_log(log_path)
    lr = [(r["step"], r["learning_rate"]) for r in records if "learning_rate" in r]
    grad = [(r["step"], r["grad_norm"]) for r in records if "grad_norm" in r]
    if not lr:
        return None
    fig = Figure(figsize=(7, 3.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(*zip(*lr), color="#2b8cbe", linewidth=2, label="learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    if grad:
        ax2 = ax.twinx()
        ax2.plot(*zip(*grad), color="#d94801", linewidth=1, alpha=0.8, label="grad norm")
        ax2.set_ylabel("grad norm")
        h2 = ax2.get_legend_handles_labels()
        handles = (handles[0] + h2[0], handles[1] + h2[1])
    ax.legend(*handles, loc="best")
    ax.set_title("Learning rate" + (" and gradient norm" if grad else ""))
    return _save(fig, Path(out_dir) / "learning_rate.png")


def plot_throughput(log_path: str | Path, out_dir: str | Path) -> Path | None:
    """throughput.png: tokens/s, process CPU % and memory (RSS, GPU) per logging step."""
    records = [r for r in read_log(log_path) if "loss" in r]
    tps = [(r["step"], r["tokens_per_s"]) for r in records if "tokens_per_s" in r]
    rss = [(r["step"], r["rss_mb"] / 1024) for r in records if "rss_mb" in r]
    gpu = [(r["step"], r["gpu_mem_mb"] / 1024) for r in records if "gpu_mem_mb" in r]
    cpu = [(r["step"], r["cpu_percent"]) for r in records if "cpu_percent" in r]
    if not (tps or rss):
        return None
    fig = Figure(figsize=(7, 5), dpi=120, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    if tps:
        top.plot(*zip(*tps), "o-", color="#31a354", markersize=3, label="tokens/s")
    top.set_ylabel("tokens / s")
    top.set_title("Throughput and resources")
    top.grid(alpha=0.3)
    if cpu:
        top2 = top.twinx()
        top2.plot(*zip(*cpu), color="#969696", linewidth=1, linestyle="--", label="CPU %")
        top2.set_ylabel("process CPU % (100 = one core)")
    if rss:
        bottom.plot(*zip(*rss), color="#756bb1", linewidth=2, label="RSS (GiB)")
    if gpu:
        bottom.plot(*zip(*gpu), color="#e6550d", linewidth=2, label="GPU memory (GiB)")
    bottom.set_ylabel("GiB")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="best")
    return _save(fig, Path(out_dir) / "throughput.png")


def plot_token_lengths(data_summary: dict, out_dir: str | Path) -> Path | None:
    """token_lengths.png: tokens per sample (prompt + answer, after truncation) per split, with cutoff_len."""
    from matplotlib import rc_context

    sets = {name: s for name, s in data_summary.get("sets", {}).items() if s.get("length_histogram")}
    if not sets:
        return None
    with rc_context(_font_rc(list(sets))):
        fig = Figure(figsize=(7, 3.5), dpi=120, layout="constrained")
        ax = fig.add_subplot()
        colors = ["#3182bd", "#e6550d", "#31a354", "#756bb1"]
        for (name, s), color in zip(sets.items(), colors * 4):
            hist = s["length_histogram"]
            ax.stairs(hist["counts"], hist["edges"], fill=True, alpha=0.35, color=color, label=f"{name} ({s['kept']})")
            ax.stairs(hist["counts"], hist["edges"], color=color, linewidth=1.2)
        cutoff = data_summary.get("cutoff_len")
        if cutoff:
            ax.axvline(cutoff, color="#a50f15", linestyle="--", linewidth=1.2, label=f"cutoff_len {cutoff}")
        ax.set_xlabel("tokens per sample (after truncation)")
        ax.set_ylabel("samples")
        ax.set_title("Sample lengths")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        return _save(fig, Path(out_dir) / "token_lengths.png")


def plot_eval_metrics(path: str | Path, out_dir: str | Path) -> Path | None:
    """eval_metrics.png: task metrics measured during training (eval/task_metrics.jsonl) over steps."""
    records = read_log(path)
    keys = list(dict.fromkeys(k for r in records for k, v in r.items()
                              if k != "step" and isinstance(v, (int, float))))
    if not records or not keys:
        return None
    fig = Figure(figsize=(7, 3.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for key in keys:
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points), "o-", markersize=4, label=key.removeprefix("eval_"))
    ax.set_xlabel("step")
    ax.set_title("Task metrics during training")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, Path(out_dir) / "eval_metrics.png")
