"""`instill eval` / `instill predict`: samples -> model -> predictions.jsonl, metrics.json, plots.

A sample is a dataset row's conversation without its final assistant turn (the prompt) and that
turn's content (the reference). Rows come from `eval_dataset`, else the `val_size` split of
`dataset` (the same held-out rows training used), else an `--input` file whose rows may lack
the answer (predict only).

The model evaluated ("tuned") is, in order: base + `adapter_name_or_path`; base + the adapter
that training wrote to `output_dir`; the full model training wrote to `output_dir`. With none
of these the base model is evaluated. `--compare base` runs the base model too and prints one
table (`comparison.json`).

Tasks are one registry (`TASKS`), each a function from (generator, samples, settings) to
prediction rows plus a function from rows to metrics; the metrics themselves live in
`classify`, `ner` and `textgen`.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instill.config import ModelArgs, RunConfig
from instill.data.dataset import load_examples, split_examples
from instill.data.example import Example
from instill.data.formats import fill_placeholders, to_example
from instill.data.registry import DatasetSpec, read_rows
from instill.errors import ConfigError, DataError
from instill.evaluate.classify import (
    _ANSWER_TAG, _last_boxed, classification_metrics, match_label, normalize, parse_label_set, plot_confusion_matrix,
)
from instill.evaluate.ner import ner_metrics, parse_entities
from instill.evaluate.textgen import generation_metrics


def _say(message: str) -> None:
    print(f"[instill] {message}", flush=True)


# ---------------------------------------------------------------- samples


@dataclass
class Sample:
    id: str  # the row's source, e.g. data/x.jsonl:17
    prompt: list[dict]
    answer: str | None  # the final assistant content; None when the row has none
    tools: list[dict] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _sample(example: Example, answered: bool = True) -> Sample:
    messages = example.messages
    if answered:
        if messages[-1].get("tool_calls"):
            raise DataError(f"{example.source}: the final answer is a tool call; eval scores text answers only")
        return Sample(example.source, messages[:-1], messages[-1]["content"], example.tools, example.extras)
    return Sample(example.source, messages[:-1], None, example.tools, example.extras)


def load_samples(config: RunConfig, input_path: str | Path | None = None) -> list[Sample]:
    """The evaluation samples the config (or an --input file) names, capped at eval_max_samples."""
    data, seed = config.data, config.train.seed
    if input_path is not None:
        samples = _input_samples(Path(input_path), config)
    elif data.eval_dataset:
        samples = [_sample(e) for e in load_examples(data.eval_dataset, data, seed)]
    elif data.val_size and data.dataset:
        samples = [_sample(e) for e in split_examples(load_examples(data.dataset, data, seed), data.val_size, seed)[1]]
    else:
        raise ConfigError("nothing to evaluate: set eval_dataset (or val_size with dataset), or pass --input FILE")
    return samples[: config.eval.eval_max_samples] if config.eval.eval_max_samples else samples


def _input_samples(path: Path, config: RunConfig) -> list[Sample]:
    """Rows of a json/jsonl/csv/parquet file in openai, sharegpt or alpaca shape; the answer is optional."""
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    rows = list(read_rows(DatasetSpec(name=path.name, file_name=str(path.resolve())), path.parent))
    keys = rows[0][1]
    if "messages" in keys or "conversations" in keys:
        column = "messages" if "messages" in keys else "conversations"
        spec = DatasetSpec(name=path.name, formatting="openai" if column == "messages" else "sharegpt",
                           columns={"messages": column})
    elif "instruction" in keys:
        extra = {k: k for k in ("system", "history") if k in keys}
        spec = DatasetSpec(name=path.name, formatting="alpaca", columns=extra)
    else:
        raise DataError(f"{rows[0][0]}: cannot tell the row format from its keys ({', '.join(map(str, keys))}); "
                        "expected 'messages' (openai), 'conversations' (sharegpt) or 'instruction'/'input'/'output'")
    samples = []
    for source, row in rows:
        row, answered = _with_placeholder_answer(row, spec)
        example = to_example(row, spec, source)
        if config.data.dataset_placeholders:
            example = fill_placeholders(example, config.data.dataset_placeholders)
        samples.append(_sample(example, answered))
    return samples


def _with_placeholder_answer(row: dict, spec: DatasetSpec) -> tuple[dict, bool]:
    """The row, with a stand-in final answer if it has none (dropped again after parsing)."""
    if spec.formatting == "alpaca":
        column = spec.columns["response"]
        if isinstance(row.get(column), str) and row[column].strip():
            return row, True
        return {**row, column: "-"}, False
    turns = row.get(spec.columns["messages"])
    if not isinstance(turns, list) or not turns or not isinstance(turns[-1], dict):
        return row, True  # let the format report what is wrong
    role_key = "role" if "role" in turns[0] else spec.tags["role_tag"]
    content_key = "content" if role_key == "role" else spec.tags["content_tag"]
    assistant = "assistant" if role_key == "role" else spec.tags["assistant_tag"]
    if turns[-1].get(role_key) == assistant:
        return row, True
    return {**row, spec.columns["messages"]: [*turns, {role_key: assistant, content_key: "-"}]}, False


# ---------------------------------------------------------------- settings


@dataclass
class Settings:
    task: str
    mode: str
    batch_size: int
    max_new_tokens: int
    temperature: float
    top_p: float
    max_prompt_tokens: int


def settings_from(config: RunConfig) -> Settings:
    e, t = config.eval, config.train
    batch = e.eval_batch_size or (t.per_device_eval_batch_size if "per_device_eval_batch_size" in t.model_fields_set else 8)
    new_tokens = e.max_new_tokens or (64 if e.eval_task == "classification" else 512)
    return Settings(e.eval_task, e.eval_mode, batch, new_tokens, e.temperature if e.do_sample else 0.0,
                    e.top_p, config.data.cutoff_len)


def _generate(generator, samples: list[Sample], s: Settings, progress: bool) -> tuple[list[str], int]:
    prompts, cut = generator.encode_prompts([x.prompt for x in samples], [x.tools for x in samples],
                                            s.max_prompt_tokens)
    outputs = generator.generate_ids(prompts, s.max_new_tokens, s.batch_size, s.temperature, s.top_p, progress)
    return outputs, cut


# ---------------------------------------------------------------- classification


def _label_in(answer: str) -> str:
    """The label written in an answer: inside the last <answer>..</answer>, then the last \\boxed{..}."""
    tags = _ANSWER_TAG.findall(answer)
    text = tags[-1] if tags else answer
    boxed = _last_boxed(text)
    return (boxed if boxed is not None else text).strip()


@dataclass
class LabelPlan:
    """Per-sample candidates and gold labels, the union label set, and the answer template."""

    candidates: list[list[str]]
    gold: list[str | None]
    labels: list[str]
    template: str


def plan_labels(samples: list[Sample], config: RunConfig, extra_answers: list[str] = ()) -> LabelPlan:
    """Resolve candidates (choices_column > labels > the reference labels) and each sample's gold label."""
    e = config.eval
    raw_gold = []
    for x in samples:
        if e.label_column:
            if e.label_column not in x.extras:
                raise DataError(f"{x.id}: no column '{e.label_column}' (label_column); row has: "
                                f"{', '.join(map(str, x.extras)) or 'no extra columns'}")
            raw_gold.append(str(x.extras[e.label_column]))
        else:
            raw_gold.append(x.answer)
    shared: list[str] | None = None
    if not e.choices_column:
        if e.labels:
            shared = parse_label_set(e.labels)
        else:
            found = [_label_in(a) for a in [*raw_gold, *extra_answers] if a is not None]
            if not found:
                raise ConfigError("classification needs candidate labels: set labels or choices_column, "
                                  "or evaluate rows that have reference answers")
            by_key: dict[str, str] = {}
            for label in sorted(found):
                if normalize(label):
                    by_key.setdefault(normalize(label), label)
            shared = parse_label_set(list(by_key.values()))
    canonical: dict[str, str] = {}  # normalised -> first spelling, so rows agree on one name per label
    candidates, gold = [], []
    for x, raw in zip(samples, raw_gold):
        if shared is None:
            if e.choices_column not in x.extras:
                raise DataError(f"{x.id}: no column '{e.choices_column}' (choices_column); row has: "
                                f"{', '.join(map(str, x.extras)) or 'no extra columns'}")
            try:
                row_labels = parse_label_set(x.extras[e.choices_column])
            except DataError as err:
                raise DataError(f"{x.id}: column '{e.choices_column}': {err}") from None
        else:
            row_labels = shared
        row_labels = [canonical.setdefault(normalize(label), label) for label in row_labels]
        keys = {normalize(label): label for label in row_labels}
        if raw is None:
            gold.append(None)
        elif normalize(raw) in keys:
            gold.append(keys[normalize(raw)])
        else:
            raise DataError(f"{x.id}: reference label {raw!r} is not among the candidates {row_labels}")
        candidates.append(row_labels)
    template = e.label_template or _infer_template(samples, gold)
    return LabelPlan(candidates, gold, list(dict.fromkeys(canonical.values())), template)


