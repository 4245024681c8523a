"""share_prefix under activation checkpointing and dropout (train/shared_prefix.py): the prefix runs once outside
checkpointing, the rows through checkpointed layers reading its cache; loss and every gradient as without sharing."""

from __future__ import annotations

import pytest
import torch

from instill.data.tokenize import IGNORE_INDEX
from instill.model.lora_dropout import fuse_lora_dropout
from instill.train.trainer import LabelledLossTrainer
from tests.train.test_trainer_loss import _loss_and_grads, _prefixed_batch


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         attn_implementation="sdpa")
    return LlamaForCausalLM(config)


def _model(tiny_qwen2, arch: str, method: str, lora_dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    if arch == "qwen2":
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32, attn_implementation="sdpa")
    else:
        base = _tiny_llama()
    model = base if method == "full" else get_peft_model(base, LoraConfig(
        r=4, target_modules="all-linear", init_lora_weights=False, lora_dropout=lora_dropout, task_type="CAUSAL_LM"))
    model.train()
    return model, base


def _args(tmp_path):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", prediction_loss_only=True)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_shared_prefix_under_checkpointing_gives_the_same_loss_and_grads(tiny_qwen2, tmp_path, arch, method):
    model, base = _model(tiny_qwen2, arch, method)
    batch = _prefixed_batch(base.config.vocab_size)
    items = torch.tensor(int((batch["labels"] != IGNORE_INDEX).sum()))
    shared = LabelledLossTrainer(model=model, args=_args(tmp_path))
    unshared = LabelledLossTrainer(model=model, args=_args(tmp_path), share_prefix=False)
    want, want_grads = _loss_and_grads(unshared, model, batch, items)  # unshared, not checkpointed
    runs = {}
    for reentrant in (True, False):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
        for name, trainer in (("unshared", unshared), ("shared", shared)):
            runs[name, reentrant] = _loss_and_grads(trainer, model, batch, items)
        base.activation_checkpointing_disable()
    runs["shared", "not checkpointed"] = _loss_and_grads(shared, model, batch, items)
    assert shared.batch_counts["shared"] == 3 * 60 and unshared.batch_counts["shared"] == 0  # every shared run shared
    assert len(want_grads) > 4 and all(g.abs().sum() > 0 for n, g in want_grads.items() if "layers.0." in n)
    for run, (loss, grads) in runs.items():
        assert abs(loss.item() - want.item()) < 1e-5, run
        assert grads.keys() == want_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, want_grads[name], atol=1e-6, rtol=1e-4, msg=f"{run} {name}")
    layer = base.model.layers[0]
    assert "_can_checkpoint_with_cache" not in vars(layer) and not layer.gradient_checkpointing  # all restored


def test_checkpointing_functions_other_than_torchs_run_unshared(tiny_qwen2, tmp_path):
    from torch.utils.checkpoint import checkpoint

    model, base = _model(tiny_qwen2, "qwen2", "lora")
    batch = _prefixed_batch(base.config.vocab_size)
    trainer = LabelledLossTrainer(model=model, args=_args(tmp_path))
    want = trainer.compute_loss(model, dict(batch)).item()
    base.activation_checkpointing_enable()
    for layer in base.model.layers:  # e.g. DeepSpeed's: use_reentrant=False cannot be asked of it
        layer._gradient_checkpointing_func = lambda function, *args: checkpoint(function, *args, use_reentrant=True)
    assert abs(trainer.compute_loss(model, dict(batch)).item() - want) < 1e-5
    assert trainer.batch_counts["shared"] == 60 and trainer.share_prefix  # only the first batch; still on


@pytest.mark.parametrize("fused", [False, True], ids=["peft-dropout", "fused-dropout"])
def test_dropout_shares_unless_told_not_to_and_checkpointing_recomputes_its_masks(tiny_qwen2, tmp_path, fused):
    model, base = _model(tiny_qwen2, "qwen2", "lora", lora_dropout=0.3)
    if fused:  # what a CPU run trains with (model/lora_dropout.py)
        assert fuse_lora_dropout(model) == 2 * 7
    batch = _prefixed_batch(base.config.vocab_size)
    items = torch.tensor(int((batch["labels"] != IGNORE_INDEX).sum()))
    off = LabelledLossTrainer(model=model, args=_args(tmp_path), share_prefix_with_dropout=False)
    off.compute_loss(model, dict(batch))
    assert off.batch_counts["shared"] == 0  # lora_dropout is active: per-row masks, one pass
    on = LabelledLossTrainer(model=model, args=_args(tmp_path))  # the default shares under dropout
    runs = []
    for checkpointing in (False, True):
        if checkpointing:
            base.activation_checkpointing_enable()
        torch.manual_seed(5)
        runs.append(_loss_and_grads(on, model, batch, items))
    assert on.batch_counts["shared"] == 2 * 60
    torch.manual_seed(5)
    other_masks = _loss_and_grads(on, model, batch, items)[0]
    torch.manual_seed(6)
    assert abs(_loss_and_grads(on, model, batch, items)[0].item() - other_masks.item()) > 1e-6  # dropout is active
    (loss, grads), (ckpt_loss, ckpt_grads) = runs
    assert abs(loss.item() - ckpt_loss.item()) < 1e-5  # the recompute draws the forward's masks again
    for name, grad in grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
