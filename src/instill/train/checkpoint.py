"""Checkpoints that are whole or absent, and saves that fail in one line naming the last good checkpoint.

transformers' Trainer (5.x) writes checkpoint-N in place, file by file: kill -9 or a full disk in the
middle leaves a folder that looks like a checkpoint and is not. `atomic_checkpoints(trainer)` makes the
trainer's own `_save_checkpoint` (Trainer's or a trl subclass's, wrapped by train/patches.py) write
into output_dir/.instill-saving/, then fsyncs every file, renames the folder to output_dir/checkpoint-N
(one rename: atomic on a POSIX file system), fsyncs output_dir, and only then deletes old checkpoints
(save_total_limit). A save that raises (disk full, permission denied, a second Ctrl-C) removes the
staging folder; an OSError becomes `SaveFailed`.

Hand-written because neither transformers nor accelerate writes checkpoints atomically.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instill.errors import InstillError
from instill.train.patches import run_dir, saving_into, upload_checkpoint, uploads_held, wrap_save_checkpoint

STAGING = ".instill-saving"
PREFIX = "checkpoint-"


class SaveFailed(InstillError):
    """Writing a checkpoint or the final model raised OSError; `last` is the newest complete checkpoint."""

    def __init__(self, what: str, err: OSError, last: str | None) -> None:
        where = f" ({err.filename})" if err.filename else ""
        hint = " — the disk is full" if err.errno == errno.ENOSPC else ""
        super().__init__(f"saving {what} failed: {err.strerror or err}{where}{hint}; "
                         + (f"last good checkpoint: {last}" if last else "no checkpoint was saved before it"))
        self.last = last


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint-N whose trainer_state.json is whole JSON.

    Checkpoints written by `atomic_checkpoints` are whole by construction; the check also passes over a
    checkpoint cut short by an older version or another tool (trainer_state.json is written last)."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = []
    for path in out.glob(f"{PREFIX}*"):
        step = path.name.removeprefix(PREFIX)
        if not (step.isdigit() and path.is_dir()):
            continue
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append((int(step), str(path)))
    return max(found)[1] if found else None


@contextmanager
def save_failures(output_dir: str | Path, what: str) -> Iterator[None]:
    """Turn an OSError raised while saving `what` into SaveFailed naming the last good checkpoint."""
    try:
        yield
    except OSError as err:
        raise SaveFailed(what, err, last_complete_checkpoint(output_dir)) from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file under `root`, then the folders (so their entries are on disk too)."""
    folders = [root]
    for path in root.rglob("*"):
        if path.is_dir():
            folders.append(path)
        else:
            _fsync(path)
    if os.name == "posix":  # folders cannot be opened for fsync elsewhere
        for folder in folders:
            _fsync(folder)


def _publish(staged: Path, final: Path, staging: Path) -> None:
    """Flush `staged` and rename it to `final`; a checkpoint already there (the same step saved again) is replaced."""
    _fsync_tree(staged)
    if final.exists():
        final.rename(staging / f"{final.name}.replaced")
    staged.rename(final)
    if os.name == "posix":
        _fsync(final.parent)


def atomic_checkpoints(trainer: Any) -> None:
    """Make `trainer` write each checkpoint to a staging folder and rename it into place (see the module doc)."""
    from transformers.trainer_utils import rotate_checkpoints

    args = trainer.args

    def wait() -> None:  # with several processes, each writes its own files (rng state) before the rename
        if args.world_size > 1:
            trainer.accelerator.wait_for_everyone()

    def staged_save(save: Any, model: Any, trial: Any) -> None:
        out = Path(run_dir(trainer, trial))
        name = f"{PREFIX}{trainer.state.global_step}"
        staging = out / STAGING
        try:
            if args.should_save:
                shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
                staging.mkdir(parents=True)
            wait()
            with saving_into(trainer, str(staging)), uploads_held(trainer) as uploads:
                save(model, trial)
            best = trainer.state.best_model_checkpoint
            if best and Path(best).parent == staging:  # this step is the best so far: name its final place
                trainer.state.best_model_checkpoint = str(out / name)
                if args.should_save:
                    trainer.state.save_to_json(str(staging / name / "trainer_state.json"))
            wait()
            if args.should_save:
                _publish(staging / name, out / name, staging)
        except BaseException as err:  # a failed save, or a second Ctrl-C inside it: no half checkpoint kept
            if args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, OSError):
                raise SaveFailed(name, err, last_complete_checkpoint(out)) from None
            raise
        wait()
        if args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(str(out), args.save_total_limit, trainer.state.best_model_checkpoint, use_mtime=True)
        if uploads:  # push_to_hub: the checkpoint in its final place
            upload_checkpoint(trainer, str(out / name))

    wrap_save_checkpoint(trainer, staged_save)
