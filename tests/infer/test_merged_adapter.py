"""eval / predict / chat load a tuned model with its LoRA merged into the weights: same logits, no LoRA layers."""

from __future__ import annotations

import torch

from instill.config import ModelArgs
from instill.infer.engine import load_generator


def test_adapters_are_merged_for_inference_with_equal_logits(tiny_qwen2, adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    generator = load_generator(ModelArgs(model_name_or_path=str(tiny_qwen2)), "auto", adapters["alpha"])
    assert not isinstance(generator.model, PeftModel)
    assert not any("lora_" in name for name, _ in generator.model.named_parameters())

    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2), str(adapters["alpha"]))
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    ids = torch.randint(0, 151_000, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got, plain = (m.eval()(input_ids=ids).logits for m in (unmerged, generator.model, base))
    assert (want - plain).abs().max() > 1e-3  # the adapter changes the outputs ...
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)  # ... and merging keeps them
