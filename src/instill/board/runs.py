"""Runs under a workspace, read from the files each run writes, so the list survives a reload or a restart
of the board and includes runs started with `instill train` on the command line.

A run is a directory holding run_config.yaml, trainer_log.jsonl or the output-dir lock (train/lock.py).
Its status comes from the files: `running` while a live process on this host holds the lock, `finished`
once all_results.json is there, `stopped` when a checkpoint is left to resume from, else `incomplete`
(`failed` when the board launched it and it exited with an error). Curves are the lines of
trainer_log.jsonl; a run still writing may end in a half line, which is skipped (the report's reader,
report/run_files.py, is strict instead: it reads finished runs).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from instill.train.checkpoint import last_complete_checkpoint
from instill.train.lock import LOCK_NAME, holder

MARKERS = ("run_config.yaml", "trainer_log.jsonl", LOCK_NAME)
_SKIP = {".git", ".board", "node_modules", "__pycache__", "eval", ".venv"}
_DEPTH = 4


def find_runs(workspace: Path, extra: list[Path] = ()) -> list[Path]:
    """Run directories under `workspace` (at most 4 levels down, checkpoints not counted) plus `extra` ones (the
    board's own runs, listed from the moment they start, before their process has created anything)."""
    found: list[Path] = []
    base = len(workspace.parts)
    for root, dirs, files in os.walk(workspace):
        here = Path(root)
        dirs[:] = [d for d in sorted(dirs) if d not in _SKIP and not d.startswith("checkpoint-")
                   and len(here.parts) - base < _DEPTH]
        if any(m in files for m in MARKERS):
            found.append(here)
    for path in extra:
        if path not in found:
            found.append(path)
    return found


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_id(out: Path, workspace: Path) -> str:
    """A run's name on the board: its path under the workspace (absolute when it lies elsewhere)."""
    try:
        return str(out.resolve().relative_to(workspace.resolve()))
    except ValueError:
        return str(out.resolve())


def read_log(path: Path) -> list[dict]:
    """trainer_log.jsonl's records (a half-written or broken line is skipped)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def run_config(out: Path) -> dict:
    try:
        config = yaml.safe_load((out / "run_config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def curves(log: list[dict]) -> dict[str, list[list[float]]]:
    """[[step, value], ...] for loss, eval_loss, learning_rate and tokens_per_s."""
    out: dict[str, list[list[float]]] = {}
    for key in ("loss", "eval_loss", "learning_rate", "tokens_per_s"):
        out[key] = [[r["step"], r[key]] for r in log if isinstance(r.get(key), (int, float))
                    and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
    return out


def total_steps(config: dict, out: Path) -> int | None:
    """Optimizer steps the run will take: max_steps, else from the rows data_summary.json says it kept."""
    if isinstance(config.get("max_steps"), int) and config["max_steps"] > 0:
        return config["max_steps"]
    kept = ((read_json(out / "data_summary.json").get("sets") or {}).get("train") or {}).get("kept")
    try:
        batch, accumulation = int(config.get("per_device_train_batch_size") or 1), \
            int(config.get("gradient_accumulation_steps") or 1)
        epochs = float(config.get("num_train_epochs") or 1)
    except (TypeError, ValueError):
        return None
    if not isinstance(kept, int) or not kept:
        return None
    per_epoch = max(math.ceil(math.ceil(kept / batch) / accumulation), 1)  # as train.run.total_optimizer_steps
    return math.ceil(per_epoch * epochs)


def status(out: Path, results: dict, job: dict | None) -> str:
    """running / finished / failed / stopped / incomplete, from the run's files and the board's job record."""
    if holder(out) is not None or (job or {}).get("alive"):  # a job's process starts and ends without the lock
        return "running"
    exit_code = (job or {}).get("exit_code")
    if results:
        return "finished"
    if exit_code not in (None, 0, 130):
        return "failed"
    return "stopped" if last_complete_checkpoint(out) else "incomplete"


def summary(out: Path, workspace: Path, job: dict | None = None, with_curves: bool = False) -> dict[str, Any]:
    """What the runs list and a run's page show: status, stage, method, headline metrics, progress; `job` is the
    board's record of the last training process into `out` (None for runs started elsewhere)."""
    config = run_config(out)
    results = read_json(out / "all_results.json")
    info = read_json(out / "run_info.json")
    log = read_log(out / "trainer_log.jsonl")
    state = status(out, results, job)
    step = max((r["step"] for r in log), default=0)
    total = total_steps(config, out)
    owner = holder(out) or ({"pid": job["pid"]} if job and job.get("alive") else {})
    eta = None
    if state == "running" and total and step:
        try:
            started = time.mktime(time.strptime(owner.get("started", ""), "%Y-%m-%d %H:%M:%S"))
            eta = max((time.time() - started) / step * (total - step), 0.0)
        except ValueError:
            pass
    rates = [r["tokens_per_s"] for r in log if isinstance(r.get("tokens_per_s"), (int, float))]
    final = next((r for r in reversed(log) if "train_tokens_per_s" in r), {})
    evals = [r["eval_loss"] for r in log if isinstance(r.get("eval_loss"), (int, float))]
    comparison = read_json(out / "eval" / "comparison.json")
    row = {
        "id": run_id(out, workspace), "path": str(out), "status": state, "pid": owner.get("pid"),
        "stage": config.get("stage", "sft" if config else None), "method": config.get("finetuning_type"),
        "model": config.get("model_name_or_path"), "dataset": config.get("dataset"),
        "step": step, "total_steps": total, "eta_s": eta,
        "train_loss": results.get("train_loss"),
        "last_loss": next((r["loss"] for r in reversed(log) if "loss" in r), None),
        "eval_loss": results.get("eval_loss", evals[-1] if evals else None),
        "tokens_per_s": final.get("train_tokens_per_s") or (rates[-1] if rates else None),
        "wall_s": info.get("wall_seconds") or results.get("train_runtime"),
        "finished": info.get("finished"),
        "report": (out / "report.html").is_file(),
        "checkpoint": last_complete_checkpoint(out),
        "eval": comparison.get("metrics") or None,
        "mtime": max((p.stat().st_mtime for p in out.iterdir() if p.is_file()), default=0.0) if out.is_dir()
        else (job or {}).get("started", 0.0),
    }
    if with_curves:
        row["curves"] = curves(log)
        row["config"] = config
    return row


def compare(rows: list[dict]) -> dict[str, Any]:
    """Two or more runs side by side: their curves, a metric table, and the config keys that differ."""
    keys = sorted({k for r in rows for k in r["config"]})
    diff = {k: [r["config"].get(k) for r in rows] for k in keys
            if len({json.dumps(r["config"].get(k), sort_keys=True, default=str) for r in rows}) > 1}
    metrics = ("status", "stage", "method", "step", "train_loss", "eval_loss", "tokens_per_s", "wall_s")
    return {"runs": [r["id"] for r in rows], "curves": {r["id"]: r["curves"] for r in rows},
            "metrics": {m: [r.get(m) for r in rows] for m in metrics}, "config_diff": diff}
