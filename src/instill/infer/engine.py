"""Batched inference: left-padded greedy (or sampled) generation that stops at the end-of-turn token.

The seeds generated one test sample at a time with max_new_tokens=512; here prompts are
rendered with the same template as training, batched, and generation stops per row at the
template's end-of-turn token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from instill.config import ModelArgs
from instill.data.templates import ChatTemplate, get_template
from instill.hub import resolve_model
from instill.model.load import Precision, load_model, load_tokenizer


class Generator:
    """Renders conversations with a chat template and generates replies in batches."""

    def __init__(self, model: Any, tokenizer: Any, template: ChatTemplate) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        stop = {tokenizer.eos_token_id}
        if template.end_of_turn:
            stop.add(tokenizer.convert_tokens_to_ids(template.end_of_turn))
        self.stop_ids = sorted(i for i in stop if i is not None and i >= 0)

    @torch.inference_mode()
    def generate(self, conversations: list[list[dict]], max_new_tokens: int = 64, batch_size: int = 8,
                 temperature: float = 0.0, top_p: float = 1.0, progress: bool = False) -> list[str]:
        """One reply per conversation (each ends with a user turn)."""
        self.model.eval()
        self.tokenizer.padding_side = "left"
        prompts = [self.template.render(c, add_generation_prompt=True) for c in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        replies: list[str] = [""] * len(prompts)
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc="Generating", unit="batch", disable=not progress, leave=False):
            idx = order[start:start + batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.model.device)
            sampling = temperature > 0
            out = self.model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=sampling,
                temperature=temperature if sampling else None, top_p=top_p if sampling else None,
                eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
            )
            new_tokens = out[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new_tokens):
                replies[i] = self.tokenizer.decode(row, skip_special_tokens=True).strip()
        return replies


def load_generator(model_args: ModelArgs, template_name: str = "auto", adapter: str | Path | None = None,
                   precision: Precision | None = None) -> Generator:
    """Base model (plus an optional LoRA adapter) ready to generate."""
    model_dir = resolve_model(model_args.model_name_or_path, model_args.cache_dir, model_args.model_revision,
                              model_args.hf_hub_token)
    tokenizer = load_tokenizer(model_args, model_dir)
    model = load_model(model_args, precision or Precision(), "lora", model_dir)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return Generator(model, tokenizer, get_template(template_name, tokenizer))
