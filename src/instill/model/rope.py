"""RoPE scaling (`rope_scaling: linear | dynamic | yarn | llama3`), as LLaMA-Factory 0.9.5's model_utils/rope.py.

Training: the factor is ceil(cutoff_len / the model's original context), written into the model config's
`rope_parameters` (transformers 5's name for `rope_scaling`) with max_position_embeddings enlarged by it;
a cutoff_len that fits the original context needs no scaling (LLaMA-Factory disables it, and so does instill,
saying so). The scaling travels with the run: a full / freeze run saves it in config.json; an adapter run writes
it to `rope_scaling.json` beside the adapter, which chat, serve, eval and export read back. Inference with
`rope_scaling` set and nothing saved uses factor 2, LLaMA-Factory's inference default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instill.errors import ConfigError

ROPE_FILE = "rope_scaling.json"
INFERENCE_FACTOR = 2.0  # LLaMA-Factory's factor when no training length is known


def _model_config(model_dir: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)


def rope_settings(config: Any, kind: str, max_length: int | None) -> dict[str, Any] | None:
    """from_pretrained kwargs (rope_parameters, max_position_embeddings) for `kind` scaling up to `max_length`
    tokens (None: inference, factor 2); None when max_length fits the original context."""
    current = getattr(config, "rope_parameters", None)
    if not isinstance(current, dict) or not getattr(config, "max_position_embeddings", None):
        raise ConfigError(f"rope_scaling: {kind}: this model's config has no rope_parameters / "
                          "max_position_embeddings to scale")
    original = current.get("original_max_position_embeddings") or config.max_position_embeddings
    if max_length is not None and max_length <= original:
        return None
    factor = float(math.ceil(max_length / original)) if max_length is not None else INFERENCE_FACTOR
    params = {"rope_theta": current.get("rope_theta"), "rope_type": kind, "factor": factor}
    if kind in ("dynamic", "yarn", "llama3"):
        params["original_max_position_embeddings"] = original
    if kind == "llama3":
        params.update(low_freq_factor=1.0, high_freq_factor=4.0)
    return {"rope_parameters": {k: v for k, v in params.items() if v is not None},
            "max_position_embeddings": int(original * factor)}


def training_rope(kind: str | None, cutoff_len: int, model_dir: Path, trust_remote_code: bool
                  ) -> tuple[dict[str, Any] | None, str | None]:
    """(from_pretrained kwargs or None, a line to say) for training with `rope_scaling: kind`."""
    if kind is None:
        return None, None
    config = _model_config(model_dir, trust_remote_code)
    settings = rope_settings(config, kind, cutoff_len)
    if settings is None:
        return None, (f"rope_scaling: {kind} not applied: cutoff_len {cutoff_len} fits the model's "
                      f"{config.max_position_embeddings} positions (LLaMA-Factory disables it too)")
    p = settings["rope_parameters"]
    return settings, (f"rope_scaling: {kind}, factor {p['factor']:g}: max positions "
                      f"{config.max_position_embeddings} -> {settings['max_position_embeddings']}")


def saved_rope(adapters: Sequence[str | Path]) -> dict[str, Any] | None:
    """The scaling an adapter was trained with (the last adapter that has one), or None."""
    for path in reversed(list(adapters)):
        file = Path(path) / ROPE_FILE
        if file.is_file():
            return json.loads(file.read_text(encoding="utf-8"))
    return None


def save_rope(settings: dict[str, Any], directory: str | Path) -> None:
    Path(directory, ROPE_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def inference_rope(kind: str | None, model_dir: Path, adapters: Sequence[str | Path], trust_remote_code: bool
                   ) -> dict[str, Any] | None:
    """from_pretrained kwargs for inference: an adapter's saved scaling; else, with rope_scaling set on a model
    that is not scaled already, factor 2 (LLaMA-Factory's); else None (a scaled model's config.json has its own)."""
    saved = saved_rope(adapters)
    if saved is not None or kind is None:
        return saved
    config = _model_config(model_dir, trust_remote_code)
    if (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default") != "default":
        return None
    return rope_settings(config, kind, None)
