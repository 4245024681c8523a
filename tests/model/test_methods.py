"""Every method trains on the tiny Qwen2, saves, reloads and exports."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from instill.config import build_config
from instill.errors import ConfigError
from instill.model.export import export_model
from instill.train.run import run_training, total_optimizer_steps
from tests.conftest import native_bf16
from tests.train.test_sft import FACTS, config, losses

PROMPT = "<|im_start|>user\nName the river.<|im_end|>\n<|im_start|>assistant\nThe"


@pytest.fixture()
def memo_dir(tmp_path):
    from tests.conftest import write_dataset

    return write_dataset(tmp_path / "data", "memo", [{"instruction": q, "input": "", "output": a} for q, a in FACTS])


def _logits(model, tokenizer):
    batch = tokenizer([PROMPT], return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.float()


def _export(tiny, adapter, out, **extra):
    cfg = build_config({"model_name_or_path": str(tiny), "adapter_name_or_path": str(adapter), "template": "qwen",
                        "export_dir": str(out), "export_dtype": "float32", **extra})
    return export_model(cfg)


@pytest.mark.parametrize("options, tol", [({}, 1e-5), ({"use_dora": True}, 1e-4), ({"use_rslora": True}, 1e-5)])
def test_lora_variants_train_reload_export(tiny_qwen2, qwen2_tokenizer, memo_dir, tmp_path, options, tol):
    out = tmp_path / "run"
    result = run_training(config(tiny_qwen2, memo_dir, out, learning_rate=3e-2, **options))
    train_losses, _ = losses(out)
    assert train_losses[-1] < train_losses[0] - 0.2, train_losses
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["use_dora"] == bool(options.get("use_dora")) and adapter_cfg["use_rslora"] == bool(options.get("use_rslora"))

    trained = _logits(result.trainer.model, qwen2_tokenizer)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2), out)
    torch.testing.assert_close(_logits(reloaded, qwen2_tokenizer), trained, rtol=tol, atol=tol)
    merged_dir = _export(tiny_qwen2, out, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    torch.testing.assert_close(_logits(merged, qwen2_tokenizer), trained, rtol=tol, atol=tol)
    assert (merged_dir / "tokenizer.json").is_file() and list(merged_dir.glob("*.safetensors"))
    assert 151645 in json.loads((merged_dir / "generation_config.json").read_text())["eos_token_id"]


def test_pissa_adapter_applies_to_the_original_base(tiny_qwen2, qwen2_tokenizer, memo_dir, tmp_path):
    out = tmp_path / "pissa"
    result = run_training(config(tiny_qwen2, memo_dir, out, pissa_init=True, pissa_iter=4, learning_rate=1e-2, max_steps=8))
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2 * 16  # converted: rank doubles
    trained = _logits(result.trainer.model, qwen2_tokenizer)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2), out)
    torch.testing.assert_close(_logits(reloaded, qwen2_tokenizer), trained, rtol=1e-3, atol=1e-3)


def test_adalora_reallocates_ranks(tiny_qwen2, qwen2_tokenizer, memo_dir, tmp_path):
    out = tmp_path / "adalora"
    result = run_training(config(tiny_qwen2, memo_dir, out, finetuning_type="adalora", adalora_init_r=8, adalora_target_r=2,
                            adalora_tinit=2, adalora_tfinal=2, adalora_delta_t=1, max_steps=12, learning_rate=3e-2))
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "ADALORA" and adapter_cfg["total_step"] == 12
    pattern = adapter_cfg["rank_pattern"]
    assert pattern, "update_and_allocate was never called"
    ranks = [sum(mask) for mask in pattern.values()]
    assert min(ranks) < 8 and sum(ranks) <= 2 * len(ranks) + 1  # pruned from init_r toward the target budget
    train_losses, _ = losses(out)
    assert train_losses[-1] < train_losses[0]
    trained = _logits(result.trainer.model, qwen2_tokenizer)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2), out)
    torch.testing.assert_close(_logits(reloaded, qwen2_tokenizer), trained, rtol=1e-4, atol=1e-4)
    merged = AutoModelForCausalLM.from_pretrained(_export(tiny_qwen2, out, tmp_path / "merged"))
    torch.testing.assert_close(_logits(merged, qwen2_tokenizer), trained, rtol=1e-4, atol=1e-4)


def test_qlora_4bit_trains_and_merges_into_full_precision(tiny_qwen2, qwen2_tokenizer, memo_dir, tmp_path):
    import bitsandbytes as bnb

    out = tmp_path / "qlora"
    result = run_training(config(tiny_qwen2, memo_dir, out, quantization_bit=4, bf16=native_bf16(), learning_rate=3e-2))
    base = result.trainer.model.base_model.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())
    assert base.model.layers[0].mlp.down_proj.base_layer.weight.quant_type == "nf4"
    train_losses, _ = losses(out)
    assert train_losses[-1] < train_losses[0] - 0.2, train_losses

    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = _logits(result.trainer.model, qwen2_tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(_export(tiny_qwen2, out, tmp_path / "merged"))
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    # The adapter was trained on nf4 weights and is merged into the full-precision base: close, not equal.
    merged_logits = _logits(merged, qwen2_tokenizer)
    assert torch.nn.functional.cosine_similarity(merged_logits.flatten(), trained.flatten(), dim=0) > 0.99
    assert merged_logits[0, -1].argmax() == trained[0, -1].argmax()


def test_export_refuses_non_empty_dir_and_needs_export_dir(tiny_qwen2, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x/keep").write_text("1")
    with pytest.raises(ConfigError, match="is not empty"):
        export_model(build_config({"model_name_or_path": str(tiny_qwen2), "export_dir": str(tmp_path / "x")}))
    with pytest.raises(ConfigError, match="needs export_dir"):
        export_model(build_config({"model_name_or_path": str(tiny_qwen2)}))


def test_total_steps_match_the_trainer():
    t = build_config({"model_name_or_path": "x", "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8,
                      "num_train_epochs": 3}).train
    assert total_optimizer_steps(82, t) == 33  # as the seed-YAML run counts (tests/train)
    t = build_config({"model_name_or_path": "x", "max_steps": 7}).train
    assert total_optimizer_steps(1000, t) == 7


def test_qlora_8bit_trains(tiny_qwen2, memo_dir, tmp_path):
    import bitsandbytes as bnb

    out = tmp_path / "q8"
    result = run_training(config(tiny_qwen2, memo_dir, out, quantization_bit=8, learning_rate=3e-2, max_steps=12))
    assert sum(isinstance(m, bnb.nn.Linear8bitLt) for m in result.trainer.model.modules()) == 14  # 7 per layer
    train_losses, _ = losses(out)
    assert train_losses[-1] < train_losses[0] - 0.2, train_losses
    assert (out / "adapter_model.safetensors").is_file()