def _infer_template(samples: list[Sample], gold: list[str | None]) -> str:
    """The most common answer shape around the gold label (e.g. '\\boxed{{label}}'), else '{label}'."""
    shapes = Counter(x.answer.replace(g, "{label}") for x, g in zip(samples, gold)
                     if g is not None and x.answer is not None and x.answer.count(g) == 1)
    return shapes.most_common(1)[0][0] if shapes else "{label}"


def predict_classification(generator, samples: list[Sample], plan: LabelPlan, s: Settings,
                           progress: bool) -> tuple[list[dict], dict]:
    rows = [{"id": x.id, "prompt": x.prompt[-1]["content"], "reference": g, "candidates": c}
            for x, g, c in zip(samples, plan.gold, plan.candidates)]
    if s.mode == "score":
        from instill.infer.score import score_labels

        results = score_labels(generator, [x.prompt for x in samples], plan.candidates, plan.template,
                               s.batch_size, max_prompt_tokens=s.max_prompt_tokens, tools=[x.tools for x in samples],
                               progress=progress)
        cut = sum(r.truncated for r in results)
        for row, r in zip(rows, results):
            row.update(prediction=plan.template.replace("{label}", r.label), label=r.label,
                       confidence=round(r.confidence, 6), scores={k: round(v, 4) for k, v in r.scores.items()})
    else:
        outputs, cut = _generate(generator, samples, s, progress)
        for row, out in zip(rows, outputs):
            row.update(prediction=out, label=match_label(out, row["candidates"]))
    for row in rows:
        row["correct"] = None if row["reference"] is None else row["label"] == row["reference"]
    return rows, {"labels": plan.labels, "label_template": plan.template, "prompts_truncated": cut}


