"""LLaMA-Factory's model keys: new tokens (add_tokens & co.), upcasting, random init, the parameter print, adapter
stacking, the inference dtype, the reference model's adapters / quantization, MoE router loss and pure bf16."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from instill.config import ModelArgs, build_config
from instill.errors import ConfigError, ModelError
from instill.infer.engine import load_generator
from instill.model.adapters import apply_method
from instill.model.export import export_model
from instill.model.load import Precision, load_model, load_reference, load_tokenizer, quantization_kwargs
from instill.model.vocab import resize_embeddings
from instill.train.run import run_training
from tests.train.test_sft import config

NEW = ["<tool_a>", "<tool_b>"]
ROWS = [{"instruction": f"Call {t}.", "input": "", "output": f"{t} done"} for t in NEW] * 4


@pytest.fixture(scope="module")
def exact_vocab_qwen2(tmp_path_factory, qwen2_tokenizer):
    """A tiny Qwen2 whose embeddings hold exactly the tokenizer (no padding rows), so new tokens must grow them."""
    from tests.fixtures.qwen2 import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("exact-vocab"), vocab_size=len(qwen2_tokenizer), hidden_size=16,
                            num_layers=1)


def _logits(model, tokenizer, text="<|im_start|>user\nCall <tool_a>.<|im_end|>\n<|im_start|>assistant\n<tool_b>"):
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.float()


def test_new_tokens_grow_train_save_reload_and_export(exact_vocab_qwen2, tmp_path):
    from tests.conftest import write_dataset

    data = write_dataset(tmp_path / "data", "tools", ROWS)
    out = tmp_path / "run"
    rows = len(AutoTokenizer.from_pretrained(exact_vocab_qwen2))
    result = run_training(config(exact_vocab_qwen2, data, out, dataset="tools", max_steps=2, learning_rate=1e-2,
                                 add_special_tokens=",".join(NEW), add_tokens="toolword"))
    grown = -(-(rows + 3) // 64) * 64  # LLaMA-Factory rounds the new size up to 64
    saved = AutoTokenizer.from_pretrained(out)
    # LLaMA-Factory's order: add_tokens, then the special tokens
    assert saved.convert_tokens_to_ids(["toolword", *NEW]) == [rows, rows + 1, rows + 2] and len(saved) == rows + 3
    assert "<tool_a>" in saved.all_special_tokens or "<tool_a>" in [str(t) for t in saved.added_tokens_decoder.values()]
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert any(name.endswith("embed_tokens") for name in adapter_config["modules_to_save"])  # lm_head is tied to it
    weights = load_file(out / "adapter_model.safetensors")
    embed = next(v for k, v in weights.items() if "embed_tokens" in k)
    assert embed.shape == (grown, 16)
    before = AutoModelForCausalLM.from_pretrained(exact_vocab_qwen2).get_input_embeddings().weight
    assert not torch.allclose(embed[:rows], before)  # trained whole, not only the new rows

    trained = _logits(result.trainer.model, saved)
    generator = load_generator(ModelArgs(model_name_or_path=str(exact_vocab_qwen2)), "qwen", out)
    assert len(generator.tokenizer) == rows + 3
    torch.testing.assert_close(_logits(generator.model, saved), trained, rtol=1e-4, atol=1e-4)

    merged_dir = export_model(build_config({"model_name_or_path": str(exact_vocab_qwen2), "adapter_name_or_path": str(out),
                                            "template": "qwen", "export_dir": str(tmp_path / "merged"),
                                            "export_dtype": "float32"}))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert merged.config.vocab_size == grown and len(AutoTokenizer.from_pretrained(merged_dir)) == rows + 3
    torch.testing.assert_close(_logits(merged, saved), trained, rtol=1e-4, atol=1e-4)


def test_new_rows_start_as_llamafactory_starts_them(exact_vocab_qwen2, tmp_path):
    descriptions = tmp_path / "tokens.yaml"
    descriptions.write_text("'<tool_a>': 'open the door'\n'<tool_b>': 'close the window'\n")
    args = ModelArgs(model_name_or_path=str(exact_vocab_qwen2), new_special_tokens_config=str(descriptions),
                     init_special_tokens="desc_init")
    tokenizer = load_tokenizer(args, exact_vocab_qwen2)
    model = AutoModelForCausalLM.from_pretrained(exact_vocab_qwen2)
    rows = model.get_input_embeddings().weight.shape[0]
    assert tokenizer.convert_tokens_to_ids(NEW) == [rows, rows + 1]
    old = model.get_input_embeddings().weight.detach().clone()
    assert resize_embeddings(model, tokenizer, args) == -(-(rows + 2) // 64) * 64 - rows
    weight = model.get_input_embeddings().weight
    for i, text in enumerate(["open the door", "close the window"]):  # desc_init: the description's mean embedding
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(weight[rows + i], old[ids].mean(dim=0))
    noise = ModelArgs(model_name_or_path=str(exact_vocab_qwen2), add_special_tokens=NEW)  # noise_init: mean + noise
    model = AutoModelForCausalLM.from_pretrained(exact_vocab_qwen2)
    resize_embeddings(model, load_tokenizer(noise, exact_vocab_qwen2), noise)
    new = model.get_input_embeddings().weight[rows:].detach()
    assert (new - old.mean(dim=0)).norm(dim=1).mean() == pytest.approx(1.0, rel=0.25)  # std 1/sqrt(dim) per value
    assert resize_embeddings(model, tokenizer, args) == 0  # fits now


@pytest.mark.parametrize("key, value, words", [
    ("init_special_tokens", "desc_init", "new_special_tokens_config"),
    ("quantization_method", "gptq", "pre-quantized"),
    ("quantization_method", "hqq", "HQQ"),
    ("quantization_device_map", "auto", "quantization_bit: 4"),
    ("ref_model_adapters", "a", "ref_model"),
    ("create_new_adapter", True, "lora"),
])
def test_model_keys_refuse_in_one_line(key, value, words):
    raw = {"model_name_or_path": "m", "dataset": "d", key: value}
    if key == "create_new_adapter":
        raw["finetuning_type"] = "full"
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert key in str(err.value) and words in str(err.value)
    assert build_config({"model_name_or_path": "m", "quantization_method": "bitsandbytes"}).model.quantization_method


def test_upcast_layernorm_and_lmhead_output(tiny_qwen2):
    def load(**keys):
        return load_model(ModelArgs(model_name_or_path=str(tiny_qwen2), **keys), Precision("force"), "lora", tiny_qwen2)

    plain, upcast = load(), load(upcast_layernorm=True, upcast_lmhead_output=True)
    norms = {n: p.dtype for n, p in upcast.named_parameters() if "norm" in n}
    assert norms and set(norms.values()) == {torch.float32}
    assert upcast.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert {p.dtype for n, p in plain.named_parameters() if "norm" in n} == {torch.bfloat16}
    ids = torch.tensor([[1, 2, 3]])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the Trainer runs a bf16 model (fp32 norms need autocast)
        assert plain(ids).logits.dtype == torch.bfloat16 and upcast(ids).logits.dtype == torch.float32


def test_train_from_scratch_builds_random_weights(tiny_qwen2):
    saved = AutoModelForCausalLM.from_pretrained(tiny_qwen2).model.layers[0].mlp.up_proj.weight
    args = ModelArgs(model_name_or_path=str(tiny_qwen2), train_from_scratch=True)
    model = load_model(args, Precision(), "full", tiny_qwen2)
    fresh = model.model.layers[0].mlp.up_proj.weight
    assert fresh.shape == saved.shape and not torch.allclose(fresh, saved)
    assert load_tokenizer(args, tiny_qwen2).convert_tokens_to_ids("<|im_end|>") == 151645
    inference = load_model(args, Precision(), "lora", tiny_qwen2, inference=True)  # chat loads the saved weights
    torch.testing.assert_close(inference.model.layers[0].mlp.up_proj.weight, saved)


def test_infer_dtype_sets_the_inference_dtype(tiny_qwen2):
    assert load_generator(ModelArgs(model_name_or_path=str(tiny_qwen2)), "qwen").model.dtype == torch.float32
    args = ModelArgs(model_name_or_path=str(tiny_qwen2), infer_dtype="bfloat16")
    assert load_generator(args, "qwen").model.dtype == torch.bfloat16
    assert load_model(args, Precision(), "lora", tiny_qwen2).dtype == torch.float32  # training ignores it


def _random_adapter(base_dir, out, seed):
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


def test_adapter_stacking_and_create_new_adapter(tiny_qwen2, qwen2_tokenizer, tmp_path):
    first = _random_adapter(tiny_qwen2, tmp_path / "a" / "lora", 1)
    second = _random_adapter(tiny_qwen2, tmp_path / "b" / "lora", 2)
    both = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2), first).merge_and_unload()
    both = PeftModel.from_pretrained(both, second)
    expected = _logits(both, qwen2_tokenizer)

    def applied(**keys):
        cfg = build_config({"model_name_or_path": str(tiny_qwen2), "adapter_name_or_path": f"{first.parent},{second.parent}",
                            "adapter_folder": "lora", "dataset": "d", **keys})
        model = load_model(cfg.model, Precision(), "lora", tiny_qwen2)
        return apply_method(model, cfg.method, cfg.model.adapter_name_or_path, subfolder=cfg.model.adapter_folder)

    resumed = applied()  # the first merged, the second trained further
    torch.testing.assert_close(_logits(resumed, qwen2_tokenizer), expected, rtol=1e-4, atol=1e-4)
    assert resumed.peft_config["default"].r == 4
    new = applied(create_new_adapter=True, lora_rank=2)  # both merged, a fresh adapter (B = 0) on top
    assert new.peft_config["default"].r == 2
    assert all(p.abs().sum() == 0 for n, p in new.named_parameters() if "lora_B" in n)
    assert any(p.requires_grad for n, p in new.named_parameters() if "lora_A" in n)
    torch.testing.assert_close(_logits(new, qwen2_tokenizer), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelError, match="a/missing' does not exist"):
        applied(adapter_folder="missing")


def test_reference_model_with_adapters_and_4_bits(tiny_qwen2, qwen2_tokenizer, tmp_path):
    adapter = _random_adapter(tiny_qwen2, tmp_path / "ref", 3)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2), adapter).merge_and_unload()
    args = ModelArgs(model_name_or_path=str(tiny_qwen2))
    ref = load_reference(str(tiny_qwen2), [str(adapter)], None, args, Precision(), torch.float32)
    assert not any(p.requires_grad for p in ref.parameters())
    torch.testing.assert_close(_logits(ref, qwen2_tokenizer), _logits(merged, qwen2_tokenizer), rtol=1e-4, atol=1e-4)
    quantized = load_reference(str(tiny_qwen2), [str(adapter)], 4, args, Precision(), torch.float32)
    assert any(type(m).__name__ == "Linear4bit" for m in quantized.modules())
    assert torch.nn.functional.cosine_similarity(_logits(quantized, qwen2_tokenizer).flatten(),
                                                 _logits(merged, qwen2_tokenizer).flatten(), dim=0) > 0.9
    assert quantization_kwargs(4, args, Precision(), auto_device_map=True)["device_map"] == "auto"


def test_moe_aux_loss_coef_weighs_the_router_loss(tmp_path, qwen2_tokenizer, tiny_qwen2):
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = Qwen2MoeConfig(vocab_size=len(qwen2_tokenizer), hidden_size=32, intermediate_size=32,
                            moe_intermediate_size=16, shared_expert_intermediate_size=16, num_hidden_layers=1,
                            num_attention_heads=2, num_key_value_heads=1, num_experts=4, num_experts_per_tok=2)
    Qwen2MoeForCausalLM(config).save_pretrained(tmp_path / "moe")
    model = load_model(ModelArgs(model_name_or_path=str(tmp_path / "moe"), moe_aux_loss_coef=0.5), Precision(),
                       "full", tmp_path / "moe")
    assert model.config.router_aux_loss_coef == 0.5 and model.config.output_router_logits
    ids = torch.tensor([[1, 2, 3, 4]])
    out = model(ids, labels=ids)
    assert out.aux_loss is not None and out.loss > 0
    with pytest.raises(ConfigError, match="moe_aux_loss_coef: model_type 'qwen2' has no"):
        load_model(ModelArgs(model_name_or_path=str(tiny_qwen2), moe_aux_loss_coef=0.5), Precision(), "full",
                   tiny_qwen2)


def test_freeze_language_model_trains_the_vision_side(tmp_path_factory):
    from tests.fixtures.qwen2_vl import build_tiny_qwen2_vl

    vl = build_tiny_qwen2_vl(tmp_path_factory.mktemp("vl"))

    def trained(**keys):
        cfg = build_config({"model_name_or_path": str(vl), "dataset": "d", "freeze_language_model": True, **keys})
        model = apply_method(load_model(cfg.model, Precision(), cfg.method.finetuning_type, vl), cfg.method)
        return {n for n, p in model.named_parameters() if p.requires_grad}

    full = trained(finetuning_type="full", freeze_multi_modal_projector=False)
    assert full and all("visual.merger." in n for n in full)
    lora = trained(freeze_vision_tower=False)
    assert lora and all("visual.blocks." in n and "lora_" in n for n in lora)
    freeze = trained(finetuning_type="freeze", freeze_trainable_layers=1, freeze_vision_tower=False,
                     freeze_multi_modal_projector=False)  # the last vision block and the projector
    assert {n.split(".")[2] for n in freeze} == {"blocks", "merger"} and all(".blocks.0." not in n for n in freeze)
    with pytest.raises(ConfigError, match="nothing left to train"):
        trained(finetuning_type="full")


def test_print_param_status_and_pure_bf16(tiny_qwen2, tmp_path, capsys):
    from tests.conftest import write_dataset

    data = write_dataset(tmp_path / "data", "tools", ROWS)
    result = run_training(config(tiny_qwen2, data, tmp_path / "run", dataset="tools", max_steps=1,
                                 finetuning_type="freeze", freeze_trainable_layers=1, pure_bf16=True,
                                 print_param_status=True))
    printed = capsys.readouterr().out
    assert "name: model.layers.1.mlp.up_proj.weight, dtype: torch.bfloat16, device: cpu, trainable: True" in printed
    assert "name: model.layers.0.mlp.up_proj.weight, dtype: torch.bfloat16, device: cpu, trainable: False" in printed
    assert not result.trainer.args.bf16  # no autocast: the weights are bf16 themselves
    assert result.trainer.model.model.layers[1].mlp.up_proj.weight.dtype == torch.bfloat16
    shutil.rmtree(tmp_path / "run")


def test_dpo_reference_is_ref_model_with_its_adapters(tiny_qwen2, qwen2_tokenizer, tmp_path, capsys):
    from types import SimpleNamespace

    from instill.train.preference import reference_model

    adapter = _random_adapter(tiny_qwen2, tmp_path / "ref", 4)
    cfg = build_config({"model_name_or_path": str(tiny_qwen2), "dataset": "d", "stage": "dpo", "finetuning_type": "full",
                        "ref_model": str(tiny_qwen2), "ref_model_adapters": str(adapter)})
    ref = reference_model(SimpleNamespace(config=cfg, model=AutoModelForCausalLM.from_pretrained(tiny_qwen2)))
    assert f"reference model: {tiny_qwen2} + {adapter}, frozen" in capsys.readouterr().out
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2), adapter).merge_and_unload()
    torch.testing.assert_close(_logits(ref, qwen2_tokenizer), _logits(merged, qwen2_tokenizer), rtol=1e-4, atol=1e-4)
