"""`instill eval --benchmarks`: standard benchmarks (MMLU, CMMLU, C-Eval, GSM8K, ...) base vs tuned.

Did fine-tuning cost general ability? The benchmarks run through lm-evaluation-harness (`lm-eval`,
the `[bench]` extra) on the model `instill eval` already picks (`model.choice`: base, or base +
adapter merged for inference), handed to the harness as an `HFLM` built from the loaded model and
tokenizer, so nothing downloads a model. lm-eval rather than EvalScope: its task format (a YAML plus
data files) runs offline from a local folder, it is what axolotl wraps, and it installs within
instill's pins (torch, transformers, datasets, peft unchanged); EvalScope was not measured here.

- Data: `benchmark_dir` (LLaMA-Factory: `task_dir`) is a folder of the harness's own task YAMLs and
  their data files (paths in the YAMLs relative to that folder), registered with lm-eval's
  TaskManager; a name not there is one of lm-eval's own tasks, whose data comes from the hub.
- Chat template: generative tasks (`output_type: generate_until`) are prompted through the trained
  chat template (the tokenizer saved with the adapter); log-likelihood tasks score raw text, as the
  harness reports them.
- Output: `<output_dir>/eval/benchmarks.json` (per model, and base vs tuned rows with `--compare base`),
  read by report.html ("General ability") and sent to the run's trackers.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from instill.config import RunConfig
from instill.console import say
from instill.errors import ConfigError, DataError, InstillError
from instill.evaluate.runner import _display_width, _load
from instill.model.choice import choose_model

FILE = "benchmarks.json"
# LLaMA-Factory's `task` names (dataset_split) -> lm-eval's task names.
LLAMAFACTORY_TASKS = {"mmlu_test": "mmlu", "mmlu_validation": "mmlu", "cmmlu_test": "cmmlu",
                      "cmmlu_validation": "cmmlu", "ceval_validation": "ceval-valid", "ceval_test": "ceval-valid"}


def _lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise InstillError("--benchmarks needs lm-evaluation-harness: pip install 'instill[bench]'") from None
    for name in ("lm-eval", "lm_eval"):  # its INFO lines drown the table; warnings stay
        logging.getLogger(name).setLevel(logging.WARNING)
    return lm_eval


def benchmark_names(config: RunConfig, names: list[str] | str | None) -> list[str]:
    """The benchmarks to run: `--benchmarks`, else the config's `task` (LLaMA-Factory names mapped)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names or config.eval.task or [])
    return list(dict.fromkeys(LLAMAFACTORY_TASKS.get(n, n) for n in names))


def benchmark_dir(config: RunConfig) -> Path | None:
    """`benchmark_dir` (or `task_dir`), checked: a missing folder is a ConfigError naming the key."""
    e = config.eval
    key, value = ("benchmark_dir", e.benchmark_dir) if e.benchmark_dir else ("task_dir", e.task_dir)
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        if key == "task_dir" and value == "evaluation":  # LLaMA-Factory's default, spelled out: asks for nothing
            return None
        raise ConfigError(f"{key}: {value} is not a directory; put the benchmarks there as lm-eval task YAMLs "
                          "with their data files (see README, 'General ability')")
    if not any(path.rglob("*.yaml")):
        raise ConfigError(f"{key}: {value} holds no lm-eval task YAML (*.yaml beside its data files; "
                          "see README, 'General ability')")
    return path.resolve()  # the tasks load from inside it (relative data_files), so it must not stay relative


def _task_manager(names: list[str], directory: Path | None) -> Any:
    """lm-eval's TaskManager with `directory` registered; its own ~15,000 tasks (9 s to index) only when needed."""
    from lm_eval.tasks import TaskManager

    if directory:
        local = TaskManager(include_path=str(directory), include_defaults=False)
        if all(name in local.all_tasks for name in names):
            return local
    return TaskManager(include_path=str(directory) if directory else None)


