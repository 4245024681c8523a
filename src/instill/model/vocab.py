"""New tokens: LLaMA-Factory's add_tokens, add_special_tokens, new_special_tokens_config and resize_vocab.

The tokenizer gains the tokens (its own `add_tokens`). When it outgrows the model's embeddings, they and the LM
head grow to its length rounded up to 64 (transformers' `resize_token_embeddings`), and the new rows start as
LLaMA-Factory 0.9.5 starts them (`model/model_utils/embedding.py`, `init_special_tokens`): noise_init is the mean
of the old rows plus N(0, 1/dim) noise; desc_init the mean input embedding of the token's description, with
noise for desc_init_w_noise. A Qwen2 checkpoint's embedding is padded past its tokenizer (151,936 rows for
151,665 tokens), so a few new tokens fit without growing it; their rows are still trained whole (`additional_target`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from instill.config import ModelArgs
from instill.errors import ConfigError, ModelError
from instill.textfile import read_text


def token_descriptions(args: ModelArgs) -> dict[str, str] | None:
    """{token: description} from new_special_tokens_config; None without one."""
    path = args.new_special_tokens_config
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"new_special_tokens_config: {path} is not a file")
    try:
        table = yaml.safe_load(read_text(Path(path), error=ConfigError))
    except yaml.YAMLError as err:
        raise ConfigError(f"new_special_tokens_config: {path} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(table, dict) or not table or not all(isinstance(k, str) and isinstance(v, str)
                                                           for k, v in table.items()):
        raise ConfigError(f"new_special_tokens_config: {path} must map each new token to its description "
                          "('<token>': 'what it means')")
    return table


def add_new_tokens(tokenizer: Any, args: ModelArgs) -> int:
    """Add add_tokens (ordinary) and the special tokens (new_special_tokens_config's, else add_special_tokens);
    return how many the tokenizer did not have."""
    added = tokenizer.add_tokens(args.add_tokens, special_tokens=False) if args.add_tokens else 0
    descriptions = token_descriptions(args)
    special = list(descriptions) if descriptions else args.add_special_tokens
    if special:
        added += tokenizer.add_tokens(special, special_tokens=True)
    return added


def _noisy_mean(weight: torch.Tensor, n_new: int) -> None:
    mean = weight[:-n_new].mean(dim=0, keepdim=True)
    noise = torch.empty_like(weight[-n_new:]).normal_(mean=0, std=1.0 / math.sqrt(weight.size(1)))
    weight[-n_new:] = mean + noise


def _from_descriptions(weight: torch.Tensor, n_new: int, descriptions: dict[str, str], tokenizer: Any,
                       model: nn.Module, noise: bool) -> None:
    """Row -n_new + i: the mean input embedding of description i's old tokens (LLaMA-Factory's order)."""
    embed = model.get_input_embeddings()
    for i, text in enumerate(descriptions.values()):
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], device=weight.device)
        ids = ids[ids < len(tokenizer) - n_new]
        row = embed(ids).mean(dim=0) if len(ids) else weight[:-n_new].mean(dim=0)
        if noise:
            row = row + torch.randn_like(row) / math.sqrt(weight.size(1))
        weight[-n_new + i] = row


def _init_rows(weight: torch.Tensor, n_new: int, args: ModelArgs | None, tokenizer: Any, model: nn.Module) -> None:
    descriptions = token_descriptions(args) if args is not None else None
    if args is not None and descriptions and args.init_special_tokens != "noise_init":
        _from_descriptions(weight, n_new, descriptions, tokenizer, model, args.init_special_tokens.endswith("noise"))
    else:
        _noisy_mean(weight, n_new)


def resize_embeddings(model: nn.Module, tokenizer: Any, args: ModelArgs | None = None) -> int:
    """Grow the embeddings (and an untied LM head) to fit `tokenizer`; return the number of new rows (0: it fits).

    `args`: how to initialise the new rows (training); None at inference, where the adapter's saved rows replace
    them."""
    rows = model.get_input_embeddings().weight.size(0)
    if len(tokenizer) <= rows:
        return 0
    if getattr(model, "is_quantized", False):
        raise ConfigError(f"the tokenizer holds {len(tokenizer):,} tokens but the 4/8-bit model's embeddings only "
                          f"{rows:,}: quantized embeddings cannot grow; remove quantization_bit (or the new tokens)")
    if not isinstance(model.get_output_embeddings(), nn.Linear):
        raise ModelError(f"{type(model).__name__} has no linear LM head, so its vocabulary cannot grow for new tokens")
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    n_new = model.get_input_embeddings().weight.size(0) - rows
    with torch.no_grad():
        _init_rows(model.get_input_embeddings().weight.data, n_new, args, tokenizer, model)
        head = model.get_output_embeddings()
        if head.weight is not model.get_input_embeddings().weight:
            _init_rows(head.weight.data, n_new, args, tokenizer, model)
    return n_new


def embedding_modules(model: nn.Module) -> list[str]:
    """Leaf names of the input embedding and the LM head (peft's modules_to_save names), e.g. embed_tokens, lm_head."""
    wanted = [model.get_input_embeddings(), model.get_output_embeddings()]
    return sorted({name.split(".")[-1] for name, module in model.named_modules()
                   if name and any(module is w for w in wanted)})
