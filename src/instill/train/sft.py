"""`stage: sft`, supervised fine-tuning: conversations, labels only on what the assistant says."""

from __future__ import annotations

import copy
from typing import Any

from instill.console import say
from instill.data.collate import PackCollator, PadCollator
from instill.data.multimodal import ImageCollator
from instill.data.tokenize import IGNORE_INDEX
from instill.errors import ConfigError
from instill.model.load import Precision, device_type, load_reference
from instill.train.losses import sft_loss
from instill.train.optimizers import with_chosen_optimizer
from instill.train.stage import Stage, StageInputs
from instill.train.trainer import LabelledLossTrainer


def asft_reference(inputs: StageInputs) -> Any:
    """ASFT's reference: None with an adapter (the model with it disabled), else ref_model or a frozen copy of
    the model as it starts training (the base), said once."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    m, model = inputs.config.method, inputs.model
    if hasattr(model, "disable_adapter"):
        say("ASFT reference: the base with the adapter disabled (no second copy of the weights)")
        return None
    if is_deepspeed_zero3_enabled() or inputs.config.train.fsdp:
        raise ConfigError("use_asft_loss with full or freeze fine-tuning keeps a second copy of the model, which is "
                          "not built under ZeRO-3 or FSDP; use ZeRO-0/1/2 or LoRA")
    if m.ref_model:
        t = inputs.config.train
        ref = load_reference(m.ref_model, m.ref_model_adapters, m.ref_model_quantization_bit, inputs.config.model,
                             Precision(t.bf16, t.fp16, t.pure_bf16), model.dtype)
        say(f"ASFT reference: {m.ref_model}{''.join(f' + {a}' for a in m.ref_model_adapters or [])}, frozen")
    else:
        ref = copy.deepcopy(model)
        say(f"ASFT reference: a frozen copy of {inputs.config.model.model_name_or_path}")
    return ref.requires_grad_(False).eval()


def build_trainer(inputs: StageInputs) -> Any:
    """A Trainer whose loss is computed only where labels are trained and whose batches run a prefix all
    their rows share once (train/trainer.py), on padded batches (pad to the longest, to a multiple of 8
    on CUDA), or packed ones with packing / neat_packing; with images, each batch also carries their
    pixel values (`data/multimodal.py`)."""
    d, pad_id = inputs.config.data, inputs.tokenizer.pad_token_id
    if inputs.media is not None and (d.packing or d.neat_packing):
        raise ConfigError("packing / neat_packing: not built for image datasets; set packing: false")
    m = inputs.config.method
    loss = sft_loss(m.use_dft_loss, m.use_eaft_loss, m.eaft_alpha, m.use_asft_loss, m.asft_alpha)
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
        share_prefix_with_dropout=inputs.config.train.share_prefix_with_dropout,
        sft_loss=loss,
        reference=asft_reference(inputs) if loss is not None and loss.reference else None,
        **({"compute_metrics": token_accuracy, "preprocess_logits_for_metrics": argmax_logits}
           if inputs.config.train.compute_accuracy else {}),
    )


def argmax_logits(logits: Any, labels: Any) -> Any:
    """Only the predicted token of each position is kept for compute_accuracy (not the full-vocab logits)."""
    if isinstance(logits, tuple | list):
        logits = logits[0]
    return logits.argmax(dim=-1)


def token_accuracy(prediction: Any) -> dict[str, float]:
    """compute_accuracy: per row, the share of labelled positions whose argmax is the next label, averaged over
    the rows (LLaMA-Factory's ComputeAccuracy)."""
    import numpy as np

    scores = []
    for predicted, labels in zip(prediction.predictions, prediction.label_ids):
        predicted, labels = predicted[:-1], labels[1:]
        mask = labels != IGNORE_INDEX
        if mask.any():
            scores.append(float(np.mean(predicted[mask] == labels[mask])))
    return {"accuracy": float(np.mean(scores)) if scores else float("nan")}


STAGE = Stage.named("sft", build_trainer)
