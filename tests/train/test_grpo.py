"""`stage: grpo` / `rloo` end to end on the tiny Qwen2: prompt rows, rewards from the row's columns, logs,
checkpoints and resume, plugin errors in one line."""

from __future__ import annotations

import json

import pytest

from instill.cli import main as instill_main
from tests.conftest import write_dataset

LABELS = ["sports", "finance", "tech"]
ROWS = [{"instruction": f"Headline {i}: which topic? Answer with one of sports, finance, tech.",
         "output": LABELS[i % 3], "source_id": i} for i in range(8)]


def _yaml(tmp_path, model, data, out, extra: str = "", stage: str = "grpo", rewards: str = "label_match") -> str:
    path = tmp_path / "grpo.yaml"
    path.write_text(f"model_name_or_path: {model}\nstage: {stage}\nfinetuning_type: lora\nlora_rank: 4\n"
                    f"dataset: heads\ndataset_dir: {data}\ntemplate: qwen\noutput_dir: {out}\n"
                    "per_device_train_batch_size: 4\nnum_generations: 4\nmax_completion_length: 8\n"
                    "max_steps: 2\nlogging_steps: 1\n"
                    f"reward_funcs: {rewards}\nlearning_rate: 1.0e-3\ntorch_num_threads: 1\n"
                    + (extra if "save_" in extra else extra + "save_strategy: 'no'\n"))
    return str(path)


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def test_grpo_label_match_logs_rewards_and_resumes(tiny_qwen2, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "heads", ROWS)
    out = tmp_path / "out"
    config = _yaml(tmp_path, tiny_qwen2, data, out, "beta: 0.05\nsave_strategy: steps\nsave_steps: 1\nplot_loss: true\n")
    assert instill_main(["train", config]) == 0
    printed = capsys.readouterr().out
    assert "done (grpo)" in printed
    steps = [r for r in _log(out) if "loss" in r]
    assert len(steps) == 2
    assert all({"reward", "reward_std", "rewards/label_match/mean", "completions/mean_length", "kl"} <= set(r)
               for r in steps)
    assert "reference model: the base with the adapter disabled" in printed
    assert "Tried to track the number of tokens" not in printed
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert rows and {"step", "prompt", "completion", "label_match"} <= set(rows[0])
    assert (out / "adapter_model.safetensors").is_file() and (out / "rewards.png").is_file()
    assert "Sampled answers" in (out / "report.html").read_text()
    assert instill_main(["train", config, "max_steps=3", "resume_from_checkpoint=true"]) == 0
    assert [r["step"] for r in _log(out) if "loss" in r][-1] == 3


PLUGIN = """import json, pathlib
def seen(prompts, completions, **kwargs):
    pathlib.Path(__file__).with_name("seen.json").write_text(json.dumps(sorted(kwargs)))
    return [float(len(c) < 20) for c in completions]
def broken(prompts, completions, **kwargs):
    return [1.0 / 0 for c in completions]
"""


def test_plugin_gets_the_rows_columns_and_a_broken_one_stops_in_one_line(tiny_qwen2, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "heads", ROWS)
    (tmp_path / "my_rewards.py").write_text(PLUGIN)
    config = _yaml(tmp_path, tiny_qwen2, data, tmp_path / "out", rewards="label_match, my_rewards.py:seen")
    assert instill_main(["train", config, "max_steps=1"]) == 0
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert {"output", "source_id", "trainer_state"} <= set(seen)
    assert "rewards/seen/mean" in _log(tmp_path / "out")[0]
    capsys.readouterr()
    assert instill_main(["train", config, "overwrite_output_dir=true", "max_steps=1",
                                 "reward_funcs=my_rewards.py:broken"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("reward_funcs: " + str(tmp_path / "my_rewards.py") + ":broken raised ZeroDivisionError: "
                        "float division by zero"), err
    assert "\n" not in err and "Traceback" not in err


def test_rloo_trains_on_the_same_rows(tiny_qwen2, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "heads", ROWS)
    out = tmp_path / "out"
    config = _yaml(tmp_path, tiny_qwen2, data, out, "top_k: 5\nrepetition_penalty: 1.2\n", stage="rloo")
    assert instill_main(["train", config]) == 0
    assert "done (rloo)" in capsys.readouterr().out
    steps = [r for r in _log(out) if "loss" in r]
    assert len(steps) == 2 and all("rewards/label_match/mean" in r for r in steps)
    import torch

    args = torch.load(out / "training_args.bin", weights_only=False)  # the RLOOConfig trl sampled with
    assert (args.top_k, args.repetition_penalty) == (5, 1.2)


def test_a_reward_model_scores_the_answers(tiny_qwen2, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny_qwen2, num_labels=1).save_pretrained(rm)
    AutoTokenizer.from_pretrained(tiny_qwen2).save_pretrained(rm)
    data = write_dataset(tmp_path / "data", "heads", ROWS)
    out = tmp_path / "out"
    assert instill_main(["train", _yaml(tmp_path, tiny_qwen2, data, out, f"reward_model: {rm}\n",
                                        rewards="format"), "max_steps=1"]) == 0
    assert "reward model: " in capsys.readouterr().out
    step = [r for r in _log(out) if "loss" in r][0]
    assert {"rewards/format/mean", "rewards/rm/mean"} <= set(step), sorted(step)
    assert instill_main(["train", _yaml(tmp_path, tiny_qwen2, data, out, f"reward_model: {tmp_path}/none\n"),
                         "overwrite_output_dir=true", "max_steps=1"]) == 2
    assert "reward_model: " in capsys.readouterr().err


@pytest.mark.parametrize("method, extra, reference", [
    ("lora", "use_dora: true\nbeta: 0.05\n", "the base with the adapter disabled"),
    ("lora", "quantization_bit: 4\n", None),  # QLoRA; beta 0 (trl's default): no reference at all
    ("full", "beta: 0.05\n", "a frozen copy of the base"),
])
def test_grpo_trains_with_dora_qlora_and_full(tiny_qwen2, tmp_path, capsys, method, extra, reference):
    """The other methods train online too: rewards logged each step, the result saved as that method saves it."""
    data = write_dataset(tmp_path / "data", "heads", ROWS)
    out = tmp_path / "out"
    config = _yaml(tmp_path, tiny_qwen2, data, out, extra)
    assert instill_main(["train", config, f"finetuning_type={method}", "max_steps=1"]) == 0
    printed = capsys.readouterr().out
    assert "done (grpo)" in printed
    assert [r for r in _log(out) if "loss" in r][0]["rewards/label_match/mean"] is not None
    assert (reference is None and "reference model" not in printed) or f"reference model: {reference}" in printed
    saved = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    assert (out / saved).is_file()
