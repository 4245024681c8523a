"""What a training stage is: its facts (`stage_facts.py`) and how it builds its Trainer.

`train/run.py` does everything every stage shares (checks, model, method, callbacks, trackers,
saving, report, summary line); a stage module adds only what differs. `STAGES` in
`train/stages.py` maps the config's `stage:` to one of these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instill.config import RunConfig
from instill.data.templates import ChatTemplate
from instill.stage_facts import STAGE_FACTS, DataKind, StageFacts


@dataclass
class StageInputs:
    """Everything a stage needs to build its Trainer."""

    config: RunConfig
    model: Any
    tokenizer: Any
    template: ChatTemplate
    train_dataset: Any
    eval_dataset: Any
    training_args: Any  # transformers.TrainingArguments
    callbacks: list[Any]
    media: Any = None  # data.multimodal.ImageInputs for a vision-language model with image data


@dataclass(frozen=True)
class Stage:
    facts: StageFacts
    build_trainer: Callable[[StageInputs], Any]

    @classmethod
    def named(cls, name: str, build_trainer: Callable[[StageInputs], Any]) -> Stage:
        """The stage `name` of the facts table, built by `build_trainer`."""
        return cls(STAGE_FACTS[name], build_trainer)

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def data_kind(self) -> DataKind:
        return self.facts.data_kind

    @property
    def task_metrics(self) -> bool:
        return self.facts.task_metrics

    @property
    def head(self) -> str:
        return self.facts.head