def classification_scores(rows: list[dict], info: dict) -> dict:
    return classification_metrics([r["reference"] for r in rows], [r["label"] for r in rows], info["labels"])


# ---------------------------------------------------------------- ner and generation


def ner_references(samples: list[Sample], config: RunConfig, extra_answers: list[str] = ()) -> list:
    """Each sample's gold entities, parsed before any model loads (None for rows without an answer)."""
    references = []
    for x in samples:
        entities = None if x.answer is None else parse_entities(x.answer)
        if x.answer is not None and entities is None:
            raise DataError(f"{x.id}: the reference answer is not NER output (JSON lines of "
                            f"{{\"entity_text\", \"entity_label\"}} or 没有找到任何实体): {x.answer[:60]!r}")
        references.append(entities)
    return references


def predict_ner(generator, samples: list[Sample], references: list, s: Settings,
                progress: bool) -> tuple[list[dict], dict]:
    outputs, cut = _generate(generator, samples, s, progress)
    rows = []
    for x, ref, out in zip(samples, references, outputs):
        entities = parse_entities(out)
        correct = None if ref is None else entities is not None and Counter(map(tuple, ref)) == Counter(entities)
        rows.append({"id": x.id, "prompt": x.prompt[-1]["content"], "reference": x.answer, "prediction": out,
                     "reference_entities": ref, "entities": entities, "correct": correct})
    return rows, {"prompts_truncated": cut}


