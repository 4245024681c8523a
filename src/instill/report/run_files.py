"""What a run directory holds, read once for the report: configs, logs, results, eval outputs.

Every file is optional: a missing one reads as empty and the report says how to get it. A file that is
there but broken (not UTF-8, not valid JSON / YAML, a value of the wrong type where the report reads it)
is a ReportError naming the file and line, never a traceback and never silently skipped.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from instill.config import yaml_position
from instill.errors import ReportError
from instill.report.plots import plot_confusion_matrix, plotted_confusion
from instill.textfile import read_text

# ---------------------------------------------------------------- reading the run

_FIX = "; fix the file, or move it out of the run directory to report without it"

_KINDS = {  # kind -> (test, how a message names it)
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "object": (lambda v: isinstance(v, dict), "a JSON object"),
    "list": (lambda v: isinstance(v, list), "a list"),
}

# What the report reads from each file, by type (absent or null is fine).
_RESULTS = dict.fromkeys(("epoch", "train_loss", "eval_loss", "num_input_tokens_seen", "train_runtime",
                          "train_samples_per_second", "train_s_per_step", "padding_ratio", "shared_prefix_ratio",
                          "mfu", "peak_tflops"), "number")
_INFO = {"finished": "string", "wall_seconds": "number", "peak": "object", "environment": "object"}
_ENVIRONMENT = {"packages": "object", "torch_threads": "number"}
_METRICS = {"task": "string", "mode": "string", "model": "object", "samples": "number", "n": "number",
            "per_class": "object", "per_type": "object", "confusion_matrix": "list", "labels": "list",
            "accuracy": "number", "samples_per_second": "number", "calibration": "string",
            "prompts_truncated": "number"}
_MODEL = {"name": "string", "model_name_or_path": "string", "adapters": "list"}
_SUMMARY = {"sets": "object", "cutoff_len": "number"}
_SET = dict.fromkeys(("rows", "kept", "dropped", "truncated", "response_cut", "tokens", "trained_tokens"), "number")


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def _check(path: Path, line: int | None, record: Any, fields: dict[str, str], prefix: str = "") -> dict:
    """`record` itself must be an object, and each of `fields` present in it of its kind; returns it."""
    if not isinstance(record, dict):
        what = f"'{prefix.rstrip('.')}' is" if prefix else "holds"
        raise ReportError(f"{_where(path, line)}: {what} {_shown(record)}, expected a JSON object{_FIX}")
    for key, kind in fields.items():
        value = record.get(key)
        test, name = _KINDS[kind]
        if value is not None and not test(value):
            raise ReportError(f"{_where(path, line)}: '{prefix}{key}' is {_shown(value)}, expected {name}{_FIX}")
    return record


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(path: Path) -> str | None:
    """The file's text, None when there is no such file."""
    if not path.is_file():
        return None
    try:
        return read_text(path, error=ReportError, hint=_FIX)
    except OSError as err:
        raise ReportError(f"{path}: cannot be read ({err.strerror or err})") from None


def _parse(path: Path, text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}:{line or err.lineno}: not valid JSON ({err.msg}, column {err.colno}){_FIX}") from None


def _json(path: Path, fields: dict[str, str] | None = None) -> Any:
    """A JSON object file (None when absent), checked against `fields`."""
    text = _text(path)
    return None if text is None else _check(path, None, _parse(path, text), fields or {})


def _jsonl(path: Path, numbers: bool = False) -> list[dict]:
    """One JSON object per line (blank lines skipped). A training log (`numbers`) has an integer 'step' and
    numbers for every other value; other logs need 'step' only where they have it."""
    text = _text(path)
    rows = []
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        row = _check(path, n, _parse(path, line, n), {"step": "integer"})
        if numbers:
            if "step" not in row:
                raise ReportError(f"{path}:{n}: no 'step' in this log record{_FIX}")
            _check(path, n, row, dict.fromkeys(row.keys() - {"step"}, "number"))
        rows.append(row)
    return rows


