"""stage dpo / kto / rm on the tiny Qwen2: a planted preference is learnt, reward metrics are logged,
LoRA DPO holds one copy of the base weights, every pref_loss runs on LLaMA-Factory's demo files."""

from __future__ import annotations

import gc
import json
import math

import pytest
import torch

from instill.config import build_config
from instill.errors import ConfigError
from instill.evaluate.runner import run as run_eval
from instill.train.run import run_training
from tests.conftest import write_dataset
from tests.data.test_pairs import LF_PREFERENCE

PHRASE = " Thank you for asking."  # every chosen answer ends with it; no rejected one does
QUESTIONS = ["Name a colour.", "Name a fruit.", "Name a river.", "Name a city.", "Pick a number.", "Name a bird.",
             "Name a tree.", "Name a metal."]
ANSWERS = ["Blue.", "Pear.", "Nile.", "Oslo.", "Seven.", "Owl.", "Oak.", "Iron."]


@pytest.fixture()
def data_dir(tmp_path):
    rows = [{"instruction": q, "input": "", "chosen": a + PHRASE, "rejected": a} for q, a in zip(QUESTIONS, ANSWERS)]
    ranking = {"ranking": True, "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                            "rejected": "rejected"}}
    write_dataset(tmp_path / "data", "planted", rows, **ranking)
    info = json.loads((tmp_path / "data/dataset_info.json").read_text())
    (tmp_path / "data/dataset_info.json").write_text(json.dumps({**info, **LF_PREFERENCE}))
    return tmp_path / "data"


def config(model_dir, data_dir, out_dir, **overrides):
    raw = {
        "model_name_or_path": str(model_dir), "template": "qwen", "dataset": "planted", "dataset_dir": str(data_dir),
        "output_dir": str(out_dir), "stage": "dpo", "cutoff_len": 48, "per_device_train_batch_size": 4,
        "learning_rate": 5e-3, "max_steps": 6, "logging_steps": 1, "lr_scheduler_type": "constant",
        "save_strategy": "no", "lora_rank": 8, "report_to": "none", "seed": 7,
    }
    raw.update(overrides)
    return build_config(raw)


def log_rows(out_dir):
    return [json.loads(line) for line in (out_dir / "trainer_log.jsonl").read_text().splitlines()]


def _embedding_sized(shape) -> list[torch.Tensor]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.shape == shape]


def test_lora_dpo_learns_the_planted_preference_with_one_copy_of_the_base(tiny_qwen2, data_dir, tmp_path):
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(tiny_qwen2)
    shape = torch.Size([model_config.vocab_size, model_config.hidden_size])
    before = {id(o) for o in _embedding_sized(shape)}  # models other tests in this process still hold
    result = run_training(config(tiny_qwen2, data_dir, tmp_path / "dpo", max_steps=4, plot_loss=True,
                                 per_device_train_batch_size=2))
    rows = [r for r in log_rows(tmp_path / "dpo") if "loss" in r]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(rows[0])
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"] + 0.05
    assert rows[-1]["rewards/accuracies"] == 1.0 and rows[-1]["loss"] < rows[0]["loss"]
    assert (tmp_path / "dpo/rewards.png").is_file()  # plot_loss: true also draws the reward terms
    trainer = result.trainer
    assert trainer.ref_model is None and trainer.args.loss_type == ["sigmoid"] and not trainer.args.bf16
    embedding = trainer.model.get_input_embeddings().weight
    assert embedding.shape == shape
    copies = [o for o in _embedding_sized(shape) if id(o) not in before]
    assert len(copies) == 1  # the reference pass disables the adapter; no second base in memory

    # instill eval, eval_task: preference, base vs tuned on the same pairs
    reports = run_eval(config(tiny_qwen2, data_dir, tmp_path / "dpo", eval_task="preference",
                              eval_dataset="planted", do_train=False), compare_base=True)
    base, tuned = reports["base"], reports["tuned"]
    assert base["pairs"] == tuned["pairs"] == len(QUESTIONS) and "implicit_reward_accuracy" not in base
    assert tuned["implicit_reward_accuracy"] == 1.0 and tuned["reward_margin"] > 0
    assert tuned["mean_logp_margin"] > base["mean_logp_margin"]
    assert json.loads((tmp_path / "dpo/eval/comparison.json").read_text())["preference_accuracy"]["base"] == \
        base["preference_accuracy"]


