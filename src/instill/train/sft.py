"""`stage: sft`, supervised fine-tuning: conversations, labels only on what the assistant says."""

from __future__ import annotations

from typing import Any

from instill.data.collate import PackCollator, PadCollator
from instill.model.load import device_type
from instill.train.stage import Stage, StageInputs
from instill.train.trainer import LabelledLossTrainer


def build_trainer(inputs: StageInputs) -> Any:
    """A Trainer whose loss is computed only where labels are trained (train/trainer.py), on padded
    batches (pad to the longest, to a multiple of 8 on CUDA), or packed ones with packing / neat_packing."""
    d, pad_id = inputs.config.data, inputs.tokenizer.pad_token_id
    collator = (PackCollator(pad_id, d.cutoff_len) if d.packing or d.neat_packing
                else PadCollator(pad_id, 8 if device_type() == "cuda" else None))
    return LabelledLossTrainer(
        model=inputs.model,
        args=inputs.training_args,
        train_dataset=inputs.train_dataset,
        eval_dataset=inputs.eval_dataset,
        data_collator=collator,
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
    )


STAGE = Stage("sft", "supervised fine-tuning on conversations", "conversation", build_trainer, task_metrics=True)
