"""do_eval: the eval task's metrics run at every evaluation during training."""

from __future__ import annotations

import json

from instill.config import build_config
from instill.train.run import run_training
from tests.evaluate.conftest import write_toy_datasets


def test_task_metrics_during_training(tiny_qwen2, tmp_path):
    data = write_toy_datasets(tmp_path / "data", n_train=32, n_test=8)
    out = tmp_path / "run"
    result = run_training(build_config({
        "model_name_or_path": str(tiny_qwen2), "template": "empty", "dataset_dir": str(data), "cutoff_len": 64,
        "output_dir": str(out), "dataset": "toy_train", "eval_dataset": "toy_test", "finetuning_type": "full",
        "learning_rate": 1e-2, "max_steps": 8, "per_device_train_batch_size": 8, "eval_strategy": "steps",
        "eval_steps": 4, "save_strategy": "no", "do_eval": True, "eval_task": "classification",
        "choices_column": "category", "max_new_tokens": 4,
    }))
    lines = [json.loads(x) for x in (out / "eval/task_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8]
    assert all(0.0 <= r["eval_accuracy"] <= 1.0 for r in lines)
    assert "eval_accuracy" in result.metrics
