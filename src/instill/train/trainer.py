"""The Trainer subclass: logits and loss only where labels are trained.

In SFT most positions carry label -100 (the prompt); in classification 2-5 of a few hundred
carry a label. A plain causal-LM forward still projects every position onto the vocabulary
(49k-152k columns), which dominates compute and memory. Here the labels are shifted once, and
the model is asked for logits only at the kept positions: transformers 5 accepts a 2-D bool
`logits_to_keep` mask together with pre-shifted `shift_labels`, so its own loss function
(sum / `num_items_in_batch`, or the mean) and wrappers such as AdaLoRA's orthogonal
regulariser still apply. The same loss is computed, on fewer rows.

A model whose forward takes no `logits_to_keep` gets the same effect by hand (no library does
this for an arbitrary model): a pre-hook on its output head keeps only the labelled hidden
states, and the cross-entropy (plus AdaLoRA's regulariser) is computed here with the
Trainer's own reduction rules.

With an SFT loss other than cross-entropy (DFT, EAFT, ASFT: train/losses.py) the model is asked for the
logits at the labelled positions only, the same way, and the loss is computed here from them; ASFT's
reference model (or the model with its adapter disabled) is asked for the same positions.

Rows that begin alike share their common prefix's work (`share_prefix`, train/shared_prefix.py).

Length-grouped batches (`group_by_length`) come in an order seeded by (seed, epoch)
(`patches.SeededLengthGroups`), so a run resumed in the middle of any epoch trains exactly the
batches the interrupted run would have.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from instill.data.tokenize import IGNORE_INDEX
from instill.train.losses import SftLoss
from instill.train.patches import SeededLengthGroups
from instill.train.shared_prefix import PrefixSharing, base_forward


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """labels[:, 1:] padded with -100: position t is scored on the token at t + 1."""
    return nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def accepts_keep_mask(model: nn.Module) -> bool:
    """Whether the model's forward takes `logits_to_keep` and passes loss kwargs (`shift_labels`) on."""
    params = inspect.signature(base_forward(model)).parameters
    return "logits_to_keep" in params and any(p.kind == p.VAR_KEYWORD for p in params.values())


def adalora_regulariser(model: nn.Module) -> torch.Tensor | None:
    """AdaLoRA's orthogonal regulariser, as peft's `AdaLoraModel.forward` adds it to `outputs.loss`."""
    base = getattr(model, "base_model", None)
    if type(base).__name__ != "AdaLoraModel":
        return None
    name = base.trainable_adapter_name
    weight = base.peft_config[name].orth_reg_weight
    terms = []
    for n, p in base.model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and name in n:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)))
    return weight * torch.stack(terms).mean() if terms else None


