"""disable_shuffling (LLaMA-Factory's key): rows in the datasets' order and a sequential train sampler."""

from __future__ import annotations

import torch

from instill.config import DataArgs, TrainArgs, build_config
from instill.data.dataset import prepare_datasets
from instill.data.templates import get_template
from instill.train.run import training_arguments
from tests.conftest import write_dataset


def _trainer(shuffle: bool, group_by_length: bool = True):
    from datasets import Dataset
    from transformers import Trainer

    args = training_arguments(TrainArgs(output_dir="unused", group_by_length=group_by_length), has_eval=False,
                              shuffle=shuffle)
    rows = Dataset.from_dict({"input_ids": [[1] * n for n in range(1, 9)], "labels": [[1] * n for n in range(1, 9)]})
    return Trainer(model=torch.nn.Linear(2, 2), args=args, train_dataset=rows)


def test_the_train_sampler_is_sequential():
    assert type(_trainer(shuffle=False)._get_train_sampler()).__name__ == "SequentialSampler"
    assert list(_trainer(shuffle=False)._get_train_sampler()) == list(range(8))
    assert type(_trainer(shuffle=True, group_by_length=False)._get_train_sampler()).__name__ == "RandomSampler"


def test_rows_keep_the_datasets_order(qwen2_tokenizer, tmp_path):
    write_dataset(tmp_path, "toy", [{"instruction": f"q{i}", "output": "a"} for i in range(30)])
    template = get_template("qwen", qwen2_tokenizer)

    def first_prompts(**options) -> list[str]:
        args = DataArgs(dataset=["toy"], dataset_dir=str(tmp_path), cutoff_len=64, **options)
        train, _ = prepare_datasets(args, template, seed=0)
        return [qwen2_tokenizer.decode(ids).split("user\n")[1].split("<")[0] for ids in train.rows["input_ids"]]

    assert first_prompts(disable_shuffling=True) == [f"q{i}" for i in range(30)]
    assert first_prompts() != [f"q{i}" for i in range(30)]
    assert len(first_prompts(disable_shuffling=True, val_size=5)) == 25  # a held-out part is still drawn at random


def test_the_key_is_a_config_field():
    config = build_config({"model_name_or_path": "m", "disable_shuffling": True})
    assert config.data.disable_shuffling is True