def _config(path: Path) -> tuple[str | None, dict]:
    """run_config.yaml: its text (None when absent) and its keys."""
    text = _text(path)
    if not text:
        return text, {}
    try:
        config = yaml.safe_load(text)
    except yaml.reader.ReaderError as err:  # a control character: no problem_mark, and a two-line str()
        raise ReportError(f"{path}:{yaml_position(text, err)}: not valid YAML (character #x{err.character:04x} is "
                          f"not allowed in YAML){_FIX}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ReportError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', None) or err}){_FIX}") from None
    if config is None:
        return text, {}
    if not isinstance(config, dict):
        raise ReportError(f"{path}: holds {_shown(config)}, expected a mapping of keys{_FIX}")
    for key in ("dataset", "eval_dataset"):
        names = config.get(key)
        if isinstance(names, str):
            config[key] = [names]
        elif names is not None and not (isinstance(names, list) and all(isinstance(x, str) for x in names)):
            raise ReportError(f"{path}: '{key}' is {_shown(names)}, expected dataset names{_FIX}")
    return text, config


def _metrics(path: Path) -> dict | None:
    """An eval's metrics.json, checked where the report reads it."""
    metrics = _json(path, _METRICS)
    if metrics is not None:
        _check(path, None, metrics.get("model") or {}, _MODEL, "model.")
        for key in ("per_class", "per_type"):
            for label, values in (metrics.get(key) or {}).items():
                _check(path, None, values, {}, f"{key}.{label}.")
    return metrics


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
        metrics, preds = _metrics(directory / "metrics.json"), _jsonl(directory / "predictions.jsonl")
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
    benchmarks: dict | None = None  # eval/benchmarks.json (`instill eval --benchmarks`)

    @classmethod
    def read(cls, out: Path) -> Run:
        """Every file the report reads, checked; raises ReportError naming the first broken one."""
        config_text, config = _config(out / "run_config.yaml")
        info = _json(out / "run_info.json", _INFO) or {}
        _check(out / "run_info.json", None, info.get("environment") or {}, _ENVIRONMENT, "environment.")
        _check(out / "run_info.json", None, info.get("peak") or {}, dict.fromkeys(info.get("peak") or {}, "number"),
               "peak.")
        data = _json(out / "data_summary.json", _SUMMARY)
        for name, part in ((data or {}).get("sets") or {}).items():
            _check(out / "data_summary.json", None, part, _SET, f"sets.{name}.")
        eval_dir = out / "eval"
        evals = read_evals(eval_dir)
        comparison = _json(eval_dir / "comparison.json", {"metrics": "object"})
        for key, values in ((comparison or {}).get("metrics") or {}).items():
            _check(eval_dir / "comparison.json", None, values, dict.fromkeys(("base", "tuned", "delta"), "number"),
                   f"metrics.{key}.")
        task_metrics = eval_dir / "task_metrics.jsonl"
        _jsonl(task_metrics)
        benchmarks = _json(eval_dir / "benchmarks.json", {"models": "object", "comparison": "list",
                                                          "benchmarks": "list"})
        for name, report in ((benchmarks or {}).get("models") or {}).items():
            _check(eval_dir / "benchmarks.json", None, report, {"results": "object", "seconds": "number"},
                   f"models.{name}.")
        return cls(out, config_text, config, info, data, _jsonl(out / "trainer_log.jsonl", numbers=True),
                   _json(out / "all_results.json", _RESULTS) or {}, evals, comparison,
                   task_metrics if task_metrics.is_file() else None, benchmarks)

    @property
    def name(self) -> str:
        return str(self.config.get("run_name") or self.out.resolve().name)

    @property
    def main_eval(self) -> EvalRun | None:
        return next((e for e in self.evals if e.name == "tuned"), self.evals[0] if self.evals else None)

    def eval_named(self, name: str) -> EvalRun | None:
        return next((e for e in self.evals if e.name == name), None)
