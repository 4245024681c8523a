"""Vision-language models: which class loads them, their image processor, which parts stay frozen.

Built for the Qwen2-VL family (`qwen2_vl`, `qwen2_5_vl`): loaded with `AutoModelForImageTextToText`, images
prepared by the model's own image processor (`AutoImageProcessor`, resized to lie within
`image_min_pixels`..`image_max_pixels`), the placeholder expansion done in `data/multimodal.py`. Another
model with a `vision_config` is refused in one line rather than trained as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from instill.config import MethodArgs, ModelArgs
from instill.data.multimodal import ImageInputs
from instill.errors import ConfigError, ModelError
from instill.hub import check_json

SUPPORTED = ("qwen2_vl", "qwen2_5_vl")
# Parameter-name pieces of each part (LLaMA-Factory's model registry: vision_model_keys, projector_key).
VISION_TOWER = ("visual.patch_embed.", "visual.blocks.")
PROJECTOR = ("visual.merger.",)
LANGUAGE_MODEL = ("language_model.", "lm_head.")


def vision_model_type(model_dir: Path) -> str | None:
    """The model_type of a vision-language model in `model_dir`; None for a text model."""
    path = Path(model_dir) / "config.json"
    config = check_json(path) if path.is_file() else {}
    if "vision_config" not in config:
        return None
    kind = config.get("model_type")
    if kind not in SUPPORTED:
        raise ModelError(f"{path}: model_type '{kind}' is a vision-language model; image training is built for "
                         f"{', '.join(SUPPORTED)} only")
    return kind


def auto_model_class(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if vision_model_type(model_dir) else AutoModelForCausalLM


def load_image_inputs(args: ModelArgs, model_dir: Path, tokenizer: Any) -> ImageInputs | None:
    """The model's image processor and image token ids; None for a text model."""
    if vision_model_type(model_dir) is None:
        return None
    from transformers import AutoImageProcessor

    if args.image_min_pixels > args.image_max_pixels:
        raise ModelError(f"image_min_pixels ({args.image_min_pixels}) is above image_max_pixels "
                         f"({args.image_max_pixels})")
    if not (Path(model_dir) / "preprocessor_config.json").is_file():
        raise ModelError(f"{model_dir}: no preprocessor_config.json (the image processor); copy it from the base model")
    processor = AutoImageProcessor.from_pretrained(
        model_dir, min_pixels=args.image_min_pixels, max_pixels=args.image_max_pixels)
    ids = {}
    for token in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ModelError(f"{model_dir}: the tokenizer has no {token} token (a Qwen2-VL tokenizer has it)")
        ids[token] = token_id
    return ImageInputs(processor, ids["<|image_pad|>"], ids["<|vision_start|>"], ids["<|vision_end|>"],
                       int(processor.merge_size))


def frozen_parts(model: nn.Module, args: MethodArgs) -> tuple[str, ...]:
    """Name pieces of the parameters/modules that stay frozen: the vision tower and projector unless asked, the
    language model when asked (freeze_language_model)."""
    if getattr(model.config, "vision_config", None) is None:
        return ()
    return ((VISION_TOWER if args.freeze_vision_tower else ()) + (PROJECTOR if args.freeze_multi_modal_projector else ())
            + (LANGUAGE_MODEL if args.freeze_language_model else ()))


def freeze_vision(model: nn.Module, args: MethodArgs) -> None:
    """requires_grad off on the frozen parts (full and freeze methods; LoRA never wraps them)."""
    parts = frozen_parts(model, args)
    for name, param in model.named_parameters():
        if any(part in name + "." for part in parts):
            param.requires_grad_(False)
    if parts and not any(param.requires_grad for param in model.parameters()):
        raise ConfigError("nothing left to train: the language model, vision tower and projector are all frozen (set "
                          "freeze_vision_tower: false or freeze_multi_modal_projector: false)")
