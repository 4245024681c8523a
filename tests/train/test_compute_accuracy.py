"""compute_accuracy (LLaMA-Factory's key): token accuracy at each evaluation, logged as eval_accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from instill.config import build_config
from instill.errors import ConfigError
from instill.train.run import run_training
from instill.train.sft import token_accuracy
from tests.conftest import write_dataset


def test_accuracy_is_the_mean_over_rows_of_each_rows_next_token_accuracy():
    # row 0: labels at positions 2..3 -> predictions at 1..2; row 1: one labelled position, predicted wrong
    predictions = np.array([[9, 5, 6, 0], [9, 9, 9, -100]])
    labels = np.array([[-100, -100, 5, 7], [-100, -100, 4, -100]])
    assert token_accuracy(EvalPrediction(predictions, labels)) == {"accuracy": (0.5 + 0.0) / 2}


def test_an_sft_run_logs_eval_accuracy(tiny_qwen2, tmp_path):
    data = tmp_path / "data"
    write_dataset(data, "memo", [{"instruction": f"question {i}", "output": f"answer {i} " * 3} for i in range(12)])
    out = tmp_path / "run"
    result = run_training(build_config({
        "model_name_or_path": str(tiny_qwen2), "template": "qwen", "dataset": "memo", "val_size": 4,
        "compute_accuracy": True, "dataset_dir": str(data), "output_dir": str(out), "cutoff_len": 64,
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 3, "max_steps": 2, "eval_strategy": "steps",
        "eval_steps": 2, "save_strategy": "no", "report_to": "none"}))
    accuracy = result.metrics["eval_accuracy"]
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["eval_accuracy"] for r in log if "eval_accuracy" in r] == [accuracy]
    # the same figure by hand: the trained model's argmax against the next labelled token, row by row
    trainer = result.trainer
    model, scores = trainer.model.eval(), []
    for row in trainer.eval_dataset:
        ids, labels = torch.tensor([row["input_ids"]]), torch.tensor(row["labels"])
        with torch.no_grad():
            predicted = model(input_ids=ids).logits[0].argmax(-1)
        mask = labels[1:] != -100
        scores.append((predicted[:-1][mask] == labels[1:][mask]).float().mean().item())
    assert accuracy == pytest.approx(sum(scores) / len(scores), abs=1e-6)


def test_it_is_an_sft_key_and_does_not_share_its_name():
    with pytest.raises(ConfigError, match="compute_accuracy .* for stage sft .*, not dpo"):
        build_config({"model_name_or_path": "m", "stage": "dpo", "compute_accuracy": True})
    with pytest.raises(ConfigError, match="keep one of them"):
        build_config({"model_name_or_path": "m", "compute_accuracy": True, "do_eval": True,
                      "eval_task": "classification"})
