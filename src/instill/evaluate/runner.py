"""`instill eval` / `instill predict`: samples -> model -> predictions.jsonl, metrics.json, plots.

The model evaluated ("tuned") is, in order: base + `adapter_name_or_path`; base + the adapter
that training wrote to `output_dir`; the full model training wrote to `output_dir`. With none
of these the base model is evaluated. `--compare base` runs the base model too and prints one
table (`comparison.json`). Samples come from `samples`, the task registry from `tasks`.
"""

from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path
from typing import Any

from instill.config import RunConfig
from instill.console import say
from instill.data.dataset import load_examples
from instill.data.templates import TemplateChoice
from instill.errors import ConfigError, DataError
from instill.evaluate.samples import Sample, load_samples
from instill.evaluate.tasks import TASKS, settings_from
from instill.infer.engine import Generator, load_generator
from instill.infer.vllm_engine import load_vllm_generator
from instill.model.choice import ModelChoice, choose_model
from instill.model.load import Precision
from instill.report.html import try_write_report
from instill.report.plots import plot_confusion_matrix, plotted_confusion
from instill.tracking.trackers import log_eval_results

# ---------------------------------------------------------------- models


def _load(config: RunConfig, choice: ModelChoice):
    import torch

    if config.model.torch_num_threads:
        torch.set_num_threads(config.model.torch_num_threads)
    precision = Precision(config.train.bf16, config.train.fp16)
    if config.model.infer_backend == "vllm":
        return load_vllm_generator(choice.model_args, TemplateChoice.of(config.data), choice.adapters, precision)
    return load_generator(choice.model_args, TemplateChoice.of(config.data), choice.adapters, precision)


# ---------------------------------------------------------------- running


def check_samples(samples: list[Sample], config: RunConfig, with_metrics: bool = True,
                  extra_answers: list[str] = ()) -> Any:
    """Everything about the data that can fail, checked before a model loads; returns the task's plan."""
    with_images = [x.id for x in samples if x.images]
    if with_images and config.eval.eval_mode == "score":
        raise DataError(f"{with_images[0]}: eval_mode: score does not read images ({len(with_images)} rows have "
                        "them); use eval_mode: generate")
    if with_metrics:
        missing = [x.id for x in samples if x.answer is None]
        if missing:
            raise DataError(f"{missing[0]}: no reference answer to score against ({len(missing)} such rows); "
                            "use instill predict for rows without answers")
    task = TASKS[config.eval.eval_task]
    if task.prepare is None:
        raise ConfigError(f"eval_task: {config.eval.eval_task} is evaluated by `instill eval` only, not on samples")
    return task.prepare(samples, config, extra_answers)


def evaluate_samples(generator, samples: list[Sample], config: RunConfig, with_metrics: bool = True,
                     progress: bool = True, extra_answers: list[str] = (), plan: Any = None) -> tuple[list[dict], dict]:
    """Prediction rows and a report: run facts, plus the task metrics when `with_metrics`."""
    s = settings_from(config)
    task = TASKS[s.task]
    if plan is None:
        plan = check_samples(samples, config, with_metrics, extra_answers)
    started = time.perf_counter()
    rows, info = task.predict(generator, samples, plan, s, progress)
    seconds = time.perf_counter() - started
    report: dict[str, Any] = {"task": s.task, "mode": s.mode, "samples": len(rows), "seconds": round(seconds, 3),
                              "samples_per_second": round(len(rows) / seconds, 4) if seconds else None,
                              "prompts_truncated": info["prompts_truncated"]}
    if "label_template" in info:
        report["label_template"] = info["label_template"]
    if "label_prior" in info:
        report["calibration"] = s.calibration
        report["label_prior"] = info["label_prior"]
    if with_metrics:
        report.update(task.score(rows, info))
        report["headline"] = list(task.headline)  # report.html leads with these (report/ cannot import evaluate/)
    return rows, report


def summary(name: str, report: dict) -> str:
    head = f"{name}: {report['task']} ({report['mode']}), {report['samples']} samples in {report['seconds']:.1f} s " \
           f"({report['samples_per_second'] or 0:.2f} samples/s)"
    shown = [k for k in TASKS[report["task"]].headline if k in report][:3]
    return head + ("; " + " · ".join(f"{k} {report[k]:.4f}" for k in shown) if shown else "")


