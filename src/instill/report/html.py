"""One self-contained report.html per run: everything a colleague needs, in one file, offline.

`write_report(output_dir)` reads what training and evaluation left in output_dir and writes
output_dir/report.html. Images are PNG data URIs (the PNGs are also saved beside the report),
styles are inline, nothing is fetched: the page renders the same with no network.

What it reads (each optional; a missing one gives a section that says how to get it):

- run_config.yaml (the resolved config), run_info.json (environment, wall time, peaks),
  data_summary.json (what tokenization kept and cut), trainer_log.jsonl (loss, lr, grad norm,
  tokens/s, CPU/RSS/GPU), all_results.json (Trainer's totals);
- eval/metrics.json (its `headline`: the metrics its eval task leads with), eval/predictions.jsonl,
  eval/confusion_matrix.png, eval/task_metrics.jsonl, and after `instill eval --compare base`: eval/{base,tuned}/... and eval/comparison.json.

- eval/benchmarks.json: standard benchmarks per model, and base vs tuned rows (`instill eval --benchmarks`).

Sections (element ids), results first: summary, training, evaluation, general (ability), samples, data, performance,
environment, config (collapsed). A section that fails to render shows the error instead; the report is
still written.
"""

from __future__ import annotations

import base64
import html
import math
import statistics
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from instill.errors import ReportError
from instill.report import plots
from instill.report.redact import redact_yaml
from instill.report.run_files import Run
from instill.report.samples import pick_samples
from instill.stage_facts import eval_losses

# Results first; the resolved config, collapsed, last.
SECTIONS = ("summary", "training", "evaluation", "general", "samples", "data", "performance", "environment", "config")
# What every tokens/s of a run means (train/throughput.py computes it once; this page only shows it).
TOKENS_PER_S = ("non-padding tokens trained ÷ training time; evaluation during training is left out of "
                "that time")

# ---------------------------------------------------------------- html helpers

_e = html.escape


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{_e(alt)} · <code>{_e(path.name)}</code></figcaption></figure>')


def _num(value: Any, digits: int = 4) -> str:
    """Numbers for tables: ints with separators, metrics with `digits` decimals, tiny values (lr) in e-notation."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if 0 < size < 1e-3:
        return f"{value:.3g}"
    return f"{value:.{digits}f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv(pairs: list[tuple[str, str]]) -> str:
    return '<table class="kv"><tbody>' + "".join(
        f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


# ---------------------------------------------------------------- sections


def _headline_metrics(metrics: dict) -> list[str]:
    """The metrics shown first, as the file names them (evaluate/tasks.py defines each task's headline)."""
    return [k for k in metrics.get("headline") or () if isinstance(metrics.get(k), (int, float))]


def _train_losses(run: Run) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in run.log if "loss" in r]


def _peak(run: Run, key: str) -> float | None:
    values = [r[key] for r in run.log if isinstance(r.get(key), (int, float))]
    peak = (run.info.get("peak") or {}).get(key)
    values += [peak] if isinstance(peak, (int, float)) else []
    return max(values) if values else None


def _tokens_per_s(run: Run) -> str | None:
    """The run's tokens/s as the summary line shows it (all_results.json's train_tokens_per_s)."""
    value = run.results.get("train_tokens_per_s")
    return f"{value:.1f}" if isinstance(value, (int, float)) else None


