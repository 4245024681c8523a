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


def test_fast_loss_paths_equal_the_plain_loss_on_real_rows(smollm2_dir, tmp_path):
    """Labelled-only logits and the shared prefix (Fudan-news rows: the system prompt and instruction, 130
    tokens, are common) give the plain Trainer's loss and gradients on a real Llama-architecture model."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from instill.data.collate import PadCollator
    from instill.data.tokenize import IGNORE_INDEX
    from instill.train.trainer import LabelledLossTrainer
    from tests.conftest import SHARED

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    lines = (SHARED / "data" / "cls_fudan_derived_msswiftlearn" / "fudan_news_4class__val.jsonl").read_text().splitlines()
    features = []
    for line in lines[:3]:
        messages = [{**m, "content": m["content"][:40]} if m["role"] == "user" else m for m in json.loads(line)["messages"]]
        prompt = tok(tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False),
                     add_special_tokens=False)["input_ids"]
        full = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
        features.append({"input_ids": full, "labels": [IGNORE_INDEX] * len(prompt) + full[len(prompt):]})
    batch = PadCollator(pad_id=tok.pad_token_id)(features)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
    model.train()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    results = []
    for trainer in (Trainer(model=model, args=args), LabelledLossTrainer(model=model, args=args)):
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(20))
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    assert trainer.batch_counts["shared"] >= 2 * 100  # the prefix ran once instead of three times
    (want, want_grads), (got, grads) = results
    assert abs(got - want) < 1e-5 * max(1.0, want)
    worst = max(((g - want_grads[n]).abs().max() / want_grads[n].abs().max()).item() for n, g in grads.items())
    assert worst < 1e-4, worst