class LabelledLossTrainer(SeededLengthGroups, Trainer):
    """A transformers Trainer whose loss projects onto the vocabulary only where labels are trained.

    Falls back to the plain computation with label smoothing, a custom `compute_loss_func`, or when
    full logits are asked for (`prediction_loss_only` off)."""

    force_head_hook = False  # tests set it to exercise the path for models without `logits_to_keep`

    def __init__(self, *args: Any, share_prefix: bool = True, share_prefix_with_dropout: bool = True,
                 sft_loss: SftLoss | None = None, reference: nn.Module | None = None, **kwargs: Any) -> None:
        """share_prefix_with_dropout: share under active dropout too; sft_loss: DFT / EAFT / ASFT instead of
        cross-entropy; reference: ASFT's frozen model (None: the model with its adapter disabled)."""
        super().__init__(*args, **kwargs)
        self.sft_loss, self.reference = sft_loss, reference
        if reference is not None:
            reference.to(self.args.device)
        # What training batches held: sequences, token slots (padding included), labelled positions, and
        # the tokens a shared prefix saved (computed once instead of once per row).
        self.batch_counts = {"samples": 0, "slots": 0, "labelled": 0, "shared": 0}
        self.prefix = PrefixSharing(self.accelerator.unwrap_model(self.model), wanted=share_prefix,
                                    with_dropout=share_prefix_with_dropout,
                                    processes=self.accelerator.distributed_type.value)

    @property
    def share_prefix(self) -> bool:
        """Whether batches share their common prefix (off for good once a model's cache cannot be repeated)."""
        return self.prefix.on

    def training_step(self, model, inputs, num_items_in_batch=None):
        ids, counts = inputs["input_ids"], self.batch_counts
        positions = inputs.get("position_ids")
        if positions is not None and "packed_attention_mask" in inputs:  # packed: a sequence starts at position 0
            counts["samples"] += int(((positions == 0) & (inputs["attention_mask"] == 1)).sum())
        else:
            counts["samples"] += ids.shape[0]
        counts["slots"] += ids.numel()
        if "labels" in inputs:
            counts["labelled"] += int((shifted_labels(inputs["labels"]) != IGNORE_INDEX).sum())
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.batch_counts["slots"]:
            logs["samples_seen"] = self.batch_counts["samples"]
            logs["padding_ratio"] = round(1 - self.state.num_input_tokens_seen / self.batch_counts["slots"], 4)
        super().log(logs, start_time)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "packed_attention_mask" in inputs:  # packed rows: the exact 4-D mask replaces the 2-D padding mask
            inputs = dict(inputs)
            dtype = self.accelerator.unwrap_model(model).get_input_embeddings().weight.dtype
            blocked = inputs.pop("packed_attention_mask") != 0
            inputs["attention_mask"] = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device).masked_fill_(
                blocked, torch.finfo(dtype).min)
        labels = inputs.get("labels")
        if (labels is None or self.label_smoother is not None or self.compute_loss_func is not None
                or (return_outputs and not self.args.prediction_loss_only)):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        shift = shifted_labels(labels)
        keep = shift != IGNORE_INDEX
        kept = shift[keep]
        if self.sft_loss is not None:
            return self._sft_loss(model, inputs, keep, kept, return_outputs, num_items_in_batch)
        if accepts_keep_mask(model) and not self.force_head_hook:
            rest = {k: v for k, v in inputs.items() if k != "labels"}
            fast = {**rest, "labels": kept, "shift_labels": kept, "logits_to_keep": keep}
            fast, spared = self._after_prefix(model, inputs, fast, keep)
            with self.prefix.rows_pass(self.accelerator.unwrap_model(model), spared):
                return super().compute_loss(model, fast, return_outputs, num_items_in_batch)
        return self._loss_by_head_hook(model, inputs, keep, kept, return_outputs, num_items_in_batch)

    def _after_prefix(self, model, inputs, fast, keep, share=True):
        """`fast` after the batch's shared prefix ran once (train/shared_prefix.py), and the tokens that saved."""
        if not (share and self.prefix.applies(model.training, inputs)):
            return fast, 0
        fast, spared = self.prefix.after_prefix(self.accelerator.unwrap_model(model), fast, keep)
        if model.training:
            self.batch_counts["shared"] += spared
        return fast, spared

    def _loss_by_head_hook(self, model, inputs, keep, kept, return_outputs, num_items_in_batch):
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda _module, args: (args[0][keep],) + args[1:])
        try:
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        finally:
            handle.remove()
        logits = outputs["logits"].float()
        by_items = num_items_in_batch is not None and self.model_accepts_loss_kwargs
        loss = nn.functional.cross_entropy(logits, kept.to(logits.device), ignore_index=IGNORE_INDEX,
                                           reduction="sum" if by_items else "mean")
        if by_items:
            loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
        loss = self._as_trainer_scales(model, loss, by_items)
        return (loss, outputs) if return_outputs else loss

    def _as_trainer_scales(self, model, loss, by_items):
        """The loss plus AdaLoRA's regulariser, scaled across processes as Trainer.compute_loss scales it."""
        regulariser = adalora_regulariser(self.accelerator.unwrap_model(model))
        if regulariser is not None:
            loss = loss + regulariser
        if by_items and self.args.average_tokens_across_devices:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

    def _kept_logits(self, model, inputs, keep, share=True):
        """(logits at the kept positions, (N, vocab), and the model's outputs), labels not passed."""
        if accepts_keep_mask(model) and not self.force_head_hook:
            fast, spared = self._after_prefix(model, inputs, {**inputs, "logits_to_keep": keep}, keep, share)
            with self.prefix.rows_pass(self.accelerator.unwrap_model(model), spared):
                outputs = model(**fast)
            return outputs["logits"], outputs
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda _module, args: (args[0][keep],) + args[1:])
        try:
            outputs = model(**inputs)
        finally:
            handle.remove()
        return outputs["logits"], outputs

    def _sft_loss(self, model, inputs, keep, kept, return_outputs, num_items_in_batch):
        """DFT / EAFT / ASFT from the logits at the labelled positions (train/losses.py)."""
        rest = {k: v for k, v in inputs.items() if k != "labels"}
        logits, outputs = self._kept_logits(model, rest, keep)
        ref_logits = None
        if self.sft_loss.reference:
            with torch.no_grad():
                if self.reference is not None:
                    ref_logits = self._kept_logits(self.reference, rest, keep, share=False)[0]
                else:
                    inner = self.accelerator.unwrap_model(model)
                    with inner.disable_adapter():
                        ref_logits = self._kept_logits(inner, rest, keep, share=False)[0]
        by_items = num_items_in_batch is not None and self.model_accepts_loss_kwargs
        denominator = (torch.as_tensor(num_items_in_batch, device=logits.device) if by_items
                       else max(kept.numel(), 1))
        loss = self.sft_loss.compute(logits, kept.to(logits.device), ref_logits, denominator)
        loss = self._as_trainer_scales(model, loss, by_items)
        return (loss, outputs) if return_outputs else loss
