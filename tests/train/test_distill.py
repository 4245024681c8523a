"""`stage: distill` on tiny Qwen2s: a teacher sharing the student's tokenizer trains it; another tokenizer is
refused in one line before the teacher loads."""

from __future__ import annotations

import json

import pytest

from instill.cli import main as instill_main
from tests.conftest import write_dataset

ROWS = [{"instruction": f"Say something about the number {i}."} for i in range(8)]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from tests.fixtures.qwen2 import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("teacher"), seed=1)


def _yaml(tmp_path, student, teacher, extra: str = "") -> str:
    data = write_dataset(tmp_path / "data", "prompts", ROWS)
    path = tmp_path / "distill.yaml"
    path.write_text(f"model_name_or_path: {student}\nstage: distill\nfinetuning_type: full\n"
                    f"teacher_model_name_or_path: {teacher}\ndataset: prompts\ndataset_dir: {data}\n"
                    f"template: qwen\noutput_dir: {tmp_path / 'out'}\nper_device_train_batch_size: 4\n"
                    "max_completion_length: 8\nmax_steps: 6\nlogging_steps: 1\nlearning_rate: 1.0e-2\n"
                    "lr_scheduler_type: constant\nsave_strategy: 'no'\ntorch_num_threads: 1\n" + extra)
    return str(path)


def test_distill_moves_the_student_toward_the_teacher(tiny_qwen2, teacher, tmp_path, capsys):
    assert instill_main(["train", _yaml(tmp_path, tiny_qwen2, teacher)]) == 0
    printed = capsys.readouterr().out
    assert "done (distill)" in printed and "teacher: " in printed
    log = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 6 and all("completions/mean_length" in r for r in log if "loss" in r)
    assert min(losses[-2:]) < losses[0], losses


def test_a_teacher_with_another_tokenizer_is_refused_in_one_line(tiny_qwen2, teacher, tmp_path, capsys):
    import shutil

    from transformers import AutoTokenizer

    other = tmp_path / "other"
    shutil.copytree(teacher, other)
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["<extra_token_for_test>"])
    tokenizer.save_pretrained(other)
    assert instill_main(["train", _yaml(tmp_path, tiny_qwen2, other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has another tokenizer than the student" in err and "\n" not in err, err
