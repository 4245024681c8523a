"""LLaMA-Factory's training extras built in instill: the DFT / EAFT / ASFT losses, OFT, LLaMA Pro, RoPE
scaling and NEFTune, each against a direct computation, and each example YAML of LLaMA-Factory 0.9.5 for
them training a few steps with the model and dataset swapped for stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from instill.data.tokenize import IGNORE_INDEX
from instill.train.losses import sft_loss
from instill.train.trainer import LabelledLossTrainer
from tests.train.test_trainer_loss import _batch, _loss_and_grads, _training


# -- LLaMA-Factory 0.9.5's own loss functions (src/llamafactory/train/trainer_utils.py), on full logits --------------
def lf_dft(logits, labels, num_items=None):
    logits = logits.float().view(-1, logits.size(-1))
    labels = F.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1)
    ce = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")
    valid = ce[labels != -100]
    weighted = valid * torch.exp(-valid).detach()
    return weighted.sum() / num_items if num_items is not None else weighted.mean()


def lf_eaft(logits, labels, num_items=None, alpha=1.0):
    logits = logits.float().view(-1, logits.size(-1))
    labels = F.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1)
    mask = labels != -100
    ce = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")[mask]
    with torch.no_grad():
        top = torch.topk(logits[mask].detach(), k=20, dim=-1).values
        log_p = top - torch.logsumexp(top, dim=-1, keepdim=True)
        weight = torch.pow(-(log_p.exp() * log_p).sum(-1) / 3.0, alpha)
    weighted = ce * weight
    return weighted.sum() / num_items if num_items is not None else weighted.mean()


def lf_asft(logits, labels, ref_logits, alpha=0.1):
    vocab = logits.size(-1)
    policy = logits.float()[..., :-1, :].reshape(-1, vocab)
    ref = ref_logits[..., :-1, :].reshape(-1, vocab)
    shifted = labels[..., 1:].reshape(-1)
    ce = F.cross_entropy(policy, shifted, ignore_index=-100, reduction="none")
    valid = ce[shifted != -100]
    dft = (valid * torch.exp(-valid).detach()).mean()
    kl = F.kl_div(F.log_softmax(policy, -1), F.softmax(ref, -1), reduction="none").sum(-1)
    mask = (shifted != -100).float()
    return dft + alpha * (kl * mask).sum() / mask.sum()


def _direct(model, batch, fn):
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = fn(logits)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", ["dft", "eaft", "asft"])
def test_sft_losses_equal_llamafactory_on_labelled_positions(tiny_qwen2, tmp_path, name):
    model, batch, args = _training(tiny_qwen2, tmp_path, "lora", _batch)
    loss = sft_loss(name == "dft", name == "eaft", 0.7, name == "asft", 0.3)
    fast = LabelledLossTrainer(model=model, args=args, sft_loss=loss)
    hooked = LabelledLossTrainer(model=model, args=args, sft_loss=loss)
    hooked.force_head_hook = True
    labels = batch["labels"]
    n_items = torch.tensor(int((labels != IGNORE_INDEX).sum()) + 5)  # as if other micro-batches had 5 more
    if name == "asft":
        with torch.no_grad(), model.disable_adapter():
            ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        cases = [(None, lambda lg: lf_asft(lg, labels, ref, 0.3))]
    else:
        lf = lf_dft if name == "dft" else (lambda lg, lb, n: lf_eaft(lg, lb, n, 0.7))
        cases = [(items, lambda lg, items=items: lf(lg, labels, items)) for items in (None, n_items)]
    for items, direct in cases:
        want, want_grads = _direct(model, batch, direct)
        for trainer in (fast, hooked):
            got, grads = _loss_and_grads(trainer, model, batch, items)
            assert abs(got.item() - want.item()) < 1e-5, (name, items, trainer.force_head_hook)
            assert grads.keys() == want_grads.keys() and grads
            for key, grad in grads.items():
                torch.testing.assert_close(grad, want_grads[key], atol=1e-6, rtol=1e-4, msg=key)
    plain = _loss_and_grads(LabelledLossTrainer(model=model, args=args), model, batch, None)[0]
    assert abs(plain.item() - want.item()) > 1e-3  # a different loss from the cross-entropy


def test_asft_reference_model_is_used_when_given(tiny_qwen2, tmp_path):
    """Full fine-tuning: the reference is a separate frozen model (here: the same weights, so KL = 0 at first)."""
    import copy

    from transformers import AutoModelForCausalLM, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2).train()
    batch = _batch(model.config.vocab_size)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", prediction_loss_only=True)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    asft = LabelledLossTrainer(model=model, args=args, sft_loss=sft_loss(False, False, 1.0, True, 0.5),
                               reference=reference)
    dft = LabelledLossTrainer(model=model, args=args, sft_loss=sft_loss(True, False, 1.0, False, 0.5))
    same = asft.compute_loss(model, dict(batch)).item()
    assert abs(same - dft.compute_loss(model, dict(batch)).item()) < 1e-6
    with torch.no_grad():
        reference.model.norm.weight.mul_(1.5)
    assert asft.compute_loss(model, dict(batch)).item() > same + 1e-4


# -- OFT ---------------------------------------------------------------------------------------------------------------
PROMPT = "<|im_start|>user\nName the river.<|im_end|>\n<|im_start|>assistant\nThe"


def _logits(model, tokenizer, prompt: str = PROMPT):
    batch = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.float()


@pytest.fixture()
def memo_dir(tmp_path):
    from tests.conftest import write_dataset
    from tests.train.test_sft import FACTS

    return write_dataset(tmp_path / "data", "memo", [{"instruction": q, "input": "", "output": a} for q, a in FACTS])


def test_oft_trains_and_its_merged_export_equals_the_adapter(tiny_qwen2, qwen2_tokenizer, memo_dir, tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from instill.config import build_config
    from instill.model.export import export_model
    from instill.train.run import run_training
    from tests.train.test_sft import config, losses

    out = tmp_path / "oft"
    result = run_training(config(tiny_qwen2, memo_dir, out, finetuning_type="oft", oft_block_size=16,
                                 learning_rate=1e-2, max_steps=6, logging_steps=1))
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "OFT"
    train_losses, _ = losses(out)
    assert train_losses[-1] < train_losses[0], train_losses
    trained = _logits(result.trainer.model, qwen2_tokenizer)
    assert not torch.allclose(trained, _logits(AutoModelForCausalLM.from_pretrained(tiny_qwen2), qwen2_tokenizer))
    merged_dir = export_model(build_config({
        "model_name_or_path": str(tiny_qwen2), "adapter_name_or_path": str(out), "template": "qwen",
        "export_dir": str(tmp_path / "merged"), "export_dtype": "float32"}))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert not any("oft" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, qwen2_tokenizer), trained, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides, says", [
    ({"finetuning_type": "oft", "oft_rank": 4}, "exactly one of oft_rank and oft_block_size"),
    ({"finetuning_type": "oft", "quantization_bit": 4}, "'quantization_bit: 4' with finetuning_type: oft"),
    ({"use_dft_loss": True, "use_eaft_loss": True}, "use_dft_loss and use_eaft_loss are all losses"),
    ({"use_dft_loss": True, "label_smoothing_factor": 0.1}, "remove label_smoothing_factor"),
    ({"ref_model": "m2", "finetuning_type": "full"}, "ref_model in stage sft is the ASFT loss's reference"),
    ({"use_llama_pro": True, "finetuning_type": "full"}, "not full"),
    ({"use_llama_pro": True, "finetuning_type": "freeze", "freeze_trainable_layers": -2}, "must be positive"),
    ({"rope_scaling": "ntk"}, "'rope_scaling'"),
])
def test_extras_mistakes_stop_at_the_door_naming_the_key(overrides, says):
    from instill.config import build_config
    from instill.errors import ConfigError

    with pytest.raises(ConfigError, match=None) as err:
        build_config({"model_name_or_path": "m", "dataset": "d", **overrides})
    assert says in str(err.value) and "\n" not in str(err.value)


# -- LLaMA Pro ---------------------------------------------------------------------------------------------------------
@pytest.fixture()
def expanded_qwen2(tiny_qwen2, tmp_path):
    """The tiny Qwen2 (2 layers) expanded to 4 by `instill export --expand-layers 2`."""
    import yaml

    from instill.cli import main

    cfg = tmp_path / "expand.yaml"
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_qwen2), "template": "qwen",
                                   "export_dir": str(tmp_path / "pro"), "export_dtype": "float32"}))
    assert main(["export", str(cfg), "--expand-layers", "2"]) == 0
    return tmp_path / "pro"


def test_llama_pro_expansion_computes_what_the_original_did(tiny_qwen2, expanded_qwen2, qwen2_tokenizer):
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    expanded = AutoModelForCausalLM.from_pretrained(expanded_qwen2)
    assert expanded.config.num_hidden_layers == 4 and len(expanded.config.layer_types) == 4
    layers = expanded.model.layers
    assert layers[1].mlp.down_proj.weight.abs().sum() == 0 and layers[3].self_attn.o_proj.weight.abs().sum() == 0
    torch.testing.assert_close(layers[1].mlp.up_proj.weight, original.model.layers[0].mlp.up_proj.weight)
    torch.testing.assert_close(_logits(expanded, qwen2_tokenizer), _logits(original, qwen2_tokenizer),
                               rtol=1e-5, atol=1e-5)
    ids = qwen2_tokenizer([PROMPT], return_tensors="pt")
    with torch.no_grad():  # the KV cache is indexed by the new layer numbers
        want = original.generate(**ids, max_new_tokens=6, do_sample=False)
        got = expanded.generate(**ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(want, got)


@pytest.mark.parametrize("method", ["freeze", "lora"])
def test_llama_pro_trains_only_the_expanded_blocks(expanded_qwen2, memo_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    from instill.train.run import run_training
    from tests.train.test_sft import config

    out = tmp_path / method
    result = run_training(config(expanded_qwen2, memo_dir, out, finetuning_type=method, use_llama_pro=True,
                                 freeze_trainable_layers=2, max_steps=3, learning_rate=1e-2))
    trainable = {n for n, p in result.trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.1." in n or ".layers.3." in n for n in trainable), sorted(trainable)[:4]
    if method == "freeze":
        before = AutoModelForCausalLM.from_pretrained(expanded_qwen2).state_dict()
        after = AutoModelForCausalLM.from_pretrained(out).state_dict()
        for name, weight in before.items():  # the original layers (0 and 2), embeddings and norm are untouched
            if not torch.equal(weight, after[name]):
                assert ".layers.1." in name or ".layers.3." in name, name
        assert any(not torch.equal(before[n], after[n]) for n in before if ".layers.3." in n)


# -- RoPE scaling ------------------------------------------------------------------------------------------------------
def test_rope_scaling_is_trained_with_and_saved_for_inference_and_export(tiny_qwen2, memo_dir, tmp_path):
    import json

    from transformers import AutoConfig

    from instill.config import build_config
    from instill.infer.engine import load_generator
    from instill.model.export import export_model
    from instill.train.run import run_training
    from tests.train.test_sft import config

    out = tmp_path / "rope"
    result = run_training(config(tiny_qwen2, memo_dir, out, rope_scaling="linear", cutoff_len=5000, max_steps=2))
    want = {"rope_type": "linear", "factor": 3.0, "rope_theta": 10000.0}  # ceil(5000 / 2048)
    assert result.trainer.model.config.rope_parameters == want
    assert json.loads((out / "rope_scaling.json").read_text())["max_position_embeddings"] == 3 * 2048
    model_args = build_config({"model_name_or_path": str(tiny_qwen2)}).model  # no rope_scaling at inference
    generator = load_generator(model_args, "qwen", out)
    assert generator.model.config.rope_parameters == want
    assert torch.allclose(generator.model.model.rotary_emb.inv_freq,
                          result.trainer.model.base_model.model.model.rotary_emb.inv_freq)
    exported = export_model(build_config({"model_name_or_path": str(tiny_qwen2), "adapter_name_or_path": str(out),
                                          "template": "qwen", "export_dir": str(tmp_path / "merged")}))
    assert AutoConfig.from_pretrained(exported).rope_parameters == want


def test_rope_scaling_needs_a_longer_cutoff_and_follows_llamafactory(tiny_qwen2):
    from transformers import AutoConfig

    from instill.model.rope import rope_settings, training_rope

    settings, line = training_rope("yarn", 2048, tiny_qwen2, False)
    assert settings is None and "not applied" in line
    config = AutoConfig.from_pretrained(tiny_qwen2)
    llama3 = rope_settings(config, "llama3", 4097)["rope_parameters"]
    assert llama3 == {"rope_theta": 10000.0, "rope_type": "llama3", "factor": 3.0,
                      "original_max_position_embeddings": 2048, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    assert rope_settings(config, "dynamic", None)["rope_parameters"]["factor"] == 2.0  # inference: LF's 2


# -- NEFTune -----------------------------------------------------------------------------------------------------------
def test_neftune_noise_is_on_input_embeddings_in_training_only(tiny_qwen2, tmp_path):
    from transformers import AutoModelForCausalLM, TrainerCallback, TrainingArguments

    from instill.data.collate import PadCollator

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    ids = torch.arange(10, 40).unsqueeze(0)
    seen: list[tuple[bool, bool]] = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            embed = model.get_input_embeddings()
            with torch.no_grad():
                model.train()
                noisy = not torch.equal(embed(ids), embed.weight[ids])
                model.eval()
                clean = torch.equal(embed(ids), embed.weight[ids])
                model.train()
            seen.append((noisy, clean))

    rows = [{"input_ids": list(range(10, 30)), "labels": list(range(10, 30))} for _ in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=2,
                             per_device_train_batch_size=2, neftune_noise_alpha=5.0, save_strategy="no")
    trainer = LabelledLossTrainer(model=model, args=args, train_dataset=rows, data_collator=PadCollator(0),
                                  callbacks=[Probe()])
    trainer.train()
    assert seen == [(True, True), (True, True)]  # noise while training, none in eval mode
    embed = model.get_input_embeddings().train()
    assert torch.equal(embed(ids), embed.weight[ids])  # the hook is gone after training (inference is clean)
    assert trainer.evaluate(rows)["eval_loss"] == trainer.evaluate(rows)["eval_loss"]  # no noise at evaluation


# -- LLaMA-Factory 0.9.5's example YAMLs -------------------------------------------------------------------------------
EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "llamafactory_examples" / "extras"
# Stand-ins: the tiny Qwen2 (its template), two demo datasets, a few steps; nothing else of the YAML changes.
RUN = ["dataset=identity,alpaca_en_demo", "template=qwen", "max_samples=8", "max_steps=2", "cutoff_len=128",
       "preprocessing_num_workers=1", "dataloader_num_workers=0", "save_steps=100"]


@pytest.mark.parametrize("name, extra", [
    ("oft/llama3_oft_sft.yaml", []),
    ("oft/qwen2_5vl_oft_sft.yaml", []),  # a text stand-in for Qwen2.5-VL: its text datasets only
    ("llama_pro/llama3_freeze_sft.yaml", ["freeze_trainable_layers=2"]),  # 2 blocks added to the 2-layer stand-in
    ("dft/qwen2_full_sft.yaml", []),
    ("asft/llama2_full_asft.yaml", ["deepspeed=null"]),  # ZeRO-0 is plain data parallelism: one CPU process here
    ("asft/qwen2_full_asft.yaml", ["deepspeed=null"]),
    ("eaft/qwen25_05b_eaft_full.yaml", []),
])
def test_llamafactory_extras_example_trains(name, extra, tiny_qwen2, lf_dataset_dir, tmp_path, request):
    from instill.config import load_config
    from instill.train.run import run_training

    model = request.getfixturevalue("expanded_qwen2") if "llama_pro" in name else tiny_qwen2
    config = load_config(EXAMPLES / name, [f"model_name_or_path={model}", f"dataset_dir={lf_dataset_dir}",
                                           f"output_dir={tmp_path / 'out'}", *RUN, *extra])
    result = run_training(config)
    assert result.trainer.state.global_step == 2 and result.metrics["train_loss"] > 0