def section_summary(run: Run) -> str:
    c = run.config
    cards: list[tuple[str, str]] = []
    losses = _train_losses(run)
    if losses:
        cards.append(("train loss", f"{_num(losses[0][1])} → {_num(losses[-1][1])}"))
    last_eval: dict[str, float] = {}  # the latest of each (one per eval dataset with eval_on_each_dataset)
    for record in run.log:
        last_eval.update(eval_losses(record))
    cards += [(label, _num(value)) for label, value in last_eval.items()]
    main = run.main_eval
    if main and main.metrics:
        for key in _headline_metrics(main.metrics)[:2]:
            value = _num(main.metrics[key])
            base = run.eval_named("base")
            if base and base.metrics and isinstance(base.metrics.get(key), (int, float)) and main is not base:
                value = f"{_num(base.metrics[key])} → {value}"
            cards.append((key.replace("_", " "), value))
    r = run.results
    if r.get("train_seconds") is not None:  # as the summary line: training, then evaluation during it
        cards.append(("train time", _seconds(r["train_seconds"])
                      + (f" + {_seconds(r['eval_seconds'])} eval" if r.get("eval_seconds") else "")))
    elif r.get("train_runtime") is not None:
        cards.append(("train time", _seconds(r["train_runtime"])))
    if run.info.get("wall_seconds") is not None:
        cards.append(("wall time", _seconds(run.info["wall_seconds"])))
    tps = _tokens_per_s(run)
    if tps:
        cards.append(("tokens / s", tps))
    peak = _peak(run, "peak_rss_mb") or _peak(run, "rss_mb")
    if peak:
        cards.append(("peak RSS", f"{peak / 1024:.2f} GiB"))
    hover = {"tokens / s": TOKENS_PER_S}
    card_html = "".join((f'<div class="card" title="{_e(hover[k])}">' if k in hover else '<div class="card">')
                        + f'<div class="k">{_e(k)}</div><div class="v">{v}</div></div>' for k, v in cards)
    facts = [
        ("model", _e(str(c.get("model_name_or_path", "—")))),
        ("method", _e(f"{c.get('stage', 'sft')} · {c.get('finetuning_type', '—')}")
         + (_e(f" (rank {c.get('lora_rank')})") if c.get("finetuning_type") in ("lora", "adalora") else "")),
        ("dataset", _e(", ".join(c.get("dataset") or []) or "—")
         + (_e(f" · eval: {', '.join(c['eval_dataset'])}") if c.get("eval_dataset") else "")),
        ("template · cutoff_len", _e(f"{c.get('template', '—')} · {c.get('cutoff_len', '—')}")),
        ("output_dir", f"<code>{_e(str(run.out.resolve()))}</code>"),
    ]
    if run.info.get("finished"):
        facts.append(("finished", _e(run.info["finished"])))
    return f'<div class="cards">{card_html}</div>' + _kv(facts)


def section_config(run: Run) -> str:
    if not run.config_text:
        return _note("No run_config.yaml in this directory.")
    text = redact_yaml(run.config_text)
    return ("<p>The fully resolved configuration (every key, defaults included); "
            "<code>instill train run_config.yaml</code> repeats the run.</p>"
            f"<details><summary>run_config.yaml ({len(text.splitlines())} lines)</summary>"
            f"<pre>{_e(text)}</pre></details>")


def section_environment(run: Run) -> str:
    env = run.info.get("environment")
    if not env:
        return _note("Not recorded (run_info.json is written at the end of <code>instill train</code>).")
    pairs = [(k.replace("_", " "), _e(str(v))) for k, v in env.items() if k != "packages"]
    packages = env.get("packages") or {}
    if packages:
        pairs.append(("packages", "<br>".join(f"{_e(k)} {_e(str(v))}" for k, v in packages.items())))
    return _kv(pairs)


def _pct(stats: dict | None) -> str:
    if not stats:
        return "—"
    return f"{stats['p50']} · {stats['p90']} · {stats['p99']} · {stats['p100']}"


def section_data(run: Run) -> str:
    if not run.data or not run.data.get("sets"):
        return _note("No data_summary.json (written by <code>instill train</code>).")
    rows = []
    for name, s in run.data["sets"].items():
        reasons = "; ".join(f"{n} {r}" for r, n in (s.get("dropped_reasons") or {}).items())
        rows.append([
            _e(name), _num(s["rows"]), _num(s["kept"]),
            _num(s["dropped"]) + (f'<div class="small">{_e(reasons)}</div>' if reasons else ""),
            f"{_num(s['truncated'])} ({_num(s['response_cut'])} answers cut)",
            _num(s["tokens"]), _num(s["trained_tokens"]),
            _pct(s.get("prompt_tokens")), _pct(s.get("response_tokens")), _pct(s.get("total_tokens")),
        ])
    cutoff = run.data.get("cutoff_len")
    table = _table(["split", "rows", "kept", "dropped", "truncated", "tokens", "trained tokens",
                    "prompt p50·p90·p99·max", "answer p50·p90·p99·max", "total p50·p90·p99·max"], rows)
    png = plots.plot_token_lengths(run.data, run.out)
    return (f"<p>Token counts after truncation to cutoff_len {_e(str(cutoff))}. A sample left with no answer "
            "token is dropped; a truncated sample is cut in the prompt's middle first.</p>" + table
            + _img(png, "Tokens per sample"))


