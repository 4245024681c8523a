"""The labelled-positions loss (train/trainer.py) equals the full computation: loss and every gradient."""

from __future__ import annotations

import pytest
import torch

from instill.data.tokenize import IGNORE_INDEX
from instill.train.trainer import LabelledLossTrainer


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0  # right padding
    mask[2, 9:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 15:18] = ids[0, 15:18]  # a few trained positions per row, as in classification SFT
    labels[1, 10:14] = ids[1, 10:14]
    labels[2, 6:9] = ids[2, 6:9]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _model(tiny_qwen2, method: str, attention: str = "sdpa", dtype: torch.dtype = torch.float32):
    from peft import AdaLoraConfig, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=dtype, attn_implementation=attention)
    if method == "lora":
        cfg = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    else:
        cfg = AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules="all-linear", orth_reg_weight=0.5,
                             task_type="CAUSAL_LM")  # as model/adapters.py builds them
    model = get_peft_model(base, cfg)
    if method == "adalora":  # nonzero B so every gradient is exercised
        for n, p in model.named_parameters():
            if "lora_B" in n or "lora_E" in n:
                torch.nn.init.normal_(p, std=0.1)
    return model


def _loss_and_grads(trainer, model, batch, items):
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_labelled_loss_equals_full_loss_and_grads(tiny_qwen2, tmp_path, method):
    from transformers import Trainer, TrainingArguments

    model = _model(tiny_qwen2, method)
    model.train()
    batch = _batch(model.config.vocab_size)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", prediction_loss_only=True)
    plain, fast = Trainer(model=model, args=args), LabelledLossTrainer(model=model, args=args)
    hooked = LabelledLossTrainer(model=model, args=args)
    hooked.force_head_hook = True
    n_items = torch.tensor(int((batch["labels"] != IGNORE_INDEX).sum()) + 5)  # as if other micro-batches had 5 more
    for items in (None, n_items):
        want, want_grads = _loss_and_grads(plain, model, batch, items)
        for trainer in (fast, hooked):
            got, grads = _loss_and_grads(trainer, model, batch, items)
            assert abs(got.item() - want.item()) < 1e-5, (trainer.force_head_hook, items)
            assert grads.keys() == want_grads.keys() and len(grads) > 0
            for name, grad in grads.items():
                torch.testing.assert_close(grad, want_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    if method == "adalora":  # the regulariser is in both (it changes the loss)
        model.base_model.peft_config["default"].orth_reg_weight = 0.0
        without = fast.compute_loss(model, dict(batch)).item()
        assert abs(without - want.item()) > 1e-4

    model.eval()  # evaluation loss, through prediction_step
    with torch.no_grad():
        want_eval = plain.prediction_step(model, dict(batch), prediction_loss_only=True)[0]
        got_eval = fast.prediction_step(model, dict(batch), prediction_loss_only=True)[0]
    assert abs(got_eval.item() - want_eval.item()) < 1e-5
    _, outputs = fast.compute_loss(model, dict(batch), return_outputs=True)
    assert outputs["logits"].shape[0] == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # only kept rows


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_give_the_unpacked_loss_and_grads(tiny_qwen2, tmp_path, attention):
    """packing: rows packed with per-sequence position_ids and the 4-D float block mask == the same rows padded."""
    from transformers import TrainingArguments

    from instill.data.collate import PackCollator, PadCollator

    model = _model(tiny_qwen2, "lora", attention)
    model.train()
    g = torch.Generator().manual_seed(5)
    features = []
    for n, trained in ((11, 3), (7, 2), (16, 5), (5, 5)):
        ids = torch.randint(0, 151_000, (n,), generator=g).tolist()
        features.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n - trained) + ids[n - trained:]})
    packed = PackCollator(pad_id=0, capacity=24)(features)
    assert packed["input_ids"].shape[0] == 2 and packed["packed_attention_mask"].shape[1:] == (1, 23, 23)  # 16+7, 11+5
    assert packed["position_ids"][packed["attention_mask"] == 1].tolist().count(0) == 4  # four sequences
    assert int(packed["attention_mask"].sum()) == 39  # no token lost
    padded = PadCollator(pad_id=0)(features)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = LabelledLossTrainer(model=model, args=args)
    items = torch.tensor(15)
    want, want_grads = _loss_and_grads(trainer, model, padded, items)
    got, grads = _loss_and_grads(trainer, model, packed, items)
    assert abs(got.item() - want.item()) < 1e-5
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_bf16_frozen_base_fast_paths_match(tiny_qwen2, tmp_path):
    """bf16 as instill trains LoRA in it (frozen base bf16, adapters fp32): labelled-only and packed losses
    match the plain bf16 computation within bf16 rounding (bf16 is emulated on AVX2 CPUs: kept tiny)."""
    from transformers import Trainer, TrainingArguments

    from instill.data.collate import PackCollator, PadCollator

    model = _model(tiny_qwen2, "lora", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    model.train()
    batch = _batch(model.config.vocab_size)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    want, want_grads = _loss_and_grads(Trainer(model=model, args=args), model, batch, None)
    fast = LabelledLossTrainer(model=model, args=args)
    got, grads = _loss_and_grads(fast, model, batch, None)
    assert abs(got.item() - want.item()) < 1e-3 * want.item()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], atol=1e-3, rtol=2e-2, msg=name)
    features = [{"input_ids": row[m == 1].tolist(), "labels": lab[m == 1].tolist()}
                for row, m, lab in zip(batch["input_ids"], batch["attention_mask"], batch["labels"])]
    padded, _ = _loss_and_grads(fast, model, PadCollator(0)(features), None)
    packed, _ = _loss_and_grads(fast, model, PackCollator(0, 64)(features), None)
    assert abs(packed.item() - padded.item()) < 1e-2 * padded.item()
