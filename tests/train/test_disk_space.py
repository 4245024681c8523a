"""Free disk against what the run writes, checked before training starts (disk_usage faked): one line, exit 2."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from instill.cli import main
from instill.config import build_config
from instill.errors import ConfigError
from instill.model import footprint
from instill.model.footprint import check_free_disk, checkpoint_bytes
from instill.train import run as train_run
from tests.conftest import write_dataset


def _free(monkeypatch, n_bytes: int) -> None:
    monkeypatch.setattr(footprint.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**12, 10**12 - n_bytes, n_bytes))


def _config(out, **keys):
    return build_config({"model_name_or_path": "unused", "output_dir": str(out), "finetuning_type": "full",
                         "save_strategy": "steps", "save_steps": 10, **keys})


def test_checkpoints_counted_against_save_total_limit(tmp_path):
    config = _config(tmp_path)
    need, count = checkpoint_bytes(1000, 1000, config, steps=35)
    assert count == 4 and need == 4000 + 4 * (4000 + 8000)  # fp32 weights, + Adam's two moments per checkpoint
    limited = _config(tmp_path, save_total_limit=2)
    assert checkpoint_bytes(1000, 1000, limited, steps=35)[1] == 2
    assert checkpoint_bytes(1000, 1000, limited, steps=35, kept=1)[1] == 1  # a resumed run already holds one
    assert checkpoint_bytes(1000, 1000, limited, steps=35, kept=3)[1] == 0
    lora = _config(tmp_path, finetuning_type="lora", save_strategy="no")
    assert checkpoint_bytes(10**9, 1000, lora, steps=35) == (4000, 0)  # only the adapter is saved


def test_check_free_disk(tmp_path, monkeypatch):
    _free(monkeypatch, 10 * 2**20)
    check_free_disk(tmp_path / "not" / "yet", 5 * 2**20, 1)  # fits; a missing output_dir is checked at its parent
    with pytest.raises(ConfigError) as err:
        check_free_disk(tmp_path / "out", 3 * 2**30, 2)
    message = str(err.value)
    assert "\n" not in message and f"output_dir {tmp_path / 'out'}" in message
    assert "≈ 3.0 GiB (final weights + 2 checkpoints)" in message and "only 10 MiB is free" in message


def test_a_resumed_run_counts_only_the_steps_left(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(train_run, "check_free_disk", lambda out, need, count: seen.append(count))
    out = tmp_path / "out"
    for step in (10, 20):
        (out / f"checkpoint-{step}").mkdir(parents=True)
    config = _config(out, save_total_limit=5)
    model = torch.nn.Linear(4, 4)
    train_run.check_disk(model, config, 45, None)
    train_run.check_disk(model, config, 45, str(out / "checkpoint-20"))
    assert seen == [3, 3]  # 2 kept + 3 new reach the limit; resumed at 20: 25 steps left, 3 saves


def test_train_refuses_before_training_when_the_disk_is_too_small(tiny_qwen2, tmp_path, monkeypatch, capsys):
    data = write_dataset(tmp_path / "data", "memo", [{"instruction": "Name the river.", "output": "Silverrun."}] * 4)
    out = tmp_path / "out"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_qwen2), "template": "qwen", "dataset": "memo", "dataset_dir": str(data),
        "output_dir": str(out), "cutoff_len": 32, "finetuning_type": "full", "max_steps": 4,
        "save_strategy": "steps", "save_steps": 2, "report_to": "none"}))
    _free(monkeypatch, 20 * 2**20)  # the tiny Qwen2 is ~40 MB in fp32: not even the final weights fit
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoints) but only 20 MiB is free" in err[0] and "save_total_limit" in err[0]
    assert not (out / "trainer_log.jsonl").exists() and not list(out.glob("checkpoint-*"))
