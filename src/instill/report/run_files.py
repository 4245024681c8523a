"""What a run directory holds, read once for the report: configs, logs, results, eval outputs.

Every file is optional and a missing or unreadable one reads as empty: the report says how to
get what is missing instead of failing.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from instill.report.plots import plot_confusion_matrix, plotted_confusion

# ---------------------------------------------------------------- reading the run


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@dataclass
class EvalRun:
    """One evaluated model's files (eval/ or eval/<base|tuned>/)."""

    name: str
    directory: Path
    metrics: dict | None
    predictions: list[dict]

    @property
    def confusion_png(self) -> Path | None:
        png = self.directory / "confusion_matrix.png"
        if not png.is_file() and self.metrics and "confusion_matrix" in self.metrics:
            try:
                m = self.metrics
                plot_confusion_matrix(plotted_confusion(m["confusion_matrix"], m["labels"]), m["labels"], png,
                                      title=f"{self.name}: accuracy {m.get('accuracy', 0):.3f}")
            except Exception as err:  # noqa: BLE001
                warnings.warn(f"confusion matrix plot failed: {err}", RuntimeWarning, stacklevel=2)
        return png if png.is_file() else None


def read_evals(eval_dir: Path) -> list[EvalRun]:
    """What `instill eval` wrote: eval_dir/metrics.json, or eval_dir/tuned|base/ after --compare base."""
    evals: list[EvalRun] = []
    for name, directory in (("tuned", eval_dir / "tuned"), ("base", eval_dir / "base"), ("evaluated", eval_dir)):
        if directory == eval_dir and evals:
            break  # a top-level metrics.json beside a comparison is an older run's
        metrics, preds = _json(directory / "metrics.json"), _jsonl(directory / "predictions.jsonl")
        if metrics is not None or preds:
            model = (metrics or {}).get("model", {}).get("name")
            evals.append(EvalRun(model or name, directory, metrics, preds))
    return evals


@dataclass
class Run:
    out: Path
    config_text: str | None
    config: dict
    info: dict
    data: dict | None
    log: list[dict]
    results: dict
    evals: list[EvalRun] = field(default_factory=list)
    comparison: dict | None = None
    task_metrics: Path | None = None

    @classmethod
    def read(cls, out: Path) -> Run:
        config_path = out / "run_config.yaml"
        config_text = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
        try:
            config = yaml.safe_load(config_text) if config_text else {}
        except yaml.YAMLError:
            config = {}
        eval_dir = out / "eval"
        evals = read_evals(eval_dir)
        task_metrics = eval_dir / "task_metrics.jsonl"
        return cls(out, config_text, config if isinstance(config, dict) else {}, _json(out / "run_info.json") or {},
                   _json(out / "data_summary.json"), _jsonl(out / "trainer_log.jsonl"),
                   _json(out / "all_results.json") or {}, evals, _json(eval_dir / "comparison.json"),
                   task_metrics if task_metrics.is_file() else None)

    @property
    def name(self) -> str:
        return str(self.config.get("run_name") or self.out.resolve().name)

    @property
    def main_eval(self) -> EvalRun | None:
        return next((e for e in self.evals if e.name == "tuned"), self.evals[0] if self.evals else None)

    def eval_named(self, name: str) -> EvalRun | None:
        return next((e for e in self.evals if e.name == name), None)
