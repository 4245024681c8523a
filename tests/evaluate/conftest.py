"""Fixtures for eval/predict: a tiny Qwen2 trained on a task with one right answer, and data writers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

FUDAN_VAL = SHARED_DATA / "cls_fudan_derived_msswiftlearn" / "fudan_news_4class__val.jsonl"
CCFBDCI = SHARED_DATA / "ner_ccfbdci" / "ccfbdci.jsonl"
TOY_LABELS = ["体育", "财经", "政治", "计算机"]

# Seed 003's NER prompt, word for word.
NER_INSTRUCTION = (
    "你是一个文本实体识别领域的专家,你需要从给定的句子中提取 地点; 人名; 地理实体; 组织 实体. 以 json 格式输出, "
    '如 {"entity_text": "南京", "entity_label": "地理实体"} 注意: 1. 输出的每一行都必须是正确的 json 字符串. '
    '2. 找不到任何实体时, 输出"没有找到任何实体". '
)
NER_NAMES = ["地点", "人名", "地理实体", "组织"]


def register(directory: Path, name: str, file_name: str, **entry) -> None:
    """Add one entry to directory/dataset_info.json."""
    info_path = directory / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = {"file_name": file_name, **entry}
    info_path.write_text(json.dumps(info, ensure_ascii=False, indent=2))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def fudan_rows(n: int) -> list[dict]:
    """n rows spread over the 4-class fudan-news val file (all classes present for n >= 8)."""
    rows = [json.loads(line) for line in FUDAN_VAL.read_text(encoding="utf-8").splitlines()]
    step = len(rows) // n
    return [rows[i * step] for i in range(n)]


def ner_seed003_rows(n: int) -> list[dict]:
    """ccfbdci rows (with and without entities) converted exactly as seed 003 converts them."""
    picked: list[dict] = []
    with CCFBDCI.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            want_empty = len(picked) % 3 == 0  # every third row has no entity
            if len(row["text"]) <= 60 and want_empty == (not row["entities"]):
                picked.append(row)
            if len(picked) == n:
                break
    out = []
    for row in picked:
        answer = ""
        for entity in row["entities"]:
            label = next(name for name in entity["entity_names"] if name in NER_NAMES)
            answer += f'{{"entity_text": "{entity["entity_text"]}", "entity_label": "{label}"}}'
        out.append({"instruction": NER_INSTRUCTION, "input": f"文本:{row['text']}", "output": answer or "没有找到任何实体",
                    "gold": [[e["entity_text"], next(x for x in e["entity_names"] if x in NER_NAMES)]
                             for e in row["entities"]]})
    return out


def toy_rows(n: int, seed: int) -> list[dict]:
    """Seed-004-shaped rows (text / category string / output) whose label is fixed by the last digit."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digit = rng.randrange(10)
        candidates = list(TOY_LABELS)
        rng.shuffle(candidates)
        rows.append({"text": f"编号：{digit}", "category": str(candidates), "output": TOY_LABELS[digit % 4]})
    return rows


def write_toy_datasets(data: Path, n_train: int, n_test: int) -> Path:
    """toy_train (json) and toy_test (jsonl) registered in data/dataset_info.json."""
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.json").write_text(json.dumps(toy_rows(n_train, seed=0), ensure_ascii=False))
    write_jsonl(data / "test.jsonl", toy_rows(n_test, seed=1))
    columns = {"prompt": "text", "response": "output"}
    register(data, "toy_train", "train.json", columns=columns)
    register(data, "toy_test", "test.jsonl", columns=columns)
    return data


@pytest.fixture(scope="session")
def trained_toy(tmp_path_factory, tiny_qwen2) -> dict:
    """The tiny Qwen2 fully fine-tuned (40 steps) on toy_rows: the answer is unambiguous from the prompt.

    Template `empty` puts the answer right after the digit, so the tiny model learns the mapping in
    seconds. Returns the paths and a config dict for evaluating it (output_dir = the trained model).
    """
    from instill.config import build_config
    from instill.train.run import run_training

    root = tmp_path_factory.mktemp("toy")
    data = write_toy_datasets(root / "data", n_train=64, n_test=24)
    out = root / "run"
    base = {"model_name_or_path": str(tiny_qwen2), "template": "empty", "dataset_dir": str(data), "cutoff_len": 64,
            "output_dir": str(out)}
    run_training(build_config({
        **base, "dataset": "toy_train", "finetuning_type": "full", "overwrite_output_dir": True,
        "learning_rate": 1e-2, "lr_scheduler_type": "constant", "max_steps": 40, "per_device_train_batch_size": 16,
        "logging_steps": 10, "save_strategy": "no", "seed": 0,
        # The sampler this 40-step toy was tuned with: its accuracy (>= 0.9) is order-sensitive (0.75 with the
        # length-grouped order, whose batches are as random here: 64 rows of near-equal length).
        "group_by_length": False,
    }))
    evaluate = {**base, "do_train": False, "eval_dataset": "toy_test", "eval_task": "classification",
                "choices_column": "category"}
    return {"root": root, "data": data, "model": out, "base": tiny_qwen2, "config": evaluate}
