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


def _training(tiny_qwen2, tmp_path, method, make_batch):
    """A model in training mode, a batch for it, loss-only TrainingArguments."""
    from transformers import TrainingArguments

    model = _model(tiny_qwen2, method)
    model.train()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", prediction_loss_only=True)
    return model, make_batch(model.config.vocab_size), args


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_labelled_loss_equals_full_loss_and_grads(tiny_qwen2, tmp_path, method):
    from transformers import Trainer

    model, batch, args = _training(tiny_qwen2, tmp_path, method, _batch)
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


def _prefixed_batch(vocab: int, prefix: int = 20) -> dict[str, torch.Tensor]:
    """Rows that begin with the same `prefix` tokens (a system prompt), then differ; right-padded."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (4, prefix + 14), generator=g)
    ids[:, :prefix] = ids[0, :prefix]
    mask = torch.ones_like(ids)
    mask[1, prefix + 9:] = 0
    mask[3, prefix + 4:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, (start, end) in enumerate(((prefix + 10, prefix + 14), (prefix + 6, prefix + 9),
                                        (prefix + 1, prefix + 14), (prefix + 2, prefix + 4))):
        labels[row, start:end] = ids[row, start:end]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_shared_prefix_length_stops_at_the_first_difference_or_scored_position():
    from instill.train.shared_prefix import shared_prefix_length

    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 1, 2], [5, 6, 7, 8, 0]])
    none = torch.zeros_like(ids, dtype=torch.bool)
    assert shared_prefix_length(ids, None, none) == 3
    keep = none.clone()
    keep[2, 1] = True  # position 1 scores token 2 of row 2: the prefix must end before it
    assert shared_prefix_length(ids, None, keep) == 1
    mask = torch.ones_like(ids)
    mask[1, 2:] = 0  # row 1 is 2 tokens long
    assert shared_prefix_length(ids, mask, none) == 2
    assert shared_prefix_length(ids[:1], None, none[:1]) == 0  # one row: nothing to share
    same = torch.tensor([[4, 4, 4], [4, 4, 4]])
    assert shared_prefix_length(same, None, torch.zeros_like(same, dtype=torch.bool)) == 2  # a position is left


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_shared_prefix_gives_the_same_loss_and_grads(tiny_qwen2, tmp_path, method):
    """share_prefix: the common prefix once + the rest on its repeated cache == every row in full."""
    from transformers import Trainer

    model, batch, args = _training(tiny_qwen2, tmp_path, method, _prefixed_batch)
    shared, unshared = LabelledLossTrainer(model=model, args=args), LabelledLossTrainer(model=model, args=args,
                                                                                        share_prefix=False)
    assert shared.share_prefix and not unshared.share_prefix
    items = torch.tensor(int((batch["labels"] != IGNORE_INDEX).sum()) + 3)
    want, want_grads = _loss_and_grads(Trainer(model=model, args=args), model, batch, items)
    for trainer in (shared, unshared):
        got, grads = _loss_and_grads(trainer, model, batch, items)
        assert abs(got.item() - want.item()) < 1e-5
        for name, grad in grads.items():
            torch.testing.assert_close(grad, want_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    assert shared.batch_counts["shared"] == 20 * 3 and unshared.batch_counts["shared"] == 0  # 3 rows skipped 20
    prefix_grads = [g for n, g in grads.items() if "layers.0." in n]
    assert prefix_grads and all(g.abs().sum() > 0 for g in prefix_grads)  # gradients reach the first layer

    model.eval()
    with torch.no_grad():
        want_eval = Trainer(model=model, args=args).prediction_step(model, dict(batch), prediction_loss_only=True)[0]
        got_eval = shared.prediction_step(model, dict(batch), prediction_loss_only=True)[0]
    assert abs(got_eval.item() - want_eval.item()) < 1e-5
    assert shared.batch_counts["shared"] == 60  # evaluation batches are not training counts


def test_shared_prefix_is_off_where_it_would_not_be_exact(tiny_qwen2, tmp_path):
    from transformers import TrainingArguments

    model = _model(tiny_qwen2, "lora")
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    model.train()
    batch = _prefixed_batch(model.config.vocab_size)
    model.config.attention_dropout = 0.1  # one dropout mask for every row's prefix would differ from per-row masks
    default = LabelledLossTrainer(model=model, args=args)
    default.compute_loss(model, dict(batch))
    assert default.batch_counts["shared"] == 60  # shared under dropout by default (measured within seed noise)
    trainer = LabelledLossTrainer(model=model, args=args, share_prefix_with_dropout=False)
    trainer.compute_loss(model, dict(batch))
    assert trainer.batch_counts["shared"] == 0
    model.eval()  # no dropout in evaluation: shared
    trainer.compute_loss(model, dict(batch))
    model.train()
    model.config.attention_dropout = 0.0
    assert trainer.batch_counts["shared"] == 0  # (evaluation batches are not counted)
    trainer = LabelledLossTrainer(model=model, args=args)
    positions = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
    trainer.compute_loss(model, {**batch, "position_ids": positions})  # positions given: one pass
    assert trainer.batch_counts["shared"] == 0
    trainer.compute_loss(model, dict(batch))
    assert trainer.batch_counts["shared"] == 60


def test_a_cache_that_cannot_be_repeated_ends_sharing(tiny_qwen2, tmp_path, monkeypatch):
    import instill.train.shared_prefix as shared_prefix_module

    model, batch, args = _training(tiny_qwen2, tmp_path, "lora", _prefixed_batch)
    trainer = LabelledLossTrainer(model=model, args=args)
    want = trainer.compute_loss(model, dict(batch)).item()
    monkeypatch.setattr(shared_prefix_module, "plain_attention_cache", lambda cache, length: False)  # e.g. a recurrent-state cache
    assert abs(trainer.compute_loss(model, dict(batch)).item() - want) < 1e-5  # one pass instead
    assert not trainer.share_prefix and trainer.batch_counts["shared"] == 60  # only the first batch shared


def test_only_plain_attention_caches_are_repeated():
    from transformers.cache_utils import DynamicCache, DynamicSlidingWindowLayer

    from instill.train.shared_prefix import plain_attention_cache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    assert plain_attention_cache(cache, 3)
    assert not plain_attention_cache(cache, 4)  # it must hold exactly the prefix
    assert not plain_attention_cache(DynamicCache(), 3)  # layers that kept nothing (checkpointed)
    cache.layers.append(DynamicSlidingWindowLayer(sliding_window=2))
    assert not plain_attention_cache(cache, 3)
    assert not plain_attention_cache(None, 3) and not plain_attention_cache(((torch.zeros(1), torch.zeros(1)),), 3)
