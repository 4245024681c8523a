"""Every override of a non-public trl / transformers name, each declared once in `OVERRIDES`.

Private methods change shape between releases without a deprecation, so each one we replace or wrap
lives here, as a mixin the trainers inherit (trainer.py, preference.py) or a function they call
(checkpoint.py), with one `Override` entry: the library's name, why we override it, and the
parameter names our code expects of it. tests/train/test_patches.py checks every entry against the
installed trl and transformers: an upgrade that removes or reshapes one fails that test, not a
training run. Parameters must match exactly or, with `...` last, only the leading ones that a
wrapper uses before it passes the rest on.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from instill.data.tokenize import IGNORE_INDEX
from instill.errors import ConfigError

_ONLINE_TRAINERS = ("trl:GRPOTrainer", "trl:RLOOTrainer", "trl:DistillationTrainer")
_TRAINERS = ("transformers:Trainer", "trl:DPOTrainer", "trl:KTOTrainer", "trl:RewardTrainer",
             "trl.experimental.orpo:ORPOTrainer", "trl.experimental.cpo:CPOTrainer", *_ONLINE_TRAINERS)
_PAIR_TRAINERS = ("trl.experimental.orpo:ORPOTrainer", "trl.experimental.cpo:CPOTrainer")


@dataclass(frozen=True)
class Override:
    """A library name we override: `owners` ("module:Class"), the name, the parameters we expect of it
    (self first; `...` last: more may follow), or `params=None` for an attribute its `__init__` sets."""

    owners: tuple[str, ...]
    name: str
    params: tuple[Any, ...] | None
    why: str


OVERRIDES = (
    Override(("transformers:Trainer",), "_get_train_sampler", ("self", "train_dataset"),
             "SeededLengthGroups: a length-grouped order seeded by (seed, epoch), the same in a resumed run"),
    Override(("transformers:Trainer",), "_run_epoch", ("self", "model", "epoch", ...),
             "SeededLengthGroups: notes the epoch being started for the seeded sampler"),
    Override(("trl:DPOTrainer",), "_prepare_dataset", ("self", "dataset", "processing_class", "args", "dataset_name"),
             "IdsAsGiven: the dataset already holds our ids (data/pairs.py), trl's tokenization is skipped"),
    Override(("trl:KTOTrainer",), "_prepare_dataset", ("self", "dataset", "processing_class", "args", "dataset_name"),
             "KLPairs: the KL answers from our ids, rotated within a batch or, at batch 1, across the dataset"),
    Override(("trl:KTOTrainer",), "__init__", ("self", "model", "ref_model", "args", ...),
             "KLPairs: trl refuses batch 1 in __init__; it is given batch 2 there and set back to 1 after"),
    Override(("transformers:Trainer",), "_train_batch_size", None,
             "KLPairs: set back to the real batch after Trainer.__init__ (under KTOTrainer's) stored batch 2 in it"),
    Override(_PAIR_TRAINERS, "tokenize_row", ("self", "feature", "model"),
             "PairRowsAsGiven: ORPO/CPO's column layout built from our ids instead of their tokenization"),
    Override(_PAIR_TRAINERS, "_track_num_input_tokens", ("self", "inputs"),
             "PairRowsAsGiven: ORPO/CPO batches have no input_ids; counts prompt+chosen and prompt+rejected"),
    Override(_ONLINE_TRAINERS, "_track_num_input_tokens", ("self", "inputs"),
             "OwnTokenCount: GRPO/RLOO/distillation count prompt + completion tokens as they generate; Trainer's counter finds "
             "no input_ids in their batches and warned at every step"),
    Override(_TRAINERS, "_save_checkpoint", ("self", "model", "trial"),
             "wrap_save_checkpoint (checkpoint.py): each checkpoint written in a staging folder, renamed into place"),
    Override(_TRAINERS, "_get_output_dir", ("self", "trial"),
             "saving_into / run_dir (checkpoint.py): points _save_checkpoint at the staging folder"),
    Override(_TRAINERS, "_push_from_checkpoint", ("self", "checkpoint_folder"),
             "uploads_held (checkpoint.py): push_to_hub uploads a checkpoint once it is renamed into place"),
    Override(("transformers:Trainer",), "save_model", ("self", "output_dir", "_internal_call"),
             "save_model (run.py): the final weights saved without an upload; the run uploads once, at its end; "
             "push_saved_output skips it inside push_to_hub"),
)


def resolve(owner: str) -> Any:
    """The class named "module:Class"."""
    module, _, name = owner.partition(":")
    return getattr(importlib.import_module(module), name)


def mismatch(owner: Any, entry: Override) -> str | None:
    """What on `owner` no longer fits `entry` (a missing name or other parameters), or None."""
    label = f"{getattr(owner, '__qualname__', owner)}.{entry.name}"
    if entry.params is None:
        source = inspect.getsource(owner.__init__)
        return None if f"self.{entry.name} =" in source else f"{label}: no longer set in __init__"
    target = getattr(owner, entry.name, None)
    if target is None:
        return f"{label}: gone"
    got = tuple(inspect.signature(target).parameters)
    want = entry.params
    if want[-1] is ...:
        want, got = want[:-1], got[:len(want) - 1]
    return None if got == want else f"{label}: parameters {got}, expected {entry.params}"


class EpochSeededLengthSampler(LengthGroupedSampler):
    """transformers' length-grouped order, drawn from a generator seeded by (seed, epoch).

    transformers draws it from the global RNG when the epoch's iterator is made; a run resumed in the
    middle of epoch 2 or later holds another RNG state at that point, so it skipped the trained batches
    of a different order and trained other rows than the interrupted run would have. Seeded by epoch,
    the order of every epoch is the same in a fresh and in a resumed run (and on every rank)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int, epoch: Any) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, epoch  # epoch: a callable giving the epoch being started

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch())
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class SeededLengthGroups:
    """Trainer mixin: `group_by_length` batches in an order seeded by (seed, epoch) (EpochSeededLengthSampler)."""

    sampler_epoch = 0

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            return EpochSeededLengthSampler(sampler.batch_size, sampler.lengths, self.args.seed,
                                            lambda: self.sampler_epoch)
        return sampler

    def _run_epoch(self, model: Any, epoch: int, *args: Any, **kwargs: Any) -> Any:
        self.sampler_epoch = epoch  # read by EpochSeededLengthSampler when the epoch's iterator is made
        return super()._run_epoch(model, epoch, *args, **kwargs)


