"""Conversations with images -> input_ids + labels + image paths; batches -> pixel values and grid sizes.

Written for the Qwen2-VL family (Qwen2-VL, Qwen2.5-VL), the way its processor does it: each `<image>` in
the text becomes `<|vision_start|>` + `<|image_pad|>` x N + `<|vision_end|>`, N = the image's patch grid
(t·h·w) / merge_size². Hand-written because `Qwen2VLProcessor` cannot be built without torchvision (its
video slot), and because the text around the images must go through our control-token-safe tokenization
(`tokenize.py`: text in data never becomes a control token). The chat template renders the conversation
with `<image>` as plain text; the text between placeholders is tokenized piece by piece and the image
blocks are spliced in, so no BPE merge crosses an image. Labels are -100 on every image-block token
(also under `train_on_prompt`). Image tokens cannot be cut, so a sample longer than `cutoff_len` is
dropped and counted (raise `cutoff_len` or lower `image_max_pixels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from instill.data.collate import PadCollator
from instill.data.example import Example
from instill.data.media import PLACEHOLDERS, open_image
from instill.data.templates import ChatTemplate
from instill.data.tokenize import (
    IGNORE_INDEX,
    Encoded,
    EncodeOptions,
    _control_tokens,
    _escape_data_tokens,
    _mask_and_truncate,
    assistant_spans,
    encode_batch,
)
from instill.errors import DataError

IMAGE = PLACEHOLDERS["images"]


@dataclass
class ImageInputs:
    """A model's image side: its image processor and the token ids its text uses for images."""

    processor: Any  # e.g. transformers' Qwen2VLImageProcessorPil
    image_token_id: int  # <|image_pad|>
    start_token_id: int  # <|vision_start|>
    end_token_id: int  # <|vision_end|>
    merge_size: int

    def pixels(self, images: list) -> dict[str, torch.Tensor]:
        """`pixel_values` and `image_grid_thw` of some PIL images (the processor's own output)."""
        out = self.processor(images=images, return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def token_count(self, grid: torch.Tensor) -> int:
        return int(grid.prod()) // self.merge_size ** 2

    def block(self, n: int) -> list[int]:
        return [self.start_token_id] + [self.image_token_id] * n + [self.end_token_id]

    @property
    def media_token_ids(self) -> tuple[int, ...]:
        return self.image_token_id, self.start_token_id, self.end_token_id

    def key(self) -> list:
        """What decides the token counts, for the tokenized-data cache key."""
        return [type(self.processor).__name__, self.processor.to_json_string(), self.media_token_ids]


def tokenize_with_images(full: str, example: Example, tokenizer: Any, media: ImageInputs,
                         allow_special_tokens: bool = False) -> tuple[list[int], np.ndarray]:
    """Token ids of a rendered conversation with each `<image>` replaced by its image block, and each token's
    start character in `full` (an image block's tokens start at their placeholder)."""
    where = [i for i in range(len(full)) if full.startswith(IMAGE, i)]
    if len(where) != len(example.images):
        raise DataError(f"{example.source}: the template rendered {len(where)} {IMAGE} placeholders for "
                        f"{len(example.images)} images (does the template or system prompt write {IMAGE}?)")
    grids = [media.pixels([open_image(p, f"{example.source}: images[{i}]")])["image_grid_thw"][0]
             for i, p in enumerate(example.images)]
    bounds = [0] + [x for at in where for x in (at, at + len(IMAGE))] + [len(full)]
    pieces = [(bounds[k], bounds[k + 1]) for k in range(0, len(bounds), 2)]
    with _control_tokens(tokenizer, as_text=False) as backend:
        encodings = backend.encode_batch([full[a:b] for a, b in pieces], add_special_tokens=False)
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    for k, ((a, _), enc) in enumerate(zip(pieces, encodings)):
        ids += enc.ids
        offsets += [(a + s, a + e) for s, e in enc.offsets]
        if k < len(grids):
            block = media.block(media.token_count(grids[k]))
            ids += block
            offsets += [(where[k], where[k] + len(IMAGE))] * len(block)
    return _escape_data_tokens(full, example, tokenizer, ids, offsets, allow_special_tokens)


def image_batch(media: ImageInputs, input_ids: torch.Tensor, paths: list[str]) -> dict[str, torch.Tensor]:
    """What a Qwen2-VL forward needs beside the ids: `mm_token_type_ids` (1 at image tokens: M-RoPE) and, when
    the batch has images, their `pixel_values` and `image_grid_thw` (all images of the batch, in row order)."""
    out = {"mm_token_type_ids": (input_ids == media.image_token_id).long()}
    if not paths:
        return out
    out.update(media.pixels([open_image(p, p) for p in paths]))
    wanted = sum(media.token_count(g) for g in out["image_grid_thw"])
    found = int(out["mm_token_type_ids"].sum())
    if wanted != found:  # the image processor changed since tokenizing (the cache key should prevent it)
        raise DataError(f"a batch holds {found} image tokens but its images need {wanted}; "
                        "rebuild the tokenized data (overwrite_cache: true)")
    return out


def encode_images(example: Example, template: ChatTemplate, media: ImageInputs, options: EncodeOptions) -> Encoded:
    """One conversation whose `<image>` placeholders match `example.images`, encoded with image blocks."""
    full, spans = assistant_spans(example, template)
    ids, starts = tokenize_with_images(full, example, template.tokenizer, media, options.allow_special_tokens)
    if len(ids) > options.cutoff_len:  # image tokens cannot be cut: dropped (no trained token left) and counted
        return Encoded([], [], len(ids), 0, len(ids), True, True)
    encoded = _mask_and_truncate(ids, starts, spans, options)
    media_ids = np.isin(np.asarray(encoded.input_ids), media.media_token_ids)
    encoded.labels = np.where(media_ids, IGNORE_INDEX, encoded.labels).tolist()
    return encoded


def encode_mixed(examples: list[Example], template: ChatTemplate, media: ImageInputs | None, options: EncodeOptions
                 ) -> list[Encoded]:
    """`tokenize.encode_batch` for rows without images, `encode_images` for rows with them."""
    text = [e for e in examples if not e.images]
    plain = iter(encode_batch(text, template, options) if text else [])
    out = []
    for example in examples:
        if not example.images:
            out.append(next(plain))
            continue
        if media is None:
            raise DataError(f"{example.source}: the row has images but the model reads text only "
                            "(no image processor in its folder); use a vision-language model such as Qwen2-VL")
        out.append(encode_images(example, template, media, options))
    return out


@dataclass
class ImageCollator:
    """PadCollator's padded batch plus the batch's images: `pixel_values` and `image_grid_thw` (all images of
    the batch, in row order, as Qwen2-VL takes them) and `mm_token_type_ids` (1 at image tokens: M-RoPE)."""

    pad: PadCollator
    media: ImageInputs

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.pad([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        batch.update(image_batch(self.media, batch["input_ids"], [p for f in features for p in (f.get("images") or [])]))
        return batch
