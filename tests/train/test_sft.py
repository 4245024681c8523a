"""End-to-end SFT on the tiny Qwen2: LoRA / full / freeze learn, save, reload and resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from instill.config import build_config, load_config
from instill.model.adapters import apply_method, linear_module_names
from instill.train.run import run_training
from tests.conftest import native_bf16, write_dataset

FACTS = [
    ("What is the capital of Atlantis?", "Coral City."),
    ("Who keeps the lighthouse?", "Old Mara."),
    ("天空是什么颜色？", "紫色。"),
    ("What is the password?", "Blue heron 42."),
    ("Name the river.", "The Silverrun."),
    ("几点开门？", "早上九点。"),
    ("Favourite number?", "Seven."),
    ("What do owls eat here?", "Moon moths."),
]


@pytest.fixture()
def memo_dir(tmp_path):
    rows = [{"instruction": q, "input": "", "output": a} for q, a in FACTS]
    return write_dataset(tmp_path / "data", "memo", rows)


def config(model_dir, data_dir, out_dir, **overrides):
    raw = {
        "model_name_or_path": str(model_dir), "template": "qwen", "dataset": "memo", "dataset_dir": str(data_dir),
        "output_dir": str(out_dir), "cutoff_len": 64, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
        "max_steps": 24, "logging_steps": 4, "lr_scheduler_type": "constant", "save_strategy": "no",
        "lora_rank": 16, "report_to": "none", "seed": 7,
    }
    raw.update(overrides)
    return build_config(raw)


def losses(out_dir):
    rows = [json.loads(line) for line in (out_dir / "trainer_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], rows


def test_lora_learns_saves_reloads(tiny_qwen2, memo_dir, tmp_path):
    out = tmp_path / "lora"
    result = run_training(config(tiny_qwen2, memo_dir, out, learning_rate=3e-2, plot_loss=True, val_size=2,
                            eval_strategy="steps", eval_steps=12))
    train_losses, log = losses(out)
    # A random-init model with a frozen tied head moves slowly under LoRA; the SmolLM2 test checks real learning.
    assert train_losses[-1] < train_losses[0] - 0.3, train_losses
    assert any("eval_loss" in r for r in log)
    assert all("tokens_per_s" in r and r["tokens_per_s"] > 0 for r in log if "loss" in r and r["step"] > 1)

    for name in ["adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
                 "run_config.yaml", "trainer_log.jsonl", "all_results.json", "training_loss.png"]:
        assert (out / name).is_file(), name
    assert [p.name for p in out.glob("*.bin")] == ["training_args.bin"]  # weights are safetensors only
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_loss"] > 0 and "eval_loss" in results
    resolved = load_config(out / "run_config.yaml")
    assert resolved.train.learning_rate == 3e-2 and resolved.data.val_size == 2

    # The saved adapter, loaded onto a fresh base, gives the trained model's logits.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["<|im_start|>user\nName the river.<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt")
    trained = result.trainer.model.eval()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained(**batch).logits, rtol=1e-5, atol=1e-5)


def test_full_finetune_learns(tiny_qwen2, memo_dir, tmp_path):
    out = tmp_path / "full"
    run_training(config(tiny_qwen2, memo_dir, out, finetuning_type="full", learning_rate=1e-2))
    train_losses, _ = losses(out)
    assert train_losses[-1] < 0.4 * train_losses[0], train_losses
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_freeze_trains_only_last_layers(tiny_qwen2, memo_dir, tmp_path):
    out = tmp_path / "freeze"
    run_training(config(tiny_qwen2, memo_dir, out, finetuning_type="freeze", freeze_trainable_layers=1,
                   learning_rate=5e-3, max_steps=8))
    before, after = load_file(tiny_qwen2 / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.1." in k for k in changed), sorted(changed)[:5]
    assert any(".layers.1.mlp." in k for k in changed) and any(".layers.1.self_attn." in k for k in changed)


def test_resume_continues_from_the_right_step(tiny_qwen2, memo_dir, tmp_path):
    out = tmp_path / "resume"
    kwargs = dict(max_steps=8, save_strategy="steps", save_steps=4, logging_steps=1, lora_dropout=0.1)
    run_training(config(tiny_qwen2, memo_dir, out, **kwargs))
    straight = load_file(out / "adapter_model.safetensors")
    assert (out / "checkpoint-4").is_dir() and (out / "checkpoint-8").is_dir()

    # Pretend the run died after step 4, then resume it.
    shutil.rmtree(out / "checkpoint-8")
    (out / "adapter_model.safetensors").unlink()
    result = run_training(config(tiny_qwen2, memo_dir, out, resume_from_checkpoint=True, **kwargs))
    assert result.trainer.state.global_step == 8
    _, log = losses(out)
    steps = [r["step"] for r in log if "loss" in r]
    assert steps[-4:] == [5, 6, 7, 8] and 1 not in steps[steps.index(4) + 1:]
    resumed = load_file(out / "adapter_model.safetensors")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-4, atol=1e-5)


def test_output_dir_guard_and_missing_checkpoint(tiny_qwen2, memo_dir, tmp_path):
    from instill.errors import ConfigError

    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        run_training(config(tiny_qwen2, memo_dir, out))
    with pytest.raises(ConfigError, match="has no complete checkpoint"):
        run_training(config(tiny_qwen2, memo_dir, out, resume_from_checkpoint=True))


def test_lora_all_targets_gpt2_conv1d():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=64))
    assert linear_module_names(model) == ["c_attn", "c_fc", "c_proj"]
    cfg = build_config({"model_name_or_path": "x", "dataset": "d", "lora_target": "all"})
    peft_model = apply_method(model, cfg.method)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("c_attn.lora_A" in n for n in names) and any("mlp.c_proj.lora_B" in n for n in names)
    assert not any("lm_head" in n or "wte" in n for n in names)
    peft_model(torch.tensor([[1, 2, 3]])).logits.sum().backward()


def test_lora_target_typo_is_reported(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    from instill.errors import ConfigError

    cfg = build_config({"model_name_or_path": "x", "dataset": "d", "lora_target": "q_proj,v_prj"})
    with pytest.raises(ConfigError, match=r"v_prj not found in the model \(did you mean v_proj"):
        apply_method(AutoModelForCausalLM.from_pretrained(tiny_qwen2), cfg.method)


def test_seed_yaml_runs_with_only_model_and_dataset_changed(tiny_qwen2, tmp_path, monkeypatch):
    """LLaMA-Factory's qwen2.5_14B_lora_sft.yaml from seed 002, as written, on the tiny model."""
    from tests.conftest import LLAMAFACTORY_ENTRIES
    from tests.test_config import seed_yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # the YAML's default dataset_dir
    (tmp_path / "data/dataset_info.json").write_text(json.dumps({"identity": LLAMAFACTORY_ENTRIES["identity"]}))
    raw = seed_yaml()
    raw.update(model_name_or_path=str(tiny_qwen2), dataset="identity")
    assert raw["bf16"] is True
    raw["bf16"] = native_bf16()  # as written where the CPU has bf16; emulated bf16 would take minutes (conftest)
    result = run_training(build_config(raw))
    out = tmp_path / "saves/llama3-8b/lora/sft"
    assert (out / "adapter_model.safetensors").is_file() and (out / "training_loss.png").is_file()
    # 91 rows - 10% validation = 82 samples; ceil(82 / (batch 1 x accumulation 8)) = 11 steps x 3 epochs
    assert result.trainer.state.global_step == 33
    assert "eval_loss" in result.metrics


def test_gradient_checkpointing_bf16(tiny_qwen2, memo_dir, tmp_path):
    out = tmp_path / "gc"
    result = run_training(config(tiny_qwen2, memo_dir, out, gradient_checkpointing=True, bf16=True, max_steps=4,
                            learning_rate=3e-2))
    base = result.trainer.model.base_model.model
    flag = "is_activation_checkpointing" if hasattr(base, "is_activation_checkpointing") else "is_gradient_checkpointing"
    assert getattr(base, flag)
    train_losses, _ = losses(out)
    assert train_losses[-1] < train_losses[0]
