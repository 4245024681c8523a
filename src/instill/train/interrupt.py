"""Ctrl-C / SIGTERM during training: stop after the current step, save a checkpoint, say how to resume.

The first signal sets a flag; at the end of the step the Trainer saves a checkpoint and stops, and
`run_training` raises `TrainingInterrupted` naming it (the CLI prints the resume command, exit 130).
A second signal raises KeyboardInterrupt at once (the CLI exits 130 without saving).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transformers import TrainerCallback


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving `checkpoint` at `step`."""

    def __init__(self, step: int, checkpoint: str | None) -> None:
        super().__init__(f"stopped at step {step}")
        self.step, self.checkpoint = step, checkpoint


class GracefulStop(TrainerCallback):
    """Turns the first SIGINT/SIGTERM into save-and-stop at the end of the current step."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.acted = False  # a checkpoint was asked for (False: the signal came after the last step)

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"instill: {self.requested}: stopping after this step and saving a checkpoint "
              "(press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
            self.acted = True
        return control


@contextmanager
def signals_to(stop: GracefulStop) -> Iterator[GracefulStop]:
    """Route SIGINT and SIGTERM to `stop` for the block (main thread only; elsewhere a no-op)."""
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop.handle)
    except ValueError:  # not the main thread
        pass
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