def section_training(run: Run) -> str:
    log_path = run.out / "trainer_log.jsonl"
    if not run.log:
        return _note("No trainer_log.jsonl: this directory holds no training run.")
    parts = [_img(plots.plot_loss(log_path, run.out), "Training loss"),
             _img(plots.plot_learning_rate(log_path, run.out), "Learning rate and gradient norm"),
             _img(plots.plot_rewards(log_path, run.out), "Rewards")]
    r = run.results
    steps = max((x["step"] for x in run.log), default=0)
    pairs = [("optimizer steps", _num(steps)),
             ("epochs", _num(r.get("epoch", max((x.get("epoch", 0) for x in run.log), default=0)), 2)),
             ("mean train loss", _num(r.get("train_loss"))),
             *([(f"final {label}", _num(value)) for label, value in eval_losses(r).items()]
               or [("final eval loss", "—")]),
             ("input tokens seen", _num(r.get("num_input_tokens_seen")))]
    parts.append(_kv(pairs))
    parts.append(_completions(run.out / "completions.jsonl"))
    return "".join(parts)


def _completions(path: Path) -> str:
    """Online stages: the sampled answers of the first and last logged step, with each reward."""
    rows = plots.read_log(path) if path.is_file() else []
    if not rows:
        return ""
    steps = sorted({r["step"] for r in rows})
    shown = [r for r in rows if r["step"] in (steps[0], steps[-1])]
    rewards = list(dict.fromkeys(k for r in shown for k in r if k not in ("step", "prompt", "completion")))
    table = _table(["step", "prompt (end)", "answer", *rewards],
                   [[str(r["step"]), _cell(r.get("prompt"), 200), _cell(r.get("completion")),
                     *(_num(r.get(k), 3) if r.get(k) is not None else "—" for k in rewards)] for r in shown],
                   "samples")
    return (f"<h3>Sampled answers</h3><p>Answers sampled at step {steps[0]} and step {steps[-1]} with their "
            "rewards (every logged step is in completions.jsonl).</p>" + table)


