"""LLaMA Pro's block expansion, as LLaMA-Factory's scripts/llama_pro.py does it (`instill export --expand-layers N`).

After every num_layers / N original decoder layers a copy of the last one is inserted with its attention output
(o_proj) and MLP output (down_proj) zeroed, so each new block adds nothing to the residual stream: the expanded
model computes exactly what the original did. Training with `use_llama_pro: true` and
`freeze_trainable_layers: N` then trains only the new blocks.
"""

from __future__ import annotations

import copy

from torch import nn

from instill.errors import ConfigError, ModelError

ZEROED = ("o_proj", "down_proj")  # LLaMA-Factory's: the projections back into the residual stream


def _decoder_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent module, attribute name, the decoder layers) of a LLaMA-style causal LM."""
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and name.split(".")[-1] == "layers":
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            return parent, name.split(".")[-1], module
    raise ModelError("--expand-layers: cannot find this model's decoder layers (LLaMA, Mistral, Qwen2-style models)")


def expand_layers(model: nn.Module, n_expand: int) -> list[int]:
    """Insert `n_expand` identity blocks (in place); return the indices of the new blocks."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if not n_layers:
        raise ModelError("--expand-layers: the model's config has no num_hidden_layers")
    if n_expand < 1 or n_layers % n_expand:
        raise ConfigError(f"--expand-layers {n_expand}: the model's {n_layers} layers must be divisible by it")
    parent, attr, layers = _decoder_layers(model)
    split = n_layers // n_expand
    expanded: list[nn.Module] = []
    kinds = list(getattr(model.config, "layer_types", None) or [])
    new_kinds: list[str] = []
    added: list[int] = []
    for i, layer in enumerate(layers):
        expanded.append(layer)
        new_kinds += kinds[i:i + 1]
        if (i + 1) % split == 0:
            block = copy.deepcopy(layer)
            zeroed = [p.data.zero_() for name, p in block.named_parameters() if any(z in name for z in ZEROED)]
            if not zeroed:
                raise ModelError(f"--expand-layers: the decoder layers have no {' / '.join(ZEROED)} to zero "
                                 "(LLaMA-style models only)")
            added.append(len(expanded))
            expanded.append(block)
            new_kinds += kinds[i:i + 1]
    setattr(parent, attr, nn.ModuleList(expanded))
    for index, layer in enumerate(expanded):  # the KV cache is indexed by layer_idx
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    model.config.num_hidden_layers = len(expanded)
    if kinds:
        model.config.layer_types = new_kinds
    return added
