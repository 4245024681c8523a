"""LoRA dropout as one autograd function on a CPU (model/lora_dropout.py): its masks, its gradients, and the
peft layers it changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from instill.model.lora_dropout import DroppedInputLinear, dropped_fraction, fuse_lora_dropout, keep_mask


def test_masks_drop_p_in_every_quarter_of_a_word_and_follow_the_seed():
    n, p = 3 * 1_000_000, 0.05
    torch.manual_seed(1)
    keep = keep_mask((n,), p)
    assert keep.dtype == torch.bool and keep.shape == (n,)
    sd = (p * (1 - p) / (n / 3)) ** 0.5
    for quarter in range(3):  # element i comes from quarter i % 3 of its word; each must drop p
        rate = 1 - keep[quarter::3].float().mean().item()
        assert abs(rate - p) < 6 * sd, (quarter, rate)
    pairs = (~keep[0::3] & ~keep[1::3]).float().mean().item()  # quarters of one word are independent
    assert abs(pairs - p * p) < 6 * (p * p / (n / 3)) ** 0.5
    torch.manual_seed(1)
    assert torch.equal(keep_mask((n,), p), keep)
    assert not torch.equal(keep_mask((n,), p), keep)
    assert keep_mask((5, 7), p).shape == (5, 7) and keep_mask((2, 4), 0.0).all()
    assert dropped_fraction(0.05) == 3277 / 65536 and dropped_fraction(0.1) == 6554 / 65536


def test_fused_function_matches_dropout_then_linear_with_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(3, 10, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    layer = DroppedInputLinear(16, 4, bias=False, dtype=torch.float64)
    layer.p = 0.3
    with torch.no_grad():
        layer.weight.copy_(weight)
    torch.manual_seed(7)
    out = layer(x)
    (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    torch.manual_seed(7)
    keep = keep_mask(x.shape, 0.3)
    assert 0 < (~keep).sum() < keep.sum()
    x2 = x.detach().clone().requires_grad_()
    want = nn.functional.linear(x2 * keep / (1 - dropped_fraction(0.3)), weight)
    (want * torch.arange(want.numel(), dtype=want.dtype).view_as(want)).sum().backward()
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(layer.weight.grad, weight.grad)
    layer.eval()  # outside training: the plain linear layer
    torch.testing.assert_close(layer(x), nn.functional.linear(x, weight))


def _peft(tiny_qwen2, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False,
                                           task_type="CAUSAL_LM", **lora))


def test_fusing_peft_layers_keeps_their_weights_and_peft_s_vanilla_forward(tiny_qwen2):
    from peft.tuners.lora.layer import Linear as LoraLinear

    model = _peft(tiny_qwen2, lora_dropout=0.2)
    keys = sorted(model.state_dict())
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    model.eval()
    before = model(input_ids=ids).logits
    assert fuse_lora_dropout(model) == 2 * 7 and fuse_lora_dropout(model) == 0  # every linear layer, once
    assert sorted(model.state_dict()) == keys
    torch.testing.assert_close(model(input_ids=ids).logits, before)  # evaluation is unchanged

    # peft's vanilla forward is base_layer(x) + lora_B(lora_A(dropout(x))) * scaling: with the dropout inside
    # lora_A, the layer in training equals that sum with lora_A's mask
    layer = next(m for m in model.modules() if isinstance(m, LoraLinear))
    layer.train()
    x = torch.randn(2, 5, layer.in_features)
    torch.manual_seed(3)
    got = layer(x)
    torch.manual_seed(3)
    keep = keep_mask(x.shape, 0.2)
    a, b = layer.lora_A["default"], layer.lora_B["default"]
    want = layer.base_layer(x) + b(nn.functional.linear(x * keep, a.weight) / (1 - dropped_fraction(0.2))) \
        * layer.scaling["default"]
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("lora", [{"lora_dropout": 0.0}, {"lora_dropout": 0.1, "use_dora": True}],
                         ids=["no-dropout", "dora"])
def test_layers_without_dropout_or_with_a_variant_are_left_to_peft(tiny_qwen2, lora):
    model = _peft(tiny_qwen2, **lora)
    assert fuse_lora_dropout(model) == 0
    assert not any(isinstance(m, DroppedInputLinear) for m in model.modules())


def test_bf16_autocast_and_bf16_weights_train_through_the_fused_layer():
    torch.manual_seed(0)
    layer = DroppedInputLinear(16, 4, bias=False)
    layer.p = 0.1
    x = torch.randn(2, 6, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16: true on a CPU with bf16 instructions
        out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    assert layer.weight.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    pure = DroppedInputLinear(16, 4, bias=False, dtype=torch.bfloat16)  # pure_bf16: bf16 weights and inputs
    pure.p = 0.1
    xb = torch.randn(2, 6, 16, dtype=torch.bfloat16, requires_grad=True)
    pure(xb).float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and pure.weight.grad.dtype == torch.bfloat16