@pytest.mark.parametrize("overrides, expect", [
    ({"dataset": "dpo_zh_demo", "pref_ftx": 0.5, "finetuning_type": "full"}, "sigmoid+sft"),
    ({"use_dora": True}, "dora"),
    ({"finetuning_type": "freeze"}, "freeze"),
    ({"quantization_bit": 4}, "qlora"),  # bitsandbytes >= 0.45 runs 4-bit on the CPU (fp32 compute)
    ({"dataset": "dpo_zh_demo", "pref_loss": "orpo", "max_samples": 4}, "orpo"),  # 2 steps of 2: every pair once
    ({"pref_loss": "simpo", "simpo_gamma": 0.5}, "simpo"),
    ({"pref_bco_weight": 1.0, "ld_alpha": 0.5, "pref_ftx": 0.2}, "bco+ld"),  # LLaMA-Factory's BCO mix and LD-DPO
    # LLaMA-Factory's *_kto.yaml trains at batch 1: the KL answers rotate across the dataset
    ({"stage": "kto", "dataset": "kto_en_demo", "per_device_train_batch_size": 1}, "kto"),
])
def test_every_preference_loss_trains_and_logs_rewards(tiny_qwen2, data_dir, tmp_path, capsys, overrides, expect):
    out = tmp_path / "run"
    result = run_training(config(tiny_qwen2, data_dir, out, **{"max_steps": 2, "per_device_train_batch_size": 2,
                                                                "cutoff_len": 32, "max_samples": 8, **overrides}))
    rows = [r for r in log_rows(out) if "loss" in r]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert "rewards/chosen" in rows[0] or "rewards/chosen_sum" in rows[0] or "kl" in rows[0], rows[0]
    args = result.trainer.args
    if expect == "bco+ld":  # (dpo + w·bco) / (1 + w), then the SFT term, as LLaMA-Factory weighs them
        assert args.loss_type == ["sigmoid", "bco_pair", "sft"] and args.loss_weights == [0.5, 0.5, 0.2]
        assert args.ld_alpha == 0.5
    if expect == "sigmoid+sft":
        assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
        assert rows[0]["loss"] > math.log(2)  # the SFT term is added to ln 2
        ref = result.trainer.ref_model  # full fine-tuning: trl's copy of the base, never optimised
        optimised = {id(p) for group in result.trainer.optimizer.param_groups for p in group["params"]}
        assert ref is not None and ref is not result.trainer.model
        assert optimised and not optimised & {id(p) for p in ref.parameters()}
    elif expect in ("dora", "freeze", "qlora"):
        assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
        trainer = result.trainer
        names = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
        if expect == "freeze":  # the base's last layers train; the reference is trl's frozen copy of the base
            assert "frozen copy of" in capsys.readouterr().out
            ref = trainer.ref_model
            assert ref is not None and ref is not trainer.model and not any(p.requires_grad for p in ref.parameters())
            assert names and not any("lora" in n for n in names)
        else:  # the adapter is disabled for the reference pass: no copy
            assert trainer.ref_model is None and "adapter disabled" in capsys.readouterr().out
            assert any("lora_magnitude_vector" in n for n in names) == (expect == "dora")
        if expect == "qlora":
            import bitsandbytes as bnb

            assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    elif expect == "kto":
        assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-3) and "kl" in rows[0]
        trainer = result.trainer
        assert args.per_device_train_batch_size == trainer._train_batch_size == 1
        assert len(trainer.get_train_dataloader()) == len(trainer.train_dataset) == 8  # 8 batches of one row
        answers, kl_answers = trainer.train_dataset["completion_ids"], trainer.train_dataset["KL_completion_ids"]
        assert kl_answers == answers[-1:] + answers[:-1]  # row i's KL answer is row i-1's
        assert all(kl != own for kl, own in zip(kl_answers, answers))
    elif expect == "orpo":  # tokens seen: prompt+chosen and prompt+rejected of every pair, as DPO counts
        pairs = result.trainer.train_dataset
        trained = sum(len(c) + len(r) for c, r in zip(pairs["chosen_input_ids"], pairs["rejected_input_ids"]))
        assert len(pairs) == 4 and result.trainer.state.num_input_tokens_seen == trained
        assert rows[-1]["tokens_seen"] == trained
    elif expect == "simpo":
        assert args.loss_type == "simpo" and args.simpo_gamma == 0.5 and not hasattr(result.trainer, "ref_model")
    assert args.learning_rate == 5e-3 and not args.bf16 and not args.gradient_checkpointing


def test_reward_model_scores_the_planted_chosen_higher(tiny_qwen2, data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "rm"
    run_training(config(tiny_qwen2, data_dir, out, stage="rm", max_steps=10))
    assert "accuracy" in log_rows(out)[0]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_qwen2, num_labels=1, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out).eval()  # the saved adapter + value head score text
    tokenizer = AutoTokenizer.from_pretrained(out)
    model.config.pad_token_id = tokenizer.pad_token_id
    wins = 0
    for question, answer in zip(QUESTIONS, ANSWERS):
        scores = []
        for reply in (answer + PHRASE, answer):
            text = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                                  {"role": "assistant", "content": reply}], tokenize=False)
            with torch.no_grad():
                scores.append(model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item())
        wins += scores[0] > scores[1]
    assert wins == len(QUESTIONS)


def test_stage_checks_at_the_door(tiny_qwen2, data_dir, tmp_path):
    with pytest.raises(ConfigError, match="PPO was removed from trl"):
        config(tiny_qwen2, data_dir, tmp_path, stage="ppo")
    with pytest.raises(ConfigError, match="pref_loss"):
        config(tiny_qwen2, data_dir, tmp_path, pref_loss="kto_pair")


@pytest.mark.parametrize("batch, expected", [(2, [2, 1, 4, 3, 5]), (1, [5, 1, 2, 3, 4])])
def test_kto_kl_answers_rotate_within_a_batch_or_across_the_dataset(batch, expected):
    from types import SimpleNamespace

    from datasets import Dataset

    from instill.train.patches import KLPairs

    rows = Dataset.from_dict({"prompt_ids": [[0]] * 5, "completion_ids": [[1], [2], [3], [4], [5]]})
    trainer = SimpleNamespace(calculate_KL=True, kl_batch_size=batch)  # batch 2: trl's rule; 1: LLaMA-Factory's
    rotated = KLPairs._prepare_dataset(trainer, rows, None, None, "train")["KL_completion_ids"]
    assert [ids[0] for ids in rotated] == expected


def test_kto_refuses_a_set_of_one_row():
    """One row has no other answer to pair its prompt with: its KL pair would be its own answer."""
    from types import SimpleNamespace

    from datasets import Dataset

    from instill.train.patches import KLPairs

    one = Dataset.from_dict({"prompt_ids": [[0]], "completion_ids": [[1]]})
    with pytest.raises(ConfigError, match="the train set has 1 row"):
        KLPairs._prepare_dataset(SimpleNamespace(calculate_KL=True, kl_batch_size=1), one, None, None, "train")
