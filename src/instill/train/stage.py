"""What a training stage is: the kind of data it reads and how it builds its Trainer.

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
    name: str
    description: str
    # "conversation": labels on what the assistant says; "text": every token trained (pretraining).
    data_kind: str
    build_trainer: Callable[[StageInputs], Any]
    # Whether `do_eval` task metrics (accuracy, entity F1, ...) make sense for this stage's eval data.
    task_metrics: bool = False
    # "lm": the causal LM; "score": a one-output value head on the same body (stage: rm).
    head: str = "lm"
