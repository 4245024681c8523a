"""The eval tasks, one registry: classification, ner, generation, preference.

Each task is three functions: `prepare` checks the data before any model loads (and returns
the task's plan, e.g. the label set), `predict` turns samples into prediction rows, `score`
turns rows into metrics. The metrics themselves live in `classify`, `ner` and `textgen`.
Preference pairs are scored by log-likelihood, not through samples, so that task gives `run`
(evaluate/preference.py) instead.

A task's `headline` (the metrics it leads with) is defined here only. It reaches report.html as
data: every metrics.json names its task's headline, because report/ sits below evaluate/ and may
not import it, and a file that says what it leads with reads the same in any later report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from instill.config import RunConfig
from instill.data.formats import column_names
from instill.errors import ConfigError, DataError
from instill.evaluate.classify import classification_metrics, label_in_answer, match_label, normalize, parse_label_set
from instill.evaluate.ner import ner_metrics, parse_entities
from instill.evaluate.preference import run_preference
from instill.evaluate.samples import Sample
from instill.evaluate.textgen import generation_metrics
from instill.infer.engine import Decoding
from instill.infer.score import batch_calibrate, score_labels


@dataclass
class Settings:
    task: str
    mode: str
    batch_size: int
    max_new_tokens: int | None  # None: decoding.max_length bounds prompt + answer
    temperature: float
    top_p: float
    max_prompt_tokens: int
    calibration: str = "none"
    decoding: Decoding = field(default_factory=Decoding)


def settings_from(config: RunConfig) -> Settings:
    e, t = config.eval, config.train
    batch = e.eval_batch_size or (t.per_device_eval_batch_size if "per_device_eval_batch_size" in t.model_fields_set else 8)
    # max_new_tokens wins; max_length (prompt + answer) bounds the answer only when it is not set
    new_tokens = e.max_new_tokens or (None if e.max_length else 64 if e.eval_task == "classification" else 512)
    return Settings(e.eval_task, e.eval_mode, batch, new_tokens, e.temperature if e.do_sample else 0.0,
                    e.top_p, config.data.cutoff_len, e.eval_calibration, Decoding.of(e, evaluation=True))


def _generate(generator, samples: list[Sample], s: Settings, progress: bool) -> tuple[list[str], int]:
    images = [x.images for x in samples] if any(x.images for x in samples) else None
    prompts, cut = generator.encode_prompts([x.prompt for x in samples], [x.tools for x in samples],
                                            s.max_prompt_tokens, images)
    outputs = generator.generate_ids(prompts, s.max_new_tokens, s.batch_size, s.temperature, s.top_p, progress,
                                     images=images, decoding=s.decoding)
    return outputs, cut


# ---------------------------------------------------------------- classification


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
                                f"{column_names(x.extras) or 'no extra columns'}")
            raw_gold.append(str(x.extras[e.label_column]))
        else:
            raw_gold.append(x.answer)
    shared: list[str] | None = None
    if not e.choices_column:
        if e.labels:
            shared = parse_label_set(e.labels)
        else:
            found = [label_in_answer(a) for a in [*raw_gold, *extra_answers] if a is not None]
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
                                f"{column_names(x.extras) or 'no extra columns'}")
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
    info: dict[str, Any] = {"labels": plan.labels, "label_template": plan.template}
    if s.mode == "score":

        results = score_labels(generator, [x.prompt for x in samples], plan.candidates, plan.template,
                               s.batch_size, max_prompt_tokens=s.max_prompt_tokens, tools=[x.tools for x in samples],
                               progress=progress)
        if s.calibration == "batch":
            results, prior = batch_calibrate(results)
            info["label_prior"] = {k: round(v, 6) for k, v in prior.items()}
        cut = sum(r.truncated for r in results)
        for row, r in zip(rows, results):
            row.update(prediction=plan.template.replace("{label}", r.label), label=r.label,
                       confidence=round(r.confidence, 6), scores={k: round(v, 4) for k, v in r.scores.items()})
            if r.calibrated is not None:
                row["calibrated_scores"] = {k: round(v, 4) for k, v in r.calibrated.items()}
    else:
        outputs, cut = _generate(generator, samples, s, progress)
        for row, out in zip(rows, outputs):
            row.update(prediction=out, label=match_label(out, row["candidates"]))
    for row in rows:
        row["correct"] = None if row["reference"] is None else row["label"] == row["reference"]
    return rows, {**info, "prompts_truncated": cut}


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
    """prepare checks the data (before any model loads); predict makes rows; score turns rows into metrics.
    A task that is not samples -> rows -> metrics leaves those None and gives `run`."""

    prepare: Callable[..., Any] | None  # (samples, config, extra_answers) -> plan
    predict: Callable[..., tuple[list[dict], dict]] | None  # (generator, samples, plan, settings, progress) -> rows, info
    score: Callable[[list[dict], dict], dict] | None
    headline: tuple[str, ...]  # metrics shown first: summary line, comparison table, metrics.json -> report.html
    per_key: str | None = None  # per-class / per-type table in the metrics, shown as F1 rows
    run: Callable[..., dict[str, dict]] | None = None  # (config, output_dir, which, compare_base, headline) -> reports


TASKS: dict[str, Task] = {
    "classification": Task(plan_labels, predict_classification, classification_scores,
                           ("accuracy", "macro_f1", "invalid_rate", "weighted_f1"), "per_class"),
    "ner": Task(ner_references, predict_ner, ner_scores,
                ("f1", "precision", "recall", "macro_f1", "exact_match", "unparseable_rate"), "per_type"),
    "generation": Task(lambda samples, config, extra=(): None, predict_generation, generation_scores,
                       ("bleu-4", "rouge-1", "rouge-2", "rouge-l", "bleu-1", "bleu-2", "bleu-3", "exact_match")),
    "preference": Task(None, None, None, ("preference_accuracy", "implicit_reward_accuracy", "reward_margin",
                                          "mean_logp_margin"), run=run_preference),
}