def _write(out_dir: Path, rows: list[dict], report: dict | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    if report is not None:
        (out_dir / "metrics.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        if "confusion_matrix" in report:
            plot_confusion_matrix(plotted_confusion(report["confusion_matrix"], report["labels"]), report["labels"],
                                  out_dir / "confusion_matrix.png",
                                  title=f"{report['task']} ({report['mode']}): accuracy {report['accuracy']:.3f}")


def _training_answers(config: RunConfig) -> list[str]:
    """Answers of the training data: classification labels can come from there."""
    e = config.eval
    if e.eval_task != "classification" or e.labels or e.choices_column or not config.data.dataset:
        return []
    examples = load_examples(config.data.dataset, config.data, config.train.seed)
    if e.label_column:
        return [str(x.extras[e.label_column]) for x in examples if e.label_column in x.extras]
    return [x.messages[-1]["content"] for x in examples if not x.messages[-1].get("tool_calls")]


def run(config: RunConfig, input_path: str | Path | None = None, output_dir: str | Path | None = None,
        which: str = "auto", compare_base: bool = False, with_metrics: bool = True,
        llamafactory_predictions: bool = False) -> dict[str, dict]:
    """Evaluate (or just predict) with the chosen model(s); returns {model name: report}.

    `llamafactory_predictions` (do_predict) also writes output_dir/generated_predictions.jsonl.
    """
    task = TASKS[config.eval.eval_task]
    if task.run is not None:  # preference: pairs scored by log-likelihood, not generated answers
        return task.run(config, output_dir, which, compare_base, task.headline)
    samples = load_samples(config, input_path)
    plan = check_samples(samples, config, with_metrics, _training_answers(config))
    out = Path(output_dir) if output_dir else Path(config.train.output_dir) / "eval"
    choices = [choose_model(config, "base"), choose_model(config, "tuned")] if compare_base else \
        [choose_model(config, which)]
    reports: dict[str, dict] = {}
    for choice in choices:
        say(f"{'evaluating' if with_metrics else 'predicting with'} {choice.name} model: {choice.describe()}")
        generator = _load(config, choice)
        rows, report = evaluate_samples(generator, samples, config, with_metrics, plan=plan)
        report["model"] = {"name": choice.name, "model_name_or_path": choice.model_args.model_name_or_path,
                           "adapters": choice.adapters}
        target = out / choice.name if compare_base else out
        _write(target, rows, report if with_metrics else None)
        if llamafactory_predictions:
            _write_llamafactory(Path(config.train.output_dir) / "generated_predictions.jsonl", rows)
        say(summary(choice.name, report) + f"; written to {target}")
        reports[choice.name] = report
        del generator
    if compare_base:
        table, comparison = compare(reports["base"], reports["tuned"])
        print(table, flush=True)
        (out / "comparison.json").write_text(json.dumps(comparison, ensure_ascii=False, indent=2), encoding="utf-8")
    if with_metrics and output_dir is None and Path(config.train.output_dir).is_dir():
        # Refresh the run's trackers and report.html with these results (both never raise).
        log_eval_results(config, out)
        report_path = try_write_report(config.train.output_dir)
        if report_path:
            say(f"report: {report_path}")
    return reports


def _write_llamafactory(path: Path, rows: list[dict]) -> None:
    """The rows as LLaMA-Factory's do_predict writes them ({prompt, predict, label}), for scripts that read that file."""
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"prompt": row["prompt"], "predict": row["prediction"], "label": row["reference"]},
                                ensure_ascii=False) + "\n")
    say(f"LLaMA-Factory-style predictions: {path}")


def _display_width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def compare(base: dict, tuned: dict) -> tuple[str, dict]:
    """A side-by-side table (text) and its JSON form: headline metrics, per-class F1, speed."""
    task = TASKS[base["task"]]
    names = [k for k in task.headline if k in base]
    values = {k: (base[k], tuned[k]) for k in names}
    if task.per_key:
        for label in dict.fromkeys([*base[task.per_key], *tuned[task.per_key]]):
            pair = tuple(report[task.per_key].get(label, {}).get("f1", 0.0) for report in (base, tuned))
            values[f"f1 [{label}]"] = pair
    values["samples/s"] = (base["samples_per_second"] or 0.0, tuned["samples_per_second"] or 0.0)
    width = max(_display_width(k) for k in values) + 2
    lines = [f"{'metric':<{width}}{'base':>12}{'tuned':>12}{'delta':>12}"]
    for key, (b, t) in values.items():
        lines.append(f"{key}{' ' * (width - _display_width(key))}{b:>12.4f}{t:>12.4f}{t - b:>+12.4f}")
    comparison = {"task": base["task"], "mode": base["mode"], "samples": base["samples"],
                  "base": base["model"], "tuned": tuned["model"],
                  "metrics": {k: {"base": b, "tuned": t, "delta": t - b} for k, (b, t) in values.items()}}
    return "\n".join(lines), comparison


# ---------------------------------------------------------------- during training


def task_metrics_callback(config: RunConfig, tokenizer: Any, template: Any, media: Any = None) -> Any:
    """A TrainerCallback that runs the eval task on the evaluation samples at every evaluation.

    The headline metrics join Trainer's eval metrics as ``eval_<name>`` (so they reach
    eval_results.json and ``state.log_history``) and each run appends one line to
    ``output_dir/eval/task_metrics.jsonl``. Wire it in with ``callbacks=[...]`` when ``do_eval`` is set.
    `media`: a vision-language model's image side, for samples with images.
    """
    from transformers import TrainerCallback


    samples = load_samples(config)
    plan = check_samples(samples, config, True, _training_answers(config))
    path = Path(config.train.output_dir) / "eval" / "task_metrics.jsonl"

    class TaskMetrics(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            _, report = evaluate_samples(Generator(model, tokenizer, template, media), samples, config,
                                         progress=False, plan=plan)
            values = {f"eval_{k}": report[k] for k in TASKS[report["task"]].headline if k in report}
            if metrics is not None:
                metrics.update(values)
            state.log_history.append({**values, "step": state.global_step})
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **values}) + "\n")
            say(summary(f"step {state.global_step}", report))

    return TaskMetrics()
