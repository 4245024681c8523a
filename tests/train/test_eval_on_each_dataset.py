"""eval_on_each_dataset (LLaMA-Factory's key): each eval dataset evaluated apart, as eval_<name>_loss, through
the log, the summary, the plot and the report."""

from __future__ import annotations

import json

import pytest

from instill.config import build_config
from instill.errors import ConfigError
from instill.stage_facts import eval_losses
from instill.train.run import run_training
from tests.conftest import write_dataset


def test_each_eval_dataset_has_its_own_loss(tiny_qwen2, tmp_path):
    data = tmp_path / "data"
    write_dataset(data, "memo", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(8)])
    write_dataset(data, "short", [{"instruction": "hi", "output": "ok"}] * 2)
    write_dataset(data, "long", [{"instruction": "tell me a story " * 6, "output": "once upon a time " * 4}] * 3)
    out = tmp_path / "run"
    result = run_training(build_config({
        "model_name_or_path": str(tiny_qwen2), "template": "qwen", "dataset": "memo", "eval_dataset": "short,long",
        "eval_on_each_dataset": True, "dataset_dir": str(data), "output_dir": str(out), "cutoff_len": 64,
        "per_device_train_batch_size": 4, "max_steps": 2, "logging_steps": 1, "eval_strategy": "steps",
        "eval_steps": 1, "save_strategy": "no", "report_to": "none", "plot_loss": True}))
    assert {"eval_short_loss", "eval_long_loss"} <= set(result.metrics)
    assert result.metrics["eval_short_loss"] != result.metrics["eval_long_loss"]
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    last = [label for r in log if r["step"] == 2 for label in eval_losses(r)]
    assert sorted(last) == ["eval loss (long)", "eval loss (short)"]
    assert (out / "training_loss.png").is_file()
    summary = json.loads((out / "data_summary.json").read_text())["sets"]
    assert summary["eval short"]["kept"] == 2 and summary["eval long"]["kept"] == 3
    assert "eval loss (long)" in (out / "report.html").read_text()


def test_stages_that_evaluate_together_say_so():
    with pytest.raises(ConfigError, match="stage dpo evaluates them together"):
        build_config({"model_name_or_path": "m", "stage": "dpo", "eval_dataset": "a,b", "eval_on_each_dataset": True})
    with pytest.raises(ConfigError, match="set metric_for_best_model .* e.g. eval_a_loss"):
        build_config({"model_name_or_path": "m", "dataset": "d", "eval_dataset": "a,b", "eval_on_each_dataset": True,
                      "load_best_model_at_end": True, "eval_strategy": "steps", "save_strategy": "steps"})
