"""Experiment trackers (`report_to: swanlab, tensorboard`) behind one small interface.

Why not transformers' own `report_to`: its SwanLab integration fails with swanlab 0.10.x
("No active Run"), and any tracker error there propagates into training. Here every tracker is
a small class with four methods (`start`, `log`, `log_texts`, `finish`) registered in `TRACKERS`;
one `TrackingCallback` feeds them all and wraps every call: a tracker that raises is reported
once (a warning) and switched off, and training goes on.

What is logged, at every logging step, under the same names in every tracker:

- ``train/loss``, ``train/learning_rate``, ``train/grad_norm``, ``train/epoch``,
  ``train/tokens_per_s`` (non-padding input tokens per second of training since the previous log,
  evaluation left out: the `rate` training passes in);
- ``hardware/cpu_percent``, ``hardware/rss_mb``, ``hardware/peak_rss_mb`` and, with CUDA,
  ``hardware/gpu_mem_mb``, ``hardware/gpu_peak_mem_mb``, ``hardware/gpu_util`` (`tracking.hardware`);
- at every evaluation: ``eval/<metric>`` for each numeric eval metric (``eval/loss``, and the
  task metrics such as ``eval/accuracy`` when a task-metrics callback runs before this one);
- once, the resolved config (secrets redacted); after training, the run's throughput figures as
  ``summary/<key>`` (`log_summary`: the numbers of the summary line and all_results.json); after an
  `instill eval`, a text panel of sample predictions (`log_eval_results`).

Only the main process (`state.is_world_process_zero`) starts trackers and logs.

SwanLab modes: ``local`` (a run the local dashboard shows: ``swanlab watch <logdir>``; needs
``swanlab[dashboard]``), ``offline`` (files for a later ``swanlab sync``; not shown by the
local dashboard), ``cloud`` (needs ``swanlab login``). ``auto`` (the default) takes
``$SWANLAB_MODE`` if set, else cloud when an API key is configured, else local, and offline
when the dashboard package is missing. TensorBoard writes to
``output_dir/runs/<date>_<host>`` (or ``$TENSORBOARD_LOGGING_DIR``), as transformers does.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import socket
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from instill.config import RunConfig, TrainArgs
from instill.console import say
from instill.errors import ConfigError
from instill.report.redact import redact
from instill.report.run_files import read_evals
from instill.report.samples import pick_samples
from instill.tracking import hardware

# ---------------------------------------------------------------- the interface


class Tracker(ABC):
    """One experiment tracker. Subclasses implement these four; errors are the callback's business."""

    name = "tracker"

    @abstractmethod
    def start(self, config: dict[str, Any]) -> None: ...

    @abstractmethod
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    @abstractmethod
    def log_texts(self, key: str, items: list[tuple[str, str]], step: int) -> None:
        """A panel of texts: (text, caption) pairs."""

    @abstractmethod
    def finish(self) -> None: ...

    def where(self) -> str:
        """One line telling the user how to look at this run."""
        return ""


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.writer: Any = None

    def start(self, config: dict[str, Any]) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.logdir))
        text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
        self.writer.add_text("config", "```yaml\n" + text + "\n```", 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_texts(self, key: str, items: list[tuple[str, str]], step: int) -> None:
        # TensorBoard's text plugin renders markdown: one block per sample.
        body = "\n\n---\n\n".join(f"**{caption}**\n\n```\n{text}\n```" for text, caption in items)
        self.writer.add_text(key, body, step)
        self.writer.flush()

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def where(self) -> str:
        return f"TensorBoard: tensorboard --logdir {self.logdir.parent}"


def swanlab_api_key_configured() -> bool:
    try:
        from swanlab.sdk.internal.settings import create_settings

        return bool(create_settings().api_key)
    except Exception:  # noqa: BLE001 - an unknown swanlab layout: assume no key (local)
        return bool(os.environ.get("SWANLAB_API_KEY"))


def resolve_swanlab_mode(mode: str) -> str:
    """auto/local/offline/cloud -> the mode swanlab.init takes (local/offline/online)."""
    if mode == "auto":
        env = os.environ.get("SWANLAB_MODE", "").strip().lower()
        if env in ("local", "offline", "online", "cloud", "disabled"):
            mode = env
        elif swanlab_api_key_configured():
            mode = "cloud"
        elif importlib.util.find_spec("swanboard") is None:
            say("swanlab_mode auto: no API key and no dashboard package, so logging offline "
                 "(pip install 'swanlab[dashboard]' to watch runs locally with `swanlab watch`)")
            mode = "offline"
        else:
            mode = "local"
    return "online" if mode == "cloud" else mode


class SwanLabTracker(Tracker):
    name = "swanlab"

    def __init__(self, mode: str, project: str, run_name: str, logdir: Path, workspace: str | None = None) -> None:
        self.mode, self.project, self.run_name, self.logdir, self.workspace = mode, project, run_name, logdir, workspace
        self.run: Any = None

    def start(self, config: dict[str, Any]) -> None:
        import swanlab

        self.logdir.mkdir(parents=True, exist_ok=True)
        settings = swanlab.Settings(probe=swanlab.Settings.Probe(monitor=False))  # we sample hardware ourselves
        self.run = swanlab.init(
            reinit=True, mode=self.mode, project=self.project, workspace=self.workspace, name=self.run_name,
            log_dir=str(self.logdir), config=config, settings=settings,
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_texts(self, key: str, items: list[tuple[str, str]], step: int) -> None:
        import swanlab

        self.run.log({key: [swanlab.Text(text, caption=caption) for text, caption in items]}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish()

    def where(self) -> str:
        if self.mode == "local":
            return f"SwanLab: swanlab watch {self.logdir} -h 127.0.0.1"
        if self.mode == "offline":
            return f"SwanLab (offline): swanlab sync {self.logdir}"
        return f"SwanLab: project {self.project} on swanlab.cn"


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class TrackerSpec:
    build: Callable[[RunConfig, Path], Tracker]
    modules: tuple[str, ...]  # importable modules it needs
    install: str  # what to pip install when they are missing


def _run_name(config: RunConfig, out: Path) -> str:
    return config.train.swanlab_run_name or config.train.run_name or out.resolve().name


def _tensorboard(config: RunConfig, out: Path) -> Tracker:
    env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    if env:
        return TensorBoardTracker(Path(env).expanduser())
    return TensorBoardTracker(out / "runs" / f"{datetime.now():%b%d_%H-%M-%S}_{socket.gethostname()}")


def _swanlab(config: RunConfig, out: Path) -> Tracker:
    t = config.train
    logdir = Path(t.swanlab_logdir) if t.swanlab_logdir else out / "swanlog"
    return SwanLabTracker(resolve_swanlab_mode(t.swanlab_mode), t.swanlab_project or "instill",
                          _run_name(config, out), logdir, t.swanlab_workspace)


TRACKERS: dict[str, TrackerSpec] = {
    "tensorboard": TrackerSpec(_tensorboard, ("tensorboard",), "pip install tensorboard"),
    "swanlab": TrackerSpec(_swanlab, ("swanlab",), "pip install 'swanlab[dashboard]'"),
}


def check_trackers(args: TrainArgs) -> None:
    """Fail before any model loads when a chosen tracker's package is missing."""
    for name in args.report_to:
        spec = TRACKERS.get(name)
        if spec is None:
            continue
        missing = [m for m in spec.modules if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"report_to: {name} needs the {', '.join(missing)} package ({spec.install})")
    if "swanlab" in args.report_to and args.swanlab_mode == "local" and importlib.util.find_spec("swanboard") is None:
        raise ConfigError("swanlab_mode: local needs the dashboard package (pip install 'swanlab[dashboard]'), "
                          "or set swanlab_mode: offline")


# ---------------------------------------------------------------- the callback


class TrackingCallback(TrainerCallback):
    """Feeds train/eval/hardware metrics to the trackers; a failing tracker is dropped, not fatal."""

    def __init__(self, trackers: list[Tracker], config: dict[str, Any],
                 rate: Callable[[Any], float | None] | None = None) -> None:
        self.trackers = trackers
        self.config = config
        self.rate = rate  # a training log's tokens/s, from the caller (training's clock)
        self.started = False
        self.closed = False
        self.step = 0
        atexit.register(self.close)

    # every tracker call goes through here
    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as err:  # noqa: BLE001 - a tracker must never stop training
                self.trackers.remove(tracker)
                warnings.warn(f"{tracker.name} tracker failed to {what} ({type(err).__name__}: {err}); "
                              "it is switched off for this run, training goes on", RuntimeWarning, stacklevel=2)

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        self._each("start", lambda t: t.start(self.config))
        for tracker in self.trackers:
            if tracker.where():
                say(f"tracking: {tracker.where()}")

    def log(self, metrics: dict[str, float], step: int) -> None:
        if metrics and self.started and not self.closed:
            self._each("log", lambda t: t.log(metrics, step))

    def log_texts(self, key: str, items: list[tuple[str, str]], step: int) -> None:
        if items and self.started and not self.closed:
            self._each("log texts", lambda t: t.log_texts(key, items, step))

    def close(self) -> None:
        if self.started and not self.closed:
            self.closed = True
            self._each("finish", lambda t: t.finish())

    # TrainerCallback hooks
    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            self.trackers = []  # only the main process logs
            return
        self.start()
        hardware.sample(state.global_step)  # baseline for cpu_percent

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not self.started:
            return
        self.step = state.global_step
        metrics = {f"train/{k}": float(logs[k]) for k in ("loss", "learning_rate", "grad_norm", "epoch")
                   if isinstance(logs.get(k), (int, float))}
        if "loss" not in logs:  # eval / end-of-training summaries: eval metrics go in on_evaluate
            metrics = {}
        else:
            rate = self.rate(state) if self.rate is not None else None
            if rate is not None:
                metrics["train/tokens_per_s"] = rate
            metrics.update({f"hardware/{k}": v for k, v in hardware.sample(state.global_step).items()})
        self.log(metrics, state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        self.start()  # an evaluate() with no training before it
        self.step = state.global_step
        values = {f"eval/{k.removeprefix('eval_')}": float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.log(values, state.global_step)


def tracker_callbacks(config: RunConfig, output_dir: Path,
                      rate: Callable[[Any], float | None] | None = None) -> list[TrainerCallback]:
    """The callbacks for `report_to` (empty for none). Trackers start when training begins; `rate(state)`
    gives a training log's tokens/s."""
    names = [n for n in config.train.report_to if n != "none"]
    if not names:
        return []
    check_trackers(config.train)
    trackers = [TRACKERS[name].build(config, Path(output_dir)) for name in names]
    return [TrackingCallback(trackers, redact(config.flat()), rate)]


def log_summary(trainer: Any, figures: dict[str, float]) -> None:
    """The run's throughput figures, once after training, as ``summary/<key>`` in every open tracker."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TrackingCallback) and not callback.closed:
            callback.log({f"summary/{k}": float(v) for k, v in figures.items()}, trainer.state.global_step)


def close_trackers(trainer: Any) -> None:
    """Finish every tracker of a trainer (after its final evaluate)."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TrackingCallback):
            callback.close()


# ---------------------------------------------------------------- evaluation results


def prediction_texts(rows: list[dict], n: int = 20) -> list[tuple[str, str]]:
    """(text, caption) for up to n sample predictions, right and wrong ones both shown."""
    items = []
    for row in pick_samples(rows, n):
        prompt = str(row.get("prompt", ""))
        if len(prompt) > 400:
            prompt = prompt[:200] + " … " + prompt[-150:]
        verdict = {True: "✓ correct", False: "✗ wrong", None: "—"}[row.get("correct")]
        text = f"{prompt}\n\n→ prediction: {row.get('prediction', '')}"
        if row.get("reference") is not None:
            text += f"\n→ reference:  {row['reference']}"
        items.append((text, f"{verdict} · {row.get('id', '')}"))
    return items


def log_eval_results(config: RunConfig, eval_dir: str | Path, trainer: Any = None, step: int | None = None) -> None:
    """Send `instill eval` results (metrics per model, up to 20 sample predictions) to `report_to`.

    With a `trainer` whose trackers are still open, they go into that training run; otherwise a
    new tracker run named '<run name>-eval' is started and finished here. Never raises.
    """
    try:
        evals = read_evals(Path(eval_dir))
        reports = {e.name: e.metrics for e in evals if e.metrics is not None}
        rows = {e.name: e.predictions for e in evals}
        if not reports:
            return
        callback = None
        if trainer is not None:
            callback = next((c for c in trainer.callback_handler.callbacks
                             if isinstance(c, TrackingCallback) and not c.closed), None)
            step = trainer.state.global_step if step is None else step
        own = callback is None
        if own:
            names = [n for n in config.train.report_to if n != "none"]
            if not names:
                return
            check_trackers(config.train)
            out = Path(config.train.output_dir)
            eval_name = f"{_run_name(config, out)}-eval"
            named = config.model_copy(update={"train": config.train.model_copy(update={"swanlab_run_name": eval_name})})
            callback = TrackingCallback([TRACKERS[n].build(named, out) for n in names], redact(config.flat()))
            callback.start()
        step = step or 0
        for name, report in reports.items():
            prefix = "eval" if len(reports) == 1 else f"eval_{name}"
            scalars = {f"{prefix}/{k}": float(v) for k, v in report.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for label, values in (report.get("per_class") or report.get("per_type") or {}).items():
                if isinstance(values, dict) and isinstance(values.get("f1"), (int, float)):
                    scalars[f"{prefix}/f1[{label}]"] = float(values["f1"])
            callback.log(scalars, step)
            if rows.get(name):
                callback.log_texts(f"{prefix}/predictions", prediction_texts(rows[name]), step)
        if own:
            callback.close()
    except Exception as err:  # noqa: BLE001 - results are on disk already; trackers are a bonus
        warnings.warn(f"could not send evaluation results to the trackers ({type(err).__name__}: {err})",
                      RuntimeWarning, stacklevel=2)


def log_benchmark_results(config: RunConfig, path: str | Path) -> None:
    """Send `instill eval --benchmarks` results (benchmarks.json) to `report_to` as a '<run name>-bench' run.

    Scalars are named bench/<model>/<benchmark>/<metric>. Never raises.
    """
    try:
        names = [n for n in config.train.report_to if n != "none"]
        if not names:
            return
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        scalars = {f"bench/{model}/{task}/{metric}": float(m["value"])
                   for model, report in (data.get("models") or {}).items()
                   for task, metrics in (report.get("results") or {}).items() for metric, m in metrics.items()}
        for row in data.get("comparison") or []:
            scalars[f"bench/delta/{row['benchmark']}/{row['metric']}"] = float(row["delta"])
        check_trackers(config.train)
        out = Path(config.train.output_dir)
        named = config.model_copy(update={"train": config.train.model_copy(
            update={"swanlab_run_name": f"{_run_name(config, out)}-bench"})})
        callback = TrackingCallback([TRACKERS[n].build(named, out) for n in names], redact(config.flat()))
        callback.start()
        callback.log(scalars, 0)
        callback.close()
    except Exception as err:  # noqa: BLE001 - results are on disk already; trackers are a bonus
        warnings.warn(f"could not send benchmark results to the trackers ({type(err).__name__}: {err})",
                      RuntimeWarning, stacklevel=2)


# ---------------------------------------------------------------- end of a run


def finish_run(trainer: Any, output_dir: str | Path, wall_seconds: float | None = None) -> bool:
    """After training (and its final evaluate): finish the trackers and record run_info.json
    (environment, wall time, peak memory). Never raises; true on the main process."""
    out = Path(output_dir)
    try:
        close_trackers(trainer)
    except Exception as err:  # noqa: BLE001
        warnings.warn(f"closing trackers failed: {err}", RuntimeWarning, stacklevel=2)
    if not getattr(trainer, "is_world_process_zero", lambda: True)():
        return False
    try:
        info = {"finished": datetime.now().astimezone().isoformat(timespec="seconds"),
                "wall_seconds": round(wall_seconds, 2) if wall_seconds is not None else None,
                "peak": hardware.sampler().peak | {"peak_rss_mb": hardware.sample().get("peak_rss_mb")},
                "environment": hardware.environment()}
        (out / "run_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    except Exception as err:  # noqa: BLE001 - the model is saved; a bookkeeping failure must not fail the run
        warnings.warn(f"could not write run_info.json ({type(err).__name__}: {err})", RuntimeWarning, stacklevel=2)
    return True
