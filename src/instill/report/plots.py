"""Plots from a run's trainer_log.jsonl (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend needed

from instill.errors import DataError
from instill.stage_facts import eval_losses


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
    evals: dict[str, list[tuple[int, float]]] = {}  # "eval loss", or one line per eval dataset
    for r in records:
        for label, value in eval_losses(r).items():
            evals.setdefault(label, []).append((r["step"], value))
    if not train and not evals:
        return None
    fig = Figure(figsize=(7, 4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="#9ecae1", linewidth=1, label="train loss")
        if len(losses) > 3:
            ax.plot(steps, _smooth(list(losses)), color="#08519c", linewidth=2, label="train loss (smoothed)")
    colours = ["#d94801", "#238b45", "#6a51a3", "#cb181d", "#525252"]
    for i, (label, points) in enumerate(evals.items()):
        steps, losses = zip(*points)
        ax.plot(steps, losses, "o-", color=colours[i % len(colours)], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, Path(out_dir) / "training_loss.png")


# ---------------------------------------------------------------- report figures
# Each returns the PNG written, or None when the log has nothing to draw. Chinese text (dataset
# or label names) gets a CJK font through `font_rc`.

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


REWARD_LINES = ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl", "margin", "mean_reward")
ACCURACY_LINES = ("rewards/accuracies", "accuracy")


def plot_rewards(log_path: str | Path, out_dir: str | Path) -> Path | None:
    """rewards.png: trl's reward terms per step, accuracies on a second axis (preference stages), or the
    online stages' rewards (plot_online_rewards)."""
    records = [r for r in read_log(log_path) if "loss" in r]
    if any("reward" in r for r in records):
        return plot_online_rewards(records, out_dir)
    lines = {k: [(r["step"], r[k]) for r in records if k in r] for k in REWARD_LINES + ACCURACY_LINES}
    lines = {k: v for k, v in lines.items() if v}
    if not lines:
        return None
    fig = Figure(figsize=(7, 3.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for key in REWARD_LINES:
        if key in lines:
            ax.plot(*zip(*lines[key]), linewidth=1.5, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    accuracy = [k for k in ACCURACY_LINES if k in lines]
    if accuracy:
        ax2 = ax.twinx()
        for key in accuracy:
            ax2.plot(*zip(*lines[key]), "--", color="#555555", linewidth=1, label=key)
        ax2.set_ylim(-0.05, 1.05)
        ax2.set_ylabel("accuracy")
        h2 = ax2.get_legend_handles_labels()
        handles = (handles[0] + h2[0], handles[1] + h2[1])
    ax.legend(*handles, loc="best", fontsize=8)
    ax.set_title("Preference rewards")
    return _save(fig, Path(out_dir) / "rewards.png")


def plot_online_rewards(records: list[dict], out_dir: str | Path) -> Path:
    """rewards.png (grpo, rloo): mean reward and each function's mean per step; KL and answer length below."""
    fig = Figure(figsize=(7, 5), dpi=120, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    keys = ["reward"] + sorted({k for r in records for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    for key in keys:
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if points:
            top.plot(*zip(*points), linewidth=2 if key == "reward" else 1,
                     label=key.removeprefix("rewards/").removesuffix("/mean"))
    top.set_ylabel("mean reward")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8)
    top.set_title("Online RL: rewards of the sampled answers")
    length = [(r["step"], r["completions/mean_length"]) for r in records if "completions/mean_length" in r]
    if length:
        bottom.plot(*zip(*length), color="#4c72b0", label="answer length (tokens)")
    bottom.set_ylabel("answer length")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    kl = [(r["step"], r["kl"]) for r in records if "kl" in r]
    if kl:
        ax2 = bottom.twinx()
        ax2.plot(*zip(*kl), "--", color="#c44e52", label="KL to the reference")
        ax2.set_ylabel("KL")
    return _save(fig, Path(out_dir) / "rewards.png")


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
    with rc_context(font_rc(list(sets))):
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


# ---------------------------------------------------------------- fonts and the confusion matrix
# The column `classification_metrics` adds for answers that matched no label.
INVALID_COLUMN = "<invalid>"
_warned_no_cjk = False
_CJK_FONT_NAMES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Noto Sans SC",
    "Noto Serif CJK SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "STHeiti",
    "Arial Unicode MS",
    "AR PL UMing CN",
    "AR PL UKai CN",
)
_CJK_FAMILY_HINT = re.compile(
    r"CJK|Han Sans|Han Serif|WenQuanYi|YaHei|Heiti|Songti|KaiTi|FangSong|MingLiU|\b(?:Hei|Song|Ming|Kai)\b",
    re.IGNORECASE,
)
_CJK_FILE_HINT = re.compile(
    r"cjk|wqy|wenquanyi|sourcehan|simhei|simsun|msyh|yahei|pingfang|hiragino|droidsansfallback|uming|ukai|heiti",
    re.IGNORECASE,
)
_scanned_system_fonts = False


def find_cjk_font() -> str | None:
    """Family name of an installed font that covers Chinese, or ``None``.

    Known families first (Noto Sans CJK, Source Han Sans, WenQuanYi, SimHei, ...), then any
    family whose name says CJK/Han/Hei/... . matplotlib caches its font list, so a font
    installed after the cache was built is invisible to it: if nothing is found, system
    font files whose names look CJK are registered with ``fontManager.addfont`` and the
    search is repeated (once per process).
    """
    global _scanned_system_fonts
    from matplotlib import font_manager

    name = _known_cjk_family(font_manager)
    if name is None and not _scanned_system_fonts:
        _scanned_system_fonts = True
        for path in font_manager.findSystemFonts():
            if _CJK_FILE_HINT.search(Path(path).name):
                try:
                    font_manager.fontManager.addfont(path)
                except Exception:  # unreadable font file: skip it
                    continue
        name = _known_cjk_family(font_manager)
    return name


def _known_cjk_family(font_manager: Any) -> str | None:
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in _CJK_FONT_NAMES:
        if name in installed:
            return name
    for name in sorted(installed):
        if _CJK_FAMILY_HINT.search(name):
            return name
    return None


def font_rc(texts: Sequence[str]) -> dict:
    """matplotlib rc settings that make `texts` readable: a CJK font when they hold CJK.

    With none installed, one warning per process; the plot is drawn anyway (glyphs become boxes).
    """
    global _warned_no_cjk
    if not any(ord(ch) > 0x2E7F for text in texts for ch in str(text)):
        return {}
    font = find_cjk_font()
    if font is not None:
        return {"font.family": "sans-serif", "font.sans-serif": [font, "DejaVu Sans"]}
    if not _warned_no_cjk:
        _warned_no_cjk = True
        warnings.warn("no CJK font found (install e.g. fonts-noto-cjk or fonts-wqy-microhei); "
                      "Chinese text in plots will render as boxes", stacklevel=3)
    return {}


def plotted_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> list[list[int]]:
    """The matrix to draw: without the <invalid> column when no answer was invalid (always so in score mode)."""
    rows = [list(r) for r in matrix]
    if rows and len(rows[0]) > len(labels) and not any(r[-1] for r in rows):
        return [r[:-1] for r in rows]
    return rows


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]],
    labels: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix",
) -> Path:
    """Write the confusion matrix as a PNG (or any format matplotlib infers from ``path``).

    ``cm`` rows are reference labels (``labels`` order); columns are the same labels,
    optionally followed by one ``"<invalid>"`` column, as ``classification_metrics`` returns.
    Cells show counts; colour is the row share (each row divided by its total), so rare
    classes are as readable as common ones. Uses the Agg canvas without touching pyplot's
    global state. Chinese labels get a CJK font through ``font_rc``. Returns the path written.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    rows = [list(r) for r in cm]
    labels = [str(x) for x in labels]
    k = len(labels)
    if len(rows) != k or any(len(r) not in (k, k + 1) for r in rows):
        raise DataError(f"confusion matrix of shape {len(rows)}x{len(rows[0]) if rows else 0} does not fit {k} labels")
    ncols = len(rows[0]) if rows else k
    columns = labels + [INVALID_COLUMN] if ncols == k + 1 else labels
    shares = [[c / sum(r) if sum(r) else 0.0 for c in r] for r in rows]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = max(4.0, 0.6 * ncols + 2.5)
    with rc_context(font_rc([*labels, title])), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        fig = Figure(figsize=(size + 1.0, size), dpi=120, layout="constrained")
        ax = fig.add_subplot()
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(ncols), labels=columns, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(k), labels=labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(title)
        for i, row in enumerate(rows):
            for j, count in enumerate(row):
                ax.text(
                    j, i, str(count), ha="center", va="center", fontsize=9,
                    color="white" if shares[i][j] > 0.5 else "black",
                )
        if ncols == k + 1:
            ax.axvline(k - 0.5, color="0.4", linewidth=1.0, linestyle="--")  # set off the invalid column
        fig.colorbar(image, ax=ax, label="share of reference row")
        fig.savefig(path)
    return path
