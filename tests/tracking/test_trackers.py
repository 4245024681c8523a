"""Trackers on real runs of the tiny Qwen2: TensorBoard events read back, the SwanLab local
dashboard (`swanlab watch` on loopback) serving the run's loss, a broken tracker that does not
stop training, hardware samples in trainer_log.jsonl, main-process-only logging."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from instill.config import build_config
from instill.errors import ConfigError
from instill.tracking import hardware
from instill.tracking.trackers import (
    TrackingCallback,
    resolve_swanlab_mode,
    tracker_callbacks,
)
from instill.train.run import run_training
from tests.conftest import write_dataset
from tests.report.chromium import CHROMIUM, dump_dom, screenshot
from tests.train.test_sft import FACTS, config


@pytest.fixture()
def memo_dir(tmp_path):
    rows = [{"instruction": q, "input": "", "output": a} for q, a in FACTS]
    return write_dataset(tmp_path / "data", "memo", rows)


@pytest.fixture()
def no_swanlab_account(tmp_path, monkeypatch):
    """No API key anywhere SwanLab looks (env, ~/.swanlab/.netrc, ./.swanlab)."""
    for var in ("SWANLAB_API_KEY", "SWANLAB_MODE", "SWANLAB_LOG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWANLAB_ROOT", str(tmp_path / "swanlab-home"))
    monkeypatch.chdir(tmp_path)


def tiny_run(model_dir, data_dir, out, **overrides):
    kwargs = {"max_steps": 4, "logging_steps": 1, "val_size": 2, "eval_strategy": "steps", "eval_steps": 2,
              "learning_rate": 3e-2}
    kwargs.update(overrides)
    return run_training(config(model_dir, data_dir, out, **kwargs))


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def test_tensorboard_events_and_hardware_fields(tiny_qwen2, memo_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    tiny_run(tiny_qwen2, memo_dir, out, report_to="tensorboard")
    rows = log_rows(out)
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for r in train:  # hardware sampled at every logging step, beside the existing fields
        assert r["rss_mb"] > 50 and r["peak_rss_mb"] >= r["rss_mb"] and r["cpu_percent"] >= 0
        assert {"loss", "learning_rate", "grad_norm", "tokens_seen"} <= set(r)

    runs = [p for p in (out / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s",
                "hardware/cpu_percent", "hardware/rss_mb", "eval/loss"):
        assert tag in tags, (tag, tags)
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-5)
    assert [e.step for e in events.Scalars("eval/loss")][-1] == 4
    assert "config/text_summary" in events.Tags()["tensors"]  # the resolved config as text
    # tokens/s: the log's figure per logging interval, and the run's figure once (as all_results.json has it)
    rates = {e.step: e.value for e in events.Scalars("train/tokens_per_s")}
    assert rates == pytest.approx({r["step"]: r["tokens_per_s"] for r in train if "tokens_per_s" in r})
    results = json.loads((out / "all_results.json").read_text())
    (summary,) = events.Scalars("summary/train_tokens_per_s")
    assert summary.value == pytest.approx(results["train_tokens_per_s"])
    assert (out / "report.html").is_file()  # written at the end of every training run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read().decode("utf-8"))


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"swanlab watch exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            return _get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_swanlab_local_dashboard_serves_the_run(tiny_qwen2, memo_dir, tmp_path, no_swanlab_account):
    """No account, no network: swanlab_mode auto -> local; `swanlab watch` shows the run's loss over HTTP."""
    assert resolve_swanlab_mode("auto") == "local"
    out = tmp_path / "swan"
    cfg = config(tiny_qwen2, memo_dir, out, max_steps=4, logging_steps=1, val_size=2, eval_strategy="steps",
                 eval_steps=2, learning_rate=3e-2, report_to="swanlab", swanlab_project="instill-tests",
                 swanlab_run_name="tiny-memo", eval_task="generation", max_new_tokens=4)
    run_training(cfg)
    logdir = out / "swanlog"
    assert logdir.is_dir()
    train = [r for r in log_rows(out) if "loss" in r]

    # `instill eval` results (real predictions of the trained adapter) go to a '<run>-eval' run as a text panel.
    from instill.evaluate.runner import run as run_eval

    run_eval(cfg.model_copy(update={"train": cfg.train.model_copy(update={"do_train": False})}))  # logs the eval run

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "swanlab", "watch", str(logdir), "-h", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        project = _wait_for(f"{base}/project", proc)["data"]
        assert project["name"] == "instill-tests"
        experiments = {e["name"]: e for e in project["experiments"]}
        assert set(experiments) == {"tiny-memo", "tiny-memo-eval"}, experiments
        exp = experiments["tiny-memo"]
        assert exp["status"] == 1  # finished cleanly
        assert exp["config"]["learning_rate"]["value"] == pytest.approx(3e-2)
        assert exp["config"]["report_to"]["value"] == ["swanlab"]

        def tag(exp_id: int, name: str) -> list[dict]:
            return _get(f"{base}/experiment/{exp_id}/tag/{urllib.parse.quote(name)}")["data"]["list"]

        loss = tag(exp["id"], "train/loss")
        assert [p["index"] for p in loss] == [1, 2, 3, 4]
        assert [p["data"] for p in loss] == pytest.approx([r["loss"] for r in train], rel=1e-5)
        assert [p["index"] for p in tag(exp["id"], "eval/loss")][-1] == 4
        assert all(p["data"] > 50 for p in tag(exp["id"], "hardware/rss_mb"))
        assert len(tag(exp["id"], "train/tokens_per_s")) >= 3
        charts = {c["name"] for c in _get(f"{base}/experiment/{exp['id']}/chart")["data"]["charts"]}
        assert {"train/loss", "train/learning_rate", "train/grad_norm", "hardware/cpu_percent"} <= charts

        evaluated = experiments["tiny-memo-eval"]
        panel = tag(evaluated["id"], "eval/predictions")[-1]
        predictions = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
        assert len(panel["data"]) == len(predictions) == 2
        assert all("→ prediction:" in text for text in panel["data"])
        assert tag(evaluated["id"], "eval/bleu-4")[-1]["data"] >= 0
        # The dashboard's web page itself is served too, and in a browser it draws the run's charts.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
        if CHROMIUM is not None:
            page = f"http://127.0.0.1:{port}/experiment/{exp['id']}"
            dom = dump_dom(tmp_path / "profile", page, budget_ms=15000, offline=False)
            for chart in ("train/loss", "train/learning_rate", "hardware/rss_mb", "eval/loss"):
                assert chart in dom, chart
            assert dom.count("<canvas") >= 4
            screenshot(tmp_path / "profile", page, out / "swanlab_dashboard.png", size="1400,1100",
                       budget_ms=15000, offline=False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_broken_tracker_does_not_stop_training(tiny_qwen2, memo_dir, tmp_path, no_swanlab_account):
    """swanlab_logdir is a file, so SwanLab cannot start: a warning, then training and TensorBoard go on."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    out = tmp_path / "broken"
    with pytest.warns(RuntimeWarning, match="swanlab tracker failed to start"):
        result = tiny_run(tiny_qwen2, memo_dir, out, report_to="swanlab,tensorboard", swanlab_mode="local",
                          swanlab_logdir=str(blocker / "swanlog"))
    assert result.trainer.state.global_step == 4
    assert (out / "adapter_model.safetensors").is_file()
    assert any((out / "runs").rglob("events.out.tfevents.*"))


def test_only_the_main_process_logs(tmp_path, no_swanlab_account):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    cfg = build_config({"model_name_or_path": "x", "dataset": "d", "output_dir": str(tmp_path / "out"),
                        "report_to": "swanlab,tensorboard", "swanlab_mode": "local"})
    (callback,) = tracker_callbacks(cfg, tmp_path / "out")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    callback.on_train_begin(args, TrainerState(is_world_process_zero=False), TrainerControl())
    callback.on_log(args, TrainerState(is_world_process_zero=False, global_step=1), TrainerControl(), logs={"loss": 1.0})
    callback.close()
    assert not callback.started and not (tmp_path / "out").exists()


def test_report_to_validation_and_swanlab_modes(tmp_path, monkeypatch, no_swanlab_account):
    base = {"model_name_or_path": "x", "dataset": "d"}
    assert build_config({**base, "report_to": "swanlab, tensorboard"}).train.report_to == ["swanlab", "tensorboard"]
    assert build_config({**base, "report_to": "none"}).train.report_to == ["none"]
    with pytest.raises(ConfigError, match="'wandb' is not a supported tracker"):
        build_config({**base, "report_to": "wandb"})
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        build_config({**base, "report_to": "none,swanlab"})
    with pytest.raises(ConfigError, match="swanlab_mode"):
        build_config({**base, "swanlab_mode": "online-ish"})

    assert resolve_swanlab_mode("auto") == "local"  # no key configured: the local dashboard
    assert resolve_swanlab_mode("cloud") == "online"
    assert resolve_swanlab_mode("offline") == "offline"
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    assert resolve_swanlab_mode("auto") == "offline"
    monkeypatch.delenv("SWANLAB_MODE")
    monkeypatch.setenv("SWANLAB_API_KEY", "0" * 21)  # a configured key (never used: nothing is started)
    assert resolve_swanlab_mode("auto") == "online"


def test_hardware_sample_is_shared_within_a_step():
    first = hardware.sample(10_001)
    assert first["rss_mb"] > 0 and first["peak_rss_mb"] >= first["rss_mb"] and "cpu_percent" in first
    assert hardware.sample(10_001) == first  # JSONL log and trackers see the same numbers
    import psutil

    def spent() -> float:  # this process's user + system CPU seconds
        return sum(psutil.Process().cpu_times()[:2])

    start = spent()
    while spent() - start < 0.05:  # CPU time, not a fixed loop: on a busy machine a loop may not reach a clock tick
        sum(i * i for i in range(20_000))
    assert hardware.sample(10_002)["cpu_percent"] > 0
    env = hardware.environment()
    assert env["device"] in ("cpu", "cuda", "mps") and env["packages"]["torch"] and env["torch_threads"] >= 1


def test_tracking_callback_swallows_tracker_errors():
    from instill.tracking.trackers import Tracker

    class Exploding(Tracker):
        name = "exploding"

        def start(self, config):
            pass

        def log(self, metrics, step):
            raise OSError("disk full")

        def log_texts(self, key, items, step):
            pass

        def finish(self):
            pass

    callback = TrackingCallback([Exploding()], {})
    callback.start()
    with pytest.warns(RuntimeWarning, match="exploding tracker failed to log"):
        callback.log({"train/loss": 1.0}, 1)
    assert callback.trackers == []
    callback.log({"train/loss": 1.0}, 2)  # switched off: no second warning, no error
    callback.close()
