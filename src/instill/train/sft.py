"""`stage: sft`, supervised fine-tuning: conversations, labels only on what the assistant says."""

from __future__ import annotations

from typing import Any

from instill.data.collate import PadCollator
from instill.data.multimodal import ImageCollator
from instill.model.load import device_type
from instill.train.stage import Stage, StageInputs


def build_trainer(inputs: StageInputs) -> Any:
    """A transformers Trainer on padded batches (pad to the longest, to a multiple of 8 on CUDA); with images,
    each batch also carries their pixel values (`data/multimodal.py`)."""
    from transformers import Trainer

    collator = PadCollator(inputs.tokenizer.pad_token_id, 8 if device_type() == "cuda" else None)
    return Trainer(
        model=inputs.model,
        args=inputs.training_args,
        train_dataset=inputs.train_dataset,
        eval_dataset=inputs.eval_dataset,
        data_collator=collator if inputs.media is None else ImageCollator(collator, inputs.media),
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
    )


STAGE = Stage("sft", "supervised fine-tuning on conversations", "conversation", build_trainer, task_metrics=True)
