"""Batched inference: left-padded greedy (or sampled) generation that stops at the end-of-turn token.

The seeds generated one test sample at a time with max_new_tokens=512; here prompts are
rendered with the same template as training, batched, and generation stops per row at the
template's end-of-turn token. Prompts longer than a token budget are cut in the middle, as
training cuts them (`data.tokenize`), so the head (system, instruction) and the tail (the
question, the assistant header) survive. Padding is built by hand: the shared tokenizer's
`padding_side` is never changed, so generating inside a training run does not flip the
training collator to left padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from instill.config import EvalArgs, ModelArgs
from instill.data.example import Example
from instill.data.multimodal import ImageInputs, image_batch, tokenize_with_images
from instill.data.templates import ChatTemplate, TemplateChoice, get_template
from instill.data.tokenize import cut_middle, tokenize_rendered
from instill.errors import ConfigError, DataError
from instill.hub import resolve_model_args
from instill.model.adapters import check_adapters
from instill.model.load import Precision, load_model, load_tokenizer, tokenizer_dir
from instill.model.processor import load_image_inputs
from instill.model.rope import inference_rope


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for token-id rows padded to the longest, on `side`."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@dataclass(frozen=True)
class Decoding:
    """LLaMA-Factory's generating arguments beyond temperature and top_p (which `generate_ids` takes as they are).

    None leaves the model's own generation_config value (what instill did before these keys existed)."""

    top_k: int | None = None
    num_beams: int = 1
    repetition_penalty: float | None = None
    length_penalty: float = 1.0
    max_length: int | None = None
    skip_special_tokens: bool = True

    @classmethod
    def of(cls, e: EvalArgs, evaluation: bool = False) -> Decoding:
        """The config's settings; `evaluation` (eval, predict, task metrics) takes eval_num_beams over num_beams."""
        beams = (e.eval_num_beams or e.num_beams) if evaluation else e.num_beams
        return cls(e.top_k, beams, e.repetition_penalty, e.length_penalty, e.max_length, e.skip_special_tokens)

    def generate_kwargs(self, sampling: bool) -> dict[str, Any]:
        """transformers' generate arguments for these settings (only those set)."""
        kwargs: dict[str, Any] = {}
        if sampling and self.top_k is not None:
            kwargs["top_k"] = self.top_k
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.num_beams > 1:
            kwargs.update(num_beams=self.num_beams, length_penalty=self.length_penalty)
        return kwargs


def check_streamable(e: EvalArgs, command: str) -> None:
    """chat and serve stream each token as it is chosen, which beam search cannot do: one line instead."""
    if e.num_beams > 1:
        raise ConfigError(f"num_beams: {e.num_beams}: {command} streams each token as it is chosen, which beam search "
                          "cannot; beams apply to instill eval and predict (set eval_num_beams for those alone)")


