"""Integration on a real pretrained model: SmolLM2-135M-Instruct from the packaged GGUF."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from instill.data.templates import get_template
from instill.infer.engine import Generator
from instill.train.run import run_training
from tests.conftest import native_bf16
from tests.train.test_sft import FACTS, config

pytestmark = pytest.mark.slow


def test_gguf_conversion_special_tokens_and_stop(smollm2_dir):
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.eos_token == "<|im_end|>" and tok.convert_tokens_to_ids("<|im_end|>") == 2
    assert (smollm2_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert not hasattr(model.config, "quantization_config")

    gen = Generator(model, tok, get_template("auto", tok))
    assert gen.stop_ids == [2]
    prompt = gen.template.render([{"role": "user", "content": "Say hello in one word."}], add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=48, do_sample=False, eos_token_id=gen.stop_ids, pad_token_id=2)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    assert new[-1] == 2 and len(new) < 48  # stopped at <|im_end|>, not at the length limit


def test_lora_memorises_facts(smollm2_dir, tmp_path):
    from tests.conftest import write_dataset

    data = write_dataset(tmp_path / "data", "memo", [{"instruction": q, "input": "", "output": a} for q, a in FACTS])
    out = tmp_path / "smol-lora"
    cfg = config(smollm2_dir, data, out, template="auto", learning_rate=2e-3, max_steps=20, bf16=native_bf16(),
                 lora_rank=16, cutoff_len=96)
    result = run_training(cfg)
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.25 * losses[0], losses

    gen = Generator(result.trainer.model, AutoTokenizer.from_pretrained(out), get_template("auto", AutoTokenizer.from_pretrained(out)))
    questions = [q for q, _ in FACTS[:4]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        answers = gen.generate([[{"role": "user", "content": q}] for q in questions], max_new_tokens=16, batch_size=4)
    assert answers == [a for _, a in FACTS[:4]]