def ner_scores(rows: list[dict], info: dict) -> dict:
    return ner_metrics([r["reference_entities"] for r in rows], [r["entities"] for r in rows])


def predict_generation(generator, samples: list[Sample], plan: None, s: Settings,
                       progress: bool) -> tuple[list[dict], dict]:
    outputs, cut = _generate(generator, samples, s, progress)
    rows = [{"id": x.id, "prompt": x.prompt[-1]["content"], "reference": x.answer, "prediction": out,
             "correct": None if x.answer is None else out.strip() == x.answer.strip()}
            for x, out in zip(samples, outputs)]
    return rows, {"prompts_truncated": cut}


def generation_scores(rows: list[dict], info: dict) -> dict:
    return generation_metrics([r["reference"] for r in rows], [r["prediction"] for r in rows])


@dataclass
class Task:
    """prepare checks the data (before any model loads); predict makes rows; score turns rows into metrics."""

    prepare: Callable[..., Any]  # (samples, config, extra_answers) -> plan
    predict: Callable[..., tuple[list[dict], dict]]  # (generator, samples, plan, settings, progress) -> rows, info
    score: Callable[[list[dict], dict], dict]
    headline: tuple[str, ...]  # metrics for the summary line and the comparison table
    per_key: str | None = None  # per-class / per-type table in the metrics, shown as F1 rows


TASKS: dict[str, Task] = {
    "classification": Task(plan_labels, predict_classification, classification_scores,
                           ("accuracy", "macro_f1", "invalid_rate", "weighted_f1"), "per_class"),
    "ner": Task(ner_references, predict_ner, ner_scores,
                ("f1", "precision", "recall", "macro_f1", "exact_match", "unparseable_rate"), "per_type"),
    "generation": Task(lambda samples, config, extra=(): None, predict_generation, generation_scores,
                       ("bleu-1", "bleu-2", "bleu-3", "bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact_match")),
}


# ---------------------------------------------------------------- models


@dataclass
class ModelChoice:
    name: str  # "base" or "tuned"
    model_args: ModelArgs
    adapters: list[str]

    def describe(self) -> str:
        return self.model_args.model_name_or_path + "".join(f" + {a}" for a in self.adapters)


def choose_model(config: RunConfig, which: str = "auto") -> ModelChoice:
    """`base`, `tuned` (an error if there is none) or `auto` (tuned if there is one, else base)."""
    base = ModelChoice("base", config.model.model_copy(update={"adapter_name_or_path": None}), [])
    if which == "base":
        return base
    out = Path(config.train.output_dir)
    if config.model.adapter_name_or_path:
        return ModelChoice("tuned", base.model_args, list(config.model.adapter_name_or_path))
    if (out / "adapter_config.json").is_file():
        return ModelChoice("tuned", base.model_args, [str(out)])
    if (out / "config.json").is_file():
        return ModelChoice("tuned", base.model_args.model_copy(update={"model_name_or_path": str(out)}), [])
    if which == "tuned":
        raise ConfigError(f"no tuned model: adapter_name_or_path is not set and output_dir {out} holds neither an "
                          "adapter nor a model (train first, or set adapter_name_or_path)")
    return base


