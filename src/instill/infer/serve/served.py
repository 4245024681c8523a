"""The models one `instill serve` answers for: a base and each of its LoRA adapters, under their names.

The model is chosen as `instill eval` chooses it (`choose_model`): base, base + adapters, or what
training wrote to output_dir. Unlike eval, which stacks several adapters into one model, serving
loads each adapter beside the others on one base (peft adapters named a0, a1 ...) and answers for
each one, and for the base, by name; one batch can mix them (peft's `adapter_names=`).

Every name renders prompts with its own tokenizer: the one training saved with that adapter (and so
the chat template it trained with), else the base's, stops at that template's end of turn, and has its
tool calls read back in that template's tool format (`template.tool_format`, toolcalls.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instill.config import RunConfig
from instill.data.example import Example
from instill.data.multimodal import ImageInputs, tokenize_with_images
from instill.data.templates import ChatTemplate, TemplateChoice, get_template
from instill.data.tokenize import tokenize_rendered
from instill.errors import DataError, ModelError, TemplateError
from instill.hub import resolve_model_args
from instill.infer.engine import tokenizer_dir
from instill.model.choice import choose_model
from instill.model.load import Precision, load_model, load_tokenizer
from instill.model.processor import load_image_inputs
from instill.model.rope import inference_rope


@dataclass
class ServedModel:
    """One name clients can ask for: which adapter (None = base weights) and how to render and stop."""

    name: str
    adapter: str | None
    tokenizer: Any
    template: ChatTemplate
    source: str
    media: ImageInputs | None = None  # a vision-language model's image side

    def __post_init__(self) -> None:
        eos = self.tokenizer.eos_token_id
        self.text_stop_ids = frozenset([eos] if eos is not None else [])
        stop = set(self.text_stop_ids)
        if self.template.end_of_turn:
            stop.add(self.tokenizer.convert_tokens_to_ids(self.template.end_of_turn))
        self.chat_stop_ids = frozenset(i for i in stop if i is not None and i >= 0)

    def chat_prompt(self, messages: list[dict], tools: list[dict] | None = None,
                    template_kwargs: dict[str, Any] | None = None, images: list[str] | None = None) -> list[int]:
        """Token ids of the conversation rendered with this model's template, ending at the assistant header.

        `template_kwargs` (e.g. enable_thinking) reach the tokenizer's own jinja template; named templates
        have no such variables and ignore them, as jinja ignores variables a template does not use.
        """
        text = self.template.render(messages, tools, add_generation_prompt=True, **(template_kwargs or {}))
        if images:  # image parts: the model's image blocks in place of each <image> (data/multimodal.py)
            if self.media is None:
                raise DataError(f"the model '{self.name}' reads text only; image_url parts need a vision-language "
                                "model such as Qwen2-VL")
            return list(tokenize_with_images(text, Example(messages, tools, images=images), self.tokenizer,
                                             self.media)[0])
        # As in training: text in a message that spells a control token is tokenized as text.
        ids, _ = tokenize_rendered(text, Example(messages, tools), self.tokenizer)
        return list(ids)

    def text_prompt(self, prompt: str) -> list[int]:
        """Token ids of a raw completion prompt (with the tokenizer's own bos, if it adds one)."""
        return self.tokenizer(prompt)["input_ids"]


@dataclass
class ServedModels:
    model: Any
    models: dict[str, ServedModel]
    context: int  # tokens a prompt plus its answer may take
    pad_id: int
    multi_adapter: bool  # the model is a PeftModel: pass adapter_names per row
    media: ImageInputs | None = None  # a vision-language model's image side (None: text only)
    created: int = field(default_factory=lambda: int(time.time()))

    def describe(self) -> str:
        return "; ".join(f"{m.name} ({m.source})" for m in self.models.values())


def _name(path: str, taken: set[str]) -> str:
    base = Path(path.removeprefix("pkg:")).name.removesuffix(".gguf") or "model"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def load_served(config: RunConfig, which: str = "auto", max_model_len: int | None = None) -> ServedModels:
    """Load the chosen model once, with every adapter beside the base; see the module doc."""
    import torch

    if config.model.torch_num_threads:
        torch.set_num_threads(config.model.torch_num_threads)
    choice = choose_model(config, which)
    args = choice.model_args
    model_dir = resolve_model_args(args)
    template_name = TemplateChoice.of(config.data)
    base_tokenizer = load_tokenizer(args, model_dir)
    rope = inference_rope(args.rope_scaling, model_dir, choice.adapters, args.trust_remote_code)
    sub = args.adapter_folder
    # the largest vocabulary of the base's and each adapter's tokenizer: new tokens' embedding rows must fit
    widest = max([base_tokenizer] + [load_tokenizer(args, tokenizer_dir(model_dir, [p], sub)) for p in choice.adapters],
                 key=len)
    model = load_model(args, Precision(config.train.bf16, config.train.fp16), "lora", model_dir, rope=rope,
                       tokenizer=widest, inference=True)
    media = load_image_inputs(args, model_dir, base_tokenizer)
    taken: set[str] = set()
    models: dict[str, ServedModel] = {}
    base_name = _name(args.model_name_or_path, taken)
    try:
        base_template = get_template(template_name, base_tokenizer)
    except TemplateError:
        if not choice.adapters:
            raise
        base_template = None  # a base without a chat template is not served; its adapters carry theirs
    if base_template is not None:
        models[base_name] = ServedModel(base_name, None, base_tokenizer, base_template, args.model_name_or_path,
                                        media)
    if choice.adapters:
        from peft import PeftModel

        for i, path in enumerate(choice.adapters):
            if not (Path(path) / (sub or "") / "adapter_config.json").is_file():
                raise ModelError(f"adapter '{path}' is not a directory holding adapter_config.json")
            kwargs = {"subfolder": sub} if sub else {}
            if i == 0:
                model = PeftModel.from_pretrained(model, str(path), adapter_name="a0", **kwargs)
            else:
                model.load_adapter(str(path), adapter_name=f"a{i}", **kwargs)
            tokenizer = load_tokenizer(args, tokenizer_dir(model_dir, [path], sub))
            name = _name(str(path), taken)
            models[name] = ServedModel(name, f"a{i}", tokenizer, get_template(template_name, tokenizer),
                                       f"{args.model_name_or_path} + {path}", media)
    model.eval()
    context = getattr(model.config, "max_position_embeddings", None) or base_tokenizer.model_max_length
    if max_model_len:
        context = min(context, max_model_len)
    pad = base_tokenizer.pad_token_id
    return ServedModels(model, models, int(context), pad if pad is not None else base_tokenizer.eos_token_id,
                        multi_adapter=bool(choice.adapters), media=media)
