"""`stage: sft`, supervised fine-tuning: conversations, labels only on what the assistant says."""

from __future__ import annotations

from typing import Any

from instill.data.collate import PackCollator, PadCollator
from instill.data.multimodal import ImageCollator
from instill.errors import ConfigError
from instill.model.load import device_type
from instill.train.optimizers import with_chosen_optimizer
from instill.train.stage import Stage, StageInputs
from instill.train.trainer import LabelledLossTrainer


def build_trainer(inputs: StageInputs) -> Any:
    """A Trainer whose loss is computed only where labels are trained and whose batches run a prefix all
    their rows share once (train/trainer.py), on padded batches (pad to the longest, to a multiple of 8
    on CUDA), or packed ones with packing / neat_packing; with images, each batch also carries their
    pixel values (`data/multimodal.py`)."""
    d, pad_id = inputs.config.data, inputs.tokenizer.pad_token_id
    if inputs.media is not None and (d.packing or d.neat_packing):
        raise ConfigError("packing / neat_packing: not built for image datasets; set packing: false")
    collator = (PackCollator(pad_id, d.cutoff_len) if d.packing or d.neat_packing
                else PadCollator(pad_id, 8 if device_type() == "cuda" else None))
    return with_chosen_optimizer(LabelledLossTrainer, inputs.config.method)(
        model=inputs.model,
        args=inputs.training_args,
        train_dataset=inputs.train_dataset,
        eval_dataset=inputs.eval_dataset,
        data_collator=collator if inputs.media is None else ImageCollator(collator, inputs.media),
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
        share_prefix=inputs.config.train.share_prefix,
    )


STAGE = Stage.named("sft", build_trainer)
