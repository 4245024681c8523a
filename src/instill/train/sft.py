"""`stage: sft`, supervised fine-tuning: conversations, labels only on what the assistant says."""

from __future__ import annotations

from typing import Any

from instill.data.collate import PadCollator
from instill.model.load import device_type
from instill.train.stage import Stage, StageInputs
from instill.train.trainer import LabelledLossTrainer


def build_trainer(inputs: StageInputs) -> Any:
    """A Trainer whose loss is computed only where labels are trained (train/trainer.py), on padded
    batches (pad to the longest, to a multiple of 8 on CUDA)."""
    return LabelledLossTrainer(
        model=inputs.model,
        args=inputs.training_args,
        train_dataset=inputs.train_dataset,
        eval_dataset=inputs.eval_dataset,
        data_collator=PadCollator(inputs.tokenizer.pad_token_id, 8 if device_type() == "cuda" else None),
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
    )


STAGE = Stage("sft", "supervised fine-tuning on conversations", "conversation", build_trainer, task_metrics=True)