def _missing(name: str, directory: Path | None, err: BaseException | None = None) -> DataError:
    where = f"benchmark_dir {directory}" if directory else "a folder named by benchmark_dir"
    why = f" ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})" if err else ""
    return DataError(f"benchmark '{name}': its data could not be loaded{why}; put {name}.yaml (an lm-eval task) "
                     f"and its data files in {where}, or run where the hub is reachable")


def _leaves(tasks: dict) -> list[Any]:
    out = []
    for value in tasks.values():
        out.extend(_leaves(value) if isinstance(value, dict) else [value])
    return out


def _load_tasks(names: list[str], directory: Path | None) -> dict[str, tuple[Any, bool]]:
    """{name: (a TaskManager that returns its already loaded tasks, generative?)}; every dataset loads here."""
    out, index = {}, _task_manager(names, directory)
    for name in names:
        manager = copy.copy(index)  # each name gets its own `load`, below
        if name not in manager.all_tasks:
            where = f"benchmark_dir {directory}" if directory else "a folder named by benchmark_dir"
            raise DataError(f"benchmark '{name}' is neither in benchmark_dir nor one of lm-eval's tasks; put "
                            f"{name}.yaml (an lm-eval task) and its data files in {where}")
        try:
            with contextlib.chdir(directory or Path.cwd()):  # data_files in the YAMLs are relative to the folder
                loaded = manager.load([name])
        except (OSError, ValueError, ConnectionError, RuntimeError) as err:
            raise _missing(name, directory, err) from None
        manager.load = lambda tasks, _loaded=loaded: _loaded  # simple_evaluate loads them again otherwise
        generative = any(t.get_config("output_type") == "generate_until" for t in loaded["tasks"].values())
        out[name] = (manager, generative)
    return out


def _metrics(result: dict) -> dict[str, dict]:
    """{'acc': {'value', 'stderr'}, 'exact_match (strict-match)': ...} from one harness result entry."""
    out = {}
    for key, value in result.items():
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric, flt = key.split(",", 1)
        stderr = result.get(f"{metric}_stderr,{flt}")
        out[metric if flt == "none" else f"{metric} ({flt})"] = {
            "value": float(value),
            "stderr": float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None}
    return out


def evaluate_model(generator: Any, tasks: dict[str, tuple[Any, bool]], config: RunConfig, limit: int | None) -> dict:
    """Run every benchmark on one loaded model: {'results': {task: metrics}, 'n_samples', 'n_shot', 'seconds'}."""
    lm_eval = _lm_eval()
    from lm_eval.models.huggingface import HFLM

    e = config.eval
    tokenizer = generator.tokenizer
    tokenizer.chat_template = generator.template.jinja  # the trained template, for generative tasks
    quiet = logging.getLogger("lm_eval")
    level, quiet.level = quiet.level, logging.ERROR  # its warnings about being handed a loaded model
    try:
        lm = HFLM(pretrained=generator.model, tokenizer=tokenizer, batch_size=e.batch_size or e.eval_batch_size or 8)
    finally:
        quiet.setLevel(level)
    report: dict[str, Any] = {"results": {}, "n_samples": {}, "n_shot": {}, "chat_template": {}, "seconds": 0.0}
    for name, (manager, generative) in tasks.items():
        started = time.perf_counter()
        out = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, limit=limit,
                                      num_fewshot=e.n_shot, apply_chat_template=generative,
                                      log_samples=False, random_seed=config.train.seed, bootstrap_iters=1000)
        report["seconds"] += time.perf_counter() - started
        for task, result in out["results"].items():
            report["results"][task] = _metrics(result)
        report["n_samples"].update({k: v.get("effective") for k, v in (out.get("n-samples") or {}).items()})
        report["n_shot"].update(out.get("n-shot") or {})
        report["chat_template"][name] = generative
    report["seconds"] = round(report["seconds"], 3)
    return report