def _load(config: RunConfig, choice: ModelChoice):
    import torch

    from instill.infer.engine import load_generator
    from instill.model.load import Precision

    if config.model.torch_num_threads:
        torch.set_num_threads(config.model.torch_num_threads)
    return load_generator(choice.model_args, config.data.template, choice.adapters,
                          Precision(config.train.bf16, config.train.fp16))


# ---------------------------------------------------------------- running


def check_samples(samples: list[Sample], config: RunConfig, with_metrics: bool = True,
                  extra_answers: list[str] = ()) -> Any:
    """Everything about the data that can fail, checked before a model loads; returns the task's plan."""
    if with_metrics:
        missing = [x.id for x in samples if x.answer is None]
        if missing:
            raise DataError(f"{missing[0]}: no reference answer to score against ({len(missing)} such rows); "
                            "use instill predict for rows without answers")
    return TASKS[config.eval.eval_task].prepare(samples, config, extra_answers)


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
    if with_metrics:
        report.update(task.score(rows, info))
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
            plot_confusion_matrix(report["confusion_matrix"], report["labels"], out_dir / "confusion_matrix.png",
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
        which: str = "auto", compare_base: bool = False, with_metrics: bool = True) -> dict[str, dict]:
    """Evaluate (or just predict) with the chosen model(s); returns {model name: report}."""
    samples = load_samples(config, input_path)
    plan = check_samples(samples, config, with_metrics, _training_answers(config))
    out = Path(output_dir) if output_dir else Path(config.train.output_dir) / "eval"
    choices = [choose_model(config, "base"), choose_model(config, "tuned")] if compare_base else \
        [choose_model(config, which)]
    reports: dict[str, dict] = {}
    for choice in choices:
        _say(f"{'evaluating' if with_metrics else 'predicting with'} {choice.name} model: {choice.describe()}")
        generator = _load(config, choice)
        rows, report = evaluate_samples(generator, samples, config, with_metrics, plan=plan)
        report["model"] = {"name": choice.name, "model_name_or_path": choice.model_args.model_name_or_path,
                           "adapters": choice.adapters}
        target = out / choice.name if compare_base else out
        _write(target, rows, report if with_metrics else None)
        _say(summary(choice.name, report) + f"; written to {target}")
        reports[choice.name] = report
        del generator
    if compare_base:
        table, comparison = compare(reports["base"], reports["tuned"])
        print(table, flush=True)
        (out / "comparison.json").write_text(json.dumps(comparison, ensure_ascii=False, indent=2), encoding="utf-8")
    if with_metrics and output_dir is None and Path(config.train.output_dir).is_dir():
        # Refresh the run's trackers and report.html with these results (both never raise).
        from instill.report.html import write_report
        from instill.train.tracking import log_eval_results

        log_eval_results(config, out)
        report_path = write_report(config.train.output_dir)
        if report_path:
            _say(f"report: {report_path}")
    return reports


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


def task_metrics_callback(config: RunConfig, tokenizer: Any, template: Any) -> Any:
    """A TrainerCallback that runs the eval task on the evaluation samples at every evaluation.

    The headline metrics join Trainer's eval metrics as ``eval_<name>`` (so they reach
    eval_results.json and ``state.log_history``) and each run appends one line to
    ``output_dir/eval/task_metrics.jsonl``. Wire it in with ``callbacks=[...]`` when ``do_eval`` is set.
    """
    from transformers import TrainerCallback

    from instill.infer.engine import Generator

    samples = load_samples(config)
    plan = check_samples(samples, config, True, _training_answers(config))
    path = Path(config.train.output_dir) / "eval" / "task_metrics.jsonl"

    class TaskMetrics(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            _, report = evaluate_samples(Generator(model, tokenizer, template), samples, config,
                                         progress=False, plan=plan)
            values = {f"eval_{k}": report[k] for k in TASKS[report["task"]].headline if k in report}
            if metrics is not None:
                metrics.update(values)
            state.log_history.append({**values, "step": state.global_step})
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **values}) + "\n")
            _say(summary(f"step {state.global_step}", report))

    return TaskMetrics()