class Generator:
    """Renders conversations with a chat template and generates replies in batches."""

    def __init__(self, model: Any, tokenizer: Any, template: ChatTemplate, media: ImageInputs | None = None) -> None:
        self.model, self.tokenizer, self.template, self.media = model, tokenizer, template, media
        stop = {tokenizer.eos_token_id}
        if template.end_of_turn:
            stop.add(tokenizer.convert_tokens_to_ids(template.end_of_turn))
        self.stop_ids = sorted(i for i in stop if i is not None and i >= 0)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]

    def render(self, conversation: list[dict], tools: list[dict] | None = None) -> str:
        """The prompt text: the conversation plus the template's assistant header."""
        return self.template.render(conversation, tools, add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_prompts(self, conversations: list[list[dict]], tools: Sequence[list[dict] | None] | None = None,
                       max_tokens: int | None = None, images: Sequence[list[str]] | None = None
                       ) -> tuple[list[list[int]], int]:
        """Token ids of each rendered prompt, cut in the middle to `max_tokens`; also how many were cut.

        `images`: each prompt's image paths, one per `<image>` in its text (a vision-language model only);
        a prompt with images is never cut (its image tokens must stay whole)."""
        tools = tools or [None] * len(conversations)
        images = images or [[]] * len(conversations)
        out, cut = [], 0
        for conversation, tool, paths in zip(conversations, tools, images):
            # As in training: text in a message that spells a control token stays text.
            example = Example(conversation, tool, images=list(paths))
            if paths:
                if self.media is None:
                    raise DataError("a prompt has images but the model reads text only (no image processor in its "
                                    "folder); use a vision-language model such as Qwen2-VL")
                out.append(list(tokenize_with_images(self.render(conversation, tool), example, self.tokenizer,
                                                     self.media)[0]))
                continue
            ids, _ = tokenize_rendered(self.render(conversation, tool), example, self.tokenizer)
            ids = list(ids)
            if max_tokens is not None and len(ids) > max_tokens:
                ids, cut = cut_middle(ids, max_tokens), cut + 1
            out.append(ids)
        return out, cut

    @torch.inference_mode()
    def generate(self, conversations: list[list[dict]], max_new_tokens: int = 64, batch_size: int = 8,
                 temperature: float = 0.0, top_p: float = 1.0, progress: bool = False,
                 images: Sequence[list[str]] | None = None) -> list[str]:
        """One reply per conversation (each ends with a user turn)."""
        prompts, _ = self.encode_prompts(conversations, images=images)
        return self.generate_ids(prompts, max_new_tokens, batch_size, temperature, top_p, progress, images=images)

    @torch.inference_mode()
    def generate_ids(self, prompts: list[list[int]], max_new_tokens: int | None = 64, batch_size: int = 8,
                     temperature: float = 0.0, top_p: float = 1.0, progress: bool = False,
                     desc: str = "Generating", images: Sequence[list[str]] | None = None,
                     decoding: Decoding = Decoding()) -> list[str]:
        """One decoded reply per tokenized prompt; greedy when temperature is 0. `images`: each prompt's image
        paths, as given to `encode_prompts`. `max_new_tokens` None: decoding.max_length bounds prompt + answer."""
        if max_new_tokens is None and decoding.max_length is None:
            raise ValueError("max_new_tokens or decoding.max_length is needed")
        budget = {"max_new_tokens": max_new_tokens} if max_new_tokens else {"max_length": decoding.max_length}
        was_training = self.model.training
        self.model.eval()
        device = self.model.device
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        replies: list[str] = [""] * len(prompts)
        sampling = temperature > 0
        with tqdm(total=len(prompts), desc=desc, unit="sample", disable=not progress, leave=False) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                ids, mask = pad_batch([prompts[i] for i in idx], self.pad_id, "left")
                extra = {} if self.media is None else image_batch(
                    self.media, ids, [p for i in idx for p in (images[i] if images else [])])
                out = self.model.generate(
                    **{k: v.to(device) for k, v in extra.items()},
                    input_ids=ids.to(device), attention_mask=mask.to(device), **budget,
                    do_sample=sampling, temperature=temperature if sampling else None,
                    top_p=top_p if sampling else None, **decoding.generate_kwargs(sampling),
                    eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                )
                for i, row in zip(idx, out[:, ids.shape[1]:].tolist()):
                    end = next((n for n, token in enumerate(row) if token in self.stop_ids), len(row))
                    replies[i] = self.tokenizer.decode(row[:end],
                                                       skip_special_tokens=decoding.skip_special_tokens).strip()
                bar.update(len(idx))
        self.model.train(was_training)
        return replies


def load_generator(model_args: ModelArgs, template_name: str | TemplateChoice = "auto",
                   adapter: str | Path | Sequence[str | Path] | None = None,
                   precision: Precision | None = None, merge: bool = True) -> Generator:
    """Base model (plus optional LoRA adapters) ready to generate.

    Adapters are applied in order and merged into an inference copy of the weights (nothing trains
    afterwards): an unmerged LoRA runs its extra matmuls on every layer, which made scoring a tuned model
    2.2x slower than its base. A quantized base keeps the last adapter unmerged (merging re-quantizes).
    `merge=False` keeps the last adapter unmerged (to compare with it disabled, as the preference
    eval does). A merged (full) model directory is just `model_args.model_name_or_path`. The tokenizer (and so the
    chat template) is the one saved with the last adapter when there is one (`tokenizer_dir`).
    """
    model_dir = resolve_model_args(model_args)
    adapters = [adapter] if isinstance(adapter, (str, Path)) else list(adapter or [])
    sub = model_args.adapter_folder
    check_adapters([str(p) for p in adapters], sub)
    tokenizer = load_tokenizer(model_args, tokenizer_dir(model_dir, adapters, sub))
    rope = inference_rope(model_args.rope_scaling, model_dir, adapters, model_args.trust_remote_code)
    model = load_model(model_args, precision or Precision(), "lora", model_dir, rope=rope, tokenizer=tokenizer,
                       inference=True)
    if adapters:
        from peft import PeftModel

        for i, path in enumerate(adapters):
            model = PeftModel.from_pretrained(model, str(path), **({"subfolder": sub} if sub else {}))
            if i < len(adapters) - 1 or (merge and not getattr(model, "is_quantized", False)):
                model = model.merge_and_unload()
    model.eval()
    media = load_image_inputs(model_args, model_dir, tokenizer)  # None for a text model
    return Generator(model, tokenizer, get_template(template_name, tokenizer), media)