class IdsAsGiven:
    """DPOTrainer mixin: the dataset already holds our token ids, so trl's `_prepare_dataset` is skipped."""

    def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        return dataset


class PairRowsAsGiven:
    """ORPO / CPO mixin: their rows built from our ids, and their tokens counted."""

    def tokenize_row(self, feature: dict, model: Any = None) -> dict:
        """ORPO/CPO's column layout, built from our ids."""
        prompt = feature["prompt_ids"]
        row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for side in ("chosen", "rejected"):
            answer = feature[f"{side}_ids"]
            row[f"{side}_input_ids"] = prompt + answer
            row[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
            row[f"{side}_labels"] = [IGNORE_INDEX] * len(prompt) + answer
        return row

    def _track_num_input_tokens(self, inputs: dict) -> None:
        """Trainer's counter finds no `input_ids` in these batches (it would warn and count nothing): count the
        non-padding tokens of prompt+chosen and prompt+rejected, what DPO's batches count."""
        if self.args.include_num_input_tokens_seen == "no":
            return
        tokens = torch.as_tensor(inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum(),
                                 device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()


class OwnTokenCount:
    """GRPO / RLOO mixin: tokens are counted by the trainer as it generates (num_input_tokens_seen), so the
    Trainer's per-batch counter, which looks for input_ids these batches do not have, is skipped."""

    def _track_num_input_tokens(self, inputs: dict) -> None:
        return None


class KLPairs:
    """KTOTrainer mixin: KL answers built from our ids, and batch 1 allowed."""

    def __init__(self, *, args: Any, **kwargs: Any) -> None:
        """trl refuses batch 1 in `__init__` (its KL pairs rotate within a batch, so a batch of one would pair
        each prompt with its own answer). Ours rotate across the dataset at batch 1, so trl's check is
        passed with batch 2 for `__init__` only; the batch and `_train_batch_size` are 1 again right after."""
        self.kl_batch_size = args.per_device_train_batch_size
        args.per_device_train_batch_size = max(2, self.kl_batch_size)
        try:
            super().__init__(args=args, **kwargs)
        finally:
            args.per_device_train_batch_size = self.kl_batch_size
        self._train_batch_size = args.train_batch_size

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """KTO's KL term pairs each prompt with another row's answer. Batch >= 2: rotate the answers by one
        within each batch (trl's own rule, applied to our ids). Batch 1: rotate them across the whole dataset
        (row i gets row i-1's answer), as LLaMA-Factory builds its KL pairs at preprocessing time."""
        if not self.calculate_KL:
            return dataset
        if len(dataset) < 2:
            raise ConfigError(f"stage: kto: the {dataset_name} set has {len(dataset)} row(s); KTO's KL term pairs "
                              "each prompt with another row's answer, so it needs at least 2")

        def rotate(batch: dict) -> dict:
            batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
            return batch

        size = self.kl_batch_size
        return dataset.map(rotate, batched=True, batch_size=size if size > 1 else None)


def wrap_save_checkpoint(trainer: Any, wrapper: Callable[[Callable[[Any, Any], None], Any, Any], None]) -> None:
    """On this trainer only, `_save_checkpoint(model, trial)` becomes `wrapper(save, model, trial)`, `save`
    being the class's own (Trainer's or a trl subclass's)."""
    save = trainer._save_checkpoint
    trainer._save_checkpoint = lambda model, trial: wrapper(save, model, trial)


def run_dir(trainer: Any, trial: Any) -> str:
    """The folder `_save_checkpoint` writes checkpoint-N into (output_dir, or a search trial's below it)."""
    return trainer._get_output_dir(trial)


@contextmanager
def saving_into(trainer: Any, folder: str) -> Iterator[None]:
    """Inside, this trainer's `_save_checkpoint` writes checkpoint-N into `folder`."""
    trainer._get_output_dir = lambda trial: folder
    try:
        yield
    finally:
        del trainer._get_output_dir  # the class's method again


@contextmanager
def uploads_held(trainer: Any) -> Iterator[list[str]]:
    """Inside, the trainer's `_push_from_checkpoint(folder)` (push_to_hub's upload at a save) only records the folder:
    the checkpoint is still in the staging folder then, and uploading it in the background while it is renamed
    would read a folder that moves. Call `upload_checkpoint` with its final place after the rename."""
    held: list[str] = []
    trainer._push_from_checkpoint = held.append
    try:
        yield held
    finally:
        del trainer._push_from_checkpoint  # the class's method again


def upload_checkpoint(trainer: Any, folder: str) -> None:
    """The Trainer's own upload of a saved checkpoint (as hub_strategy says)."""
    trainer._push_from_checkpoint(folder)


def save_model(trainer: Any, output_dir: str) -> None:
    """`trainer.save_model(output_dir)` without the upload it starts when push_to_hub is set."""
    trainer.save_model(output_dir, _internal_call=True)


def push_saved_output(trainer: Any, message: str) -> Any:
    """`trainer.push_to_hub` for an output_dir that already holds the final files: the `save_model` it runs first is
    skipped for the call (it would write the trained adapter again over a converted PiSSA one)."""
    trainer.save_model = lambda *args, **kwargs: None
    try:
        return trainer.push_to_hub(commit_message=message)
    finally:
        del trainer.save_model  # the class's method again