def _metrics_table(run: Run) -> str:
    if run.comparison:
        def better(key: str, delta: float) -> str:  # green when the tuned model is better
            sign = -delta if key.endswith("_rate") or "loss" in key else delta
            return "up" if sign > 0 else "down" if sign < 0 else ""

        rows = [[_e(k), _num(v["base"]), _num(v["tuned"]), f'<span class="{better(k, v["delta"])}">{v["delta"]:+.4f}</span>']
                for k, v in (run.comparison.get("metrics") or {}).items()]
        return "<h3>Base vs tuned</h3>" + _table(["metric", "base", "tuned", "delta"], rows, "num")
    main = run.main_eval
    if not main or not main.metrics:
        return ""
    m = main.metrics
    keys = _headline_metrics(m) + [k for k, v in m.items() if k not in (m.get("headline") or ())
                                    and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return "<h3>Metrics</h3>" + _table(["metric", "value"], [[_e(k), _num(m[k])] for k in keys], "num")


def _per_class(metrics: dict, model: str) -> str:
    per = metrics.get("per_class") or metrics.get("per_type")
    if not per:
        return ""
    kind = "class" if "per_class" in metrics else "entity type"
    cols = [c for c in ("precision", "recall", "f1", "support", "predicted") if any(c in v for v in per.values())]
    rows = [[_e(str(label))] + [_num(v.get(c)) for c in cols] for label, v in per.items()]
    return f"<h3>Per {kind} ({_e(model)} model)</h3>" + _table([kind, *cols], rows, "num")


def section_evaluation(run: Run) -> str:
    main = run.main_eval
    if main is None:
        return _note("No evaluation yet: <code>instill eval config.yaml</code> writes eval/metrics.json and "
                     "predictions; <code>--compare base</code> adds the base model side by side.")
    m = main.metrics or {}
    head = ""
    if m:
        model = m.get("model") or {}
        mode = (m.get("mode") or "—") + (f", {m['calibration']} calibration" if m.get("calibration") else "")
        head = _kv([("task", _e(f"{m.get('task', '—')} ({mode})")),
                    ("samples", _num(m.get("samples", m.get("n")))),
                    ("model", _e(str(model.get("model_name_or_path", "—")))
                     + "".join(f" + {_e(a)}" for a in (model.get("adapters") or []))),
                    ("prompts truncated", _num(m.get("prompts_truncated")))])
    parts = [head, _metrics_table(run)]
    figures = [_img(e.confusion_png, f"Confusion matrix ({e.name})") for e in run.evals if e.metrics]
    parts.append('<div class="row">' + "".join(figures) + "</div>")
    parts.append(_per_class(m, main.name))
    if run.task_metrics is not None:
        parts.append(_img(plots.plot_eval_metrics(run.task_metrics, run.out), "Task metrics during training"))
    return "".join(parts)


def _pm(value: Any, stderr: Any) -> str:
    return _num(value) + (f' <span style="color:var(--muted)">± {_num(stderr)}</span>' if isinstance(stderr, (int, float)) else "")


def section_general(run: Run) -> str:
    """Standard benchmarks (eval/benchmarks.json): did tuning cost general ability?"""
    b = run.benchmarks
    if not b or not b.get("models"):
        return _note("No benchmarks yet: <code>instill eval config.yaml --benchmarks mmlu,gsm8k --compare base</code> "
                     "scores standard benchmarks (lm-evaluation-harness) on the base and tuned models.")
    models = b["models"]
    facts = [("benchmarks", _e(", ".join(map(str, b.get("benchmarks") or [])))),
             ("questions per task", _e(f"at most {b['limit']}") if b.get("limit") else "all"),
             ("data", _e(str(b.get("benchmark_dir") or "lm-eval's own tasks (hub)")))]
    facts += [(f"{name} model", _e(str((r.get("model") or {}).get("model_name_or_path", "—")))
               + "".join(f" + {_e(str(a))}" for a in ((r.get("model") or {}).get("adapters") or []))
               + f" · {_seconds(r.get('seconds'))}") for name, r in models.items()]
    if b.get("comparison"):
        rows = [[_e(str(r["benchmark"])), _e(str(r["metric"])), _pm(r["base"], r.get("base_stderr")),
                 _pm(r["tuned"], r.get("tuned_stderr")),
                 f'<span class="{"up" if r["delta"] > 0 else "down" if r["delta"] < 0 else ""}">{r["delta"]:+.4f}</span>']
                for r in b["comparison"]]
        body = "<h3>Base vs tuned</h3>" + _table(["benchmark", "metric", "base", "tuned", "delta"], rows, "num")
    else:
        (name, report), = list(models.items())[:1]
        rows = [[_e(str(task)), _e(str(metric)), _pm(m.get("value"), m.get("stderr"))]
                for task, metrics in report["results"].items() for metric, m in metrics.items()]
        body = f"<h3>{_e(name)} model</h3>" + _table(["benchmark", "metric", name], rows, "num")
    return _kv(facts) + body + "<p>± is the standard error reported by the harness.</p>"


def _cell(text: Any, limit: int = 600) -> str:
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return f"<div class=\"text\">{_e(text)}</div>"
    return (f"<details><summary class=\"text\">{_e(text[:limit // 2])} …</summary>"
            f"<div class=\"text\">{_e(text)}</div></details>")


def section_samples(run: Run) -> str:
    main = run.main_eval
    if main is None or not main.predictions:
        return _note("No predictions yet (<code>instill eval</code> writes eval/predictions.jsonl).")
    picked = pick_samples(main.predictions, 20)
    base = run.eval_named("base") if main.name != "base" else None
    base_by_id = {r.get("id"): r for r in base.predictions} if base else {}
    header = ["#", "", "prompt", "prediction", "reference"] + (["base model"] if base_by_id else [])
    rows = []
    for i, r in enumerate(picked, 1):
        verdict = {True: '<span class="ok">✓</span>', False: '<span class="bad">✗</span>'}.get(r.get("correct"), "")
        pred = r.get("prediction")
        if "candidates" in r and r.get("label") is None:
            pred = f"{pred}\n[no label found]" if str(pred).strip() else "[empty output: no label]"
        elif r.get("label") is not None and str(r.get("label")) != str(pred).strip():
            pred = f"{pred}\n[label: {r['label']}]"
        elif not str(pred).strip():
            pred = "[empty output]"
        row = [str(i), verdict, _cell(r.get("prompt")) + f'<div class="small">{_e(str(r.get("id", "")))}</div>',
               _cell(pred), _cell(r.get("reference"))]
        if base_by_id:
            b = base_by_id.get(r.get("id"), {})
            mark = {True: "✓ ", False: "✗ "}.get(b.get("correct"), "")
            row.append(_cell(mark + str(b.get("prediction", ""))))
        rows.append(row)
    right = sum(1 for r in main.predictions if r.get("correct") is True)
    wrong = sum(1 for r in main.predictions if r.get("correct") is False)
    intro = (f"<p>{len(picked)} of {len(main.predictions)} predictions ({main.name} model; "
             f"{right} correct, {wrong} wrong in all), wrong and correct ones both shown.</p>")
    return intro + _table(header, rows, "samples")


def section_performance(run: Run) -> str:
    r, tps = run.results, _tokens_per_s(run)
    cpu = [x["cpu_percent"] for x in run.log if isinstance(x.get("cpu_percent"), (int, float))]
    pairs = [
        ("wall time (whole run)", _seconds(run.info.get("wall_seconds"))),
        ("time in trainer.train(), evaluation included", _seconds(r.get("train_runtime"))),
        ("of which evaluation", _seconds(r.get("eval_seconds"))),
        ("training time (what tokens / s divides by)", _seconds(r.get("train_seconds"))),
        ("tokens / s", tps or "—"),
        ("train samples / s", _num(r.get("train_samples_per_s"))),
        ("seconds / optimizer step", _num(r.get("train_s_per_step"))),
        ("padding (padded / all batch tokens)", f"{100 * r['padding_ratio']:.1f}%" if "padding_ratio" in r else "—"),
        ("shared prefix (tokens run once a batch / all tokens)",
         f"{100 * r['shared_prefix_ratio']:.1f}%" if "shared_prefix_ratio" in r else "—"),
        ("MFU (see README: Speed)", f"{100 * r['mfu']:.2f}% of {r['peak_tflops']:g} TFLOP/s" if "mfu" in r else "—"),
        ("peak RSS", f"{_peak(run, 'peak_rss_mb') / 1024:.2f} GiB" if _peak(run, "peak_rss_mb") else "—"),
        ("process CPU % (median; 100 = one core)", _num(statistics.median(cpu), 1) if cpu else "—"),
    ]
    gpu = _peak(run, "gpu_peak_mem_mb") or _peak(run, "gpu_mem_mb")
    if gpu:
        pairs.append(("peak GPU memory", f"{gpu / 1024:.2f} GiB"))
    for e in run.evals:
        if e.metrics and e.metrics.get("samples_per_second"):
            pairs.append((f"eval ({e.name}) samples / s", _num(e.metrics["samples_per_second"])))
    threads = (run.info.get("environment") or {}).get("torch_threads")
    if threads:
        pairs.append(("torch threads", _num(threads)))
    return (f"<p>tokens / s = {_e(TOKENS_PER_S)}: the figure of the run's summary line and all_results.json; "
            "the plot shows it per logging interval.</p>"
            + _kv(pairs) + _img(plots.plot_throughput(run.out / "trainer_log.jsonl", run.out), "Throughput and memory"))


_SECTION_BUILDERS: dict[str, tuple[str, Callable[[Run], str]]] = {
    "summary": ("Summary", section_summary),
    "config": ("Run config", section_config),
    "environment": ("Environment", section_environment),
    "data": ("Data", section_data),
    "training": ("Training", section_training),
    "evaluation": ("Evaluation", section_evaluation),
    "general": ("General ability", section_general),
    "samples": ("Sample predictions", section_samples),
    "performance": ("Throughput and memory", section_performance),
}

_CSS = """
:root{--fg:#1d232a;--muted:#5b6670;--line:#dde3e8;--accent:#08519c;--bg:#fff;--soft:#f5f7f9}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans CJK SC",
"Source Han Sans SC","WenQuanYi Micro Hei","PingFang SC","Microsoft YaHei",sans-serif;color:var(--fg);background:var(--bg)}
header{padding:24px 32px;background:var(--soft);border-bottom:1px solid var(--line)}
header h1{margin:0 0 4px;font-size:24px}header p{margin:0;color:var(--muted)}
nav{padding:8px 32px;border-bottom:1px solid var(--line);position:sticky;top:0;background:var(--bg);z-index:1}
nav a{margin-right:16px;color:var(--accent);text-decoration:none}
main{padding:8px 32px 48px;max-width:1200px}
section{margin-top:28px}h2{border-bottom:2px solid var(--line);padding-bottom:4px;font-size:20px}
h3{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:var(--soft)}table.kv th{background:var(--soft);font-weight:600;white-space:nowrap}
table.num td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}
table.samples td{max-width:360px}table.samples .text{white-space:pre-wrap;word-break:break-word}
pre{background:var(--soft);padding:12px;overflow:auto;font-size:13px;border:1px solid var(--line)}
figure{margin:12px 0;display:inline-block}figure img{max-width:100%;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:13px}.row{display:flex;flex-wrap:wrap;gap:16px}
.row figure{flex:1 1 420px;max-width:640px}.row figure img{width:100%}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:130px;background:var(--soft)}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}.card .v{font-size:19px;font-weight:600}
.note{color:var(--muted);font-style:italic}.small{color:var(--muted);font-size:12px}
.ok{color:#238b45;font-weight:700}.bad{color:#cb181d;font-weight:700}.up{color:#238b45}.down{color:#cb181d}
.error{color:#cb181d}code{font-size:13px}
"""


def render(run: Run) -> str:
    """The report page for a run, as one HTML string."""
    import warnings as _warnings

    body = []
    for key in SECTIONS:
        title, build = _SECTION_BUILDERS[key]
        try:
            with _warnings.catch_warnings():
                _warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
                content = build(run)
        except Exception as err:  # noqa: BLE001 - one broken section must not lose the report
            warnings.warn(f"report section '{key}' failed: {type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
            content = f'<p class="error">This section could not be rendered: {_e(type(err).__name__)}: {_e(str(err))}</p>'
        body.append(f'<section id="{key}"><h2>{_e(title)}</h2>{content}</section>')
    nav = "".join(f'<a href="#{k}">{_e(_SECTION_BUILDERS[k][0])}</a>' for k in SECTIONS)
    generated = datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>instill report · {_e(run.name)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>instill run report · {_e(run.name)}</h1>"
        f"<p>{_e(str(run.out.resolve()))} · generated {_e(generated)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(body)}</main></body></html>\n"
    )


def write_report(output_dir: str | Path) -> Path:
    """Write output_dir/report.html (and its PNGs beside it); returns the report's path."""
    out = Path(output_dir)
    if not out.is_dir():
        raise ReportError(f"{out} is not a directory (give a run's output_dir)")
    if not any((out / name).exists() for name in ("run_config.yaml", "trainer_log.jsonl", "eval")):
        raise ReportError(f"{out} holds no run: no run_config.yaml, trainer_log.jsonl or eval/ in it")
    path = out / "report.html"
    path.write_text(render(Run.read(out)), encoding="utf-8")
    return path


def try_write_report(output_dir: str | Path) -> Path | None:
    """`write_report` for the end of a run: a failure warns (the model and results are saved) instead of raising."""
    try:
        return write_report(output_dir)
    except Exception as err:  # noqa: BLE001 - a report failure must not fail a finished run
        warnings.warn(f"could not write the run report ({type(err).__name__}: {err}); "
                      f"try `instill report {output_dir}`", RuntimeWarning, stacklevel=2)
        return None
