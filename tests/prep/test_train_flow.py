"""Done-when: datasets built by `instill data` pass the doctor and train with `instill train`, unchanged."""

from __future__ import annotations

import json

import pandas as pd
import yaml

from instill.cli import main as instill_main
from tests.prep.conftest import CCFBDCI, FIREFLY, run


def test_built_datasets_pass_check_and_train(tmp_path, fudan_raw, tiny_qwen2, capsys):
    data = tmp_path / "data"
    info = data / "dataset_info.json"
    pd.DataFrame([["甲公司碳排放下降。", "```yaml\nknowledge_graph: {}\n```"], ["目录页。", "跳过"]]).to_excel(
        tmp_path / "esg.xlsx", index=False)
    commands = [
        ("convert", "--input", fudan_raw, "--preset", "classification", "--label-field", "output",
         "--choices-field", "category", "--limit", 6, "--out", data / "news_cls.jsonl"),
        ("convert", "--input", CCFBDCI, "--preset", "ner", "--limit", 6, "--out", data / "ner.jsonl"),
        ("convert", "--input", tmp_path / "esg.xlsx", "--instruction", "构建知识图谱", "--input-column", 0,
         "--output-column", 1, "--output-regex", "```yaml|跳过", "--out", data / "esg.json"),
        ("convert", "--input", FIREFLY, "--preset", "dialogue", "--limit", 2, "--format", "openai",
         "--out", data / "chat.jsonl"),
    ]
    for command in commands:
        assert run(*command, "--register", info) == 0
    assert json.loads(info.read_text())["chat"]["tags"]["role_tag"] == "role"
    config = {
        "model_name_or_path": str(tiny_qwen2), "template": "auto", "dataset": "news_cls,ner,esg,chat",
        "dataset_dir": str(data), "cutoff_len": 96, "finetuning_type": "lora", "lora_target": "all",
        "output_dir": str(tmp_path / "out"), "overwrite_output_dir": True, "max_steps": 2,
        "per_device_train_batch_size": 2, "logging_steps": 1, "save_steps": 100, "learning_rate": 1e-3,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert run("check", path) == 0
    assert "check: 16 rows in 4 datasets, 0 bad" in capsys.readouterr().out
    assert instill_main(["train", str(path)]) == 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