def comparison_rows(base: dict, tuned: dict) -> list[dict]:
    """One row per (benchmark, metric) that both models have: values, standard errors, delta."""
    rows = []
    for task, metrics in base["results"].items():
        for metric, b in metrics.items():
            t = tuned["results"].get(task, {}).get(metric)
            if t is None:
                continue
            rows.append({"benchmark": task, "metric": metric, "base": b["value"], "base_stderr": b["stderr"],
                         "tuned": t["value"], "tuned_stderr": t["stderr"], "delta": t["value"] - b["value"]})
    return rows


def _cell(value: float, stderr: float | None) -> str:
    return f"{value:.4f}" + (f" ± {stderr:.4f}" if stderr is not None else "")


def table(reports: dict[str, dict], rows: list[dict] | None) -> str:
    """The terminal table: benchmark, metric, base, tuned, delta (or one model's values)."""
    if rows is not None:
        header = ["benchmark", "metric", "base", "tuned", "delta"]
        lines = [[r["benchmark"], r["metric"], _cell(r["base"], r["base_stderr"]),
                  _cell(r["tuned"], r["tuned_stderr"]), f"{r['delta']:+.4f}"] for r in rows]
    else:
        (name, report), = reports.items()
        header = ["benchmark", "metric", name]
        lines = [[task, metric, _cell(m["value"], m["stderr"])]
                 for task, metrics in report["results"].items() for metric, m in metrics.items()]
    widths = [max(_display_width(str(x)) for x in column) + 2 for column in zip(header, *lines)]

    def fmt(cells: list[str]) -> str:
        return "".join(c + " " * (w - _display_width(c)) if i < 2 else " " * (w - _display_width(c)) + c
                       for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join(fmt(x) for x in [header, *lines])


def run_benchmarks(config: RunConfig, names: list[str] | str | None, limit: int | None = None,
                   compare_base: bool = False, which: str = "auto", output_dir: str | Path | None = None) -> dict:
    """Run the benchmarks, print the table, write benchmarks.json; returns what was written."""
    if config.model.infer_backend == "vllm":
        raise ConfigError("--benchmarks runs lm-eval on the transformers model; infer_backend: vllm is for chat, "
                          "predict and eval generation (set infer_backend=huggingface)")
    names = benchmark_names(config, names)
    if not names:
        raise ConfigError("--benchmarks: name at least one benchmark (e.g. --benchmarks mmlu,gsm8k)")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit: {limit} must be at least 1")
    _lm_eval()
    directory = benchmark_dir(config)
    choices = [choose_model(config, "base"), choose_model(config, "tuned")] if compare_base else \
        [choose_model(config, which)]
    tasks = _load_tasks(names, directory)  # data problems surface before any model loads
    reports: dict[str, dict] = {}
    for choice in choices:
        say(f"benchmarks {', '.join(names)} on the {choice.name} model: {choice.describe()}")
        generator = _load(config, choice)
        report = evaluate_model(generator, tasks, config, limit)
        report["model"] = {"name": choice.name, "model_name_or_path": choice.model_args.model_name_or_path,
                           "adapters": choice.adapters}
        reports[choice.name] = report
        del generator
    rows = comparison_rows(reports["base"], reports["tuned"]) if compare_base else None
    print(table(reports, rows), flush=True)
    written = {"benchmarks": names, "limit": limit, "benchmark_dir": str(directory) if directory else None,
               "models": reports, "comparison": rows}
    default_out = Path(config.train.output_dir) / "eval"
    out = Path(output_dir or config.eval.save_dir or default_out)
    out.mkdir(parents=True, exist_ok=True)
    (out / FILE).write_text(json.dumps(written, ensure_ascii=False, indent=2), encoding="utf-8")
    say(f"benchmarks written to {out / FILE}")
    if out.resolve() == default_out.resolve():
        from instill.report.html import try_write_report
        from instill.tracking.trackers import log_benchmark_results

        log_benchmark_results(config, out / FILE)
        report_path = try_write_report(config.train.output_dir)
        if report_path:
            say(f"report: {report_path}")
    return written
