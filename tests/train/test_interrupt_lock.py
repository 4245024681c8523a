"""Nothing lost (issue 11): one run per output_dir (lock with the owner's pid, stale locks replaced),
Ctrl-C/SIGTERM saves a checkpoint and prints the resume command, a second Ctrl-C quits at once, and
resume skips a checkpoint cut short (no whole trainer_state.json)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from instill.config import TrainArgs
from instill.errors import ConfigError
from instill.train.lock import LOCK_NAME, acquire, output_lock, release
from instill.train.run import resolve_resume

ROOT = Path(__file__).resolve().parents[2]


def _lock_file(out: Path, pid: int, host: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "then"}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_lock_is_taken_and_released(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(ConfigError, match=rf"output_dir {out} is in use by another run \(pid {os.getpid()}"):
            acquire(out)
    assert not path.exists()


def test_live_owner_refuses_and_keeps_its_lock(tmp_path):
    owner = subprocess.Popen(["sleep", "30"])
    try:
        path = _lock_file(tmp_path, owner.pid)
        with pytest.raises(ConfigError, match=f"pid {owner.pid}"):
            acquire(tmp_path)
        assert json.loads(path.read_text())["pid"] == owner.pid
    finally:
        owner.kill()
        owner.wait()


def test_stale_lock_is_replaced_with_a_note(tmp_path, capsys):
    pid = _dead_pid()
    _lock_file(tmp_path, pid)
    path = acquire(tmp_path)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"removed a stale lock in {tmp_path} (pid {pid} is gone)" in capsys.readouterr().out
    release(path)
    assert not path.exists()


def test_lock_of_another_host_is_honoured(tmp_path):
    _lock_file(tmp_path, 1, host="elsewhere")
    with pytest.raises(ConfigError, match="in use by a run on host elsewhere .* delete"):
        acquire(tmp_path)


def test_second_train_into_a_locked_output_dir_is_one_line(tmp_path, tiny_qwen2, capsys):
    from instill.cli import main

    out = tmp_path / "out"
    _lock_file(out, os.getppid())  # a live process of this user
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_qwen2), "dataset": "x", "output_dir": str(out)}))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"output_dir {out} is in use by another run (pid {os.getppid()}" in err[0]


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    for step, state in ((2, '{"global_step": 2}'), (3, '{"global_st'), (4, None), (10, '{"global_step": 10}')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("")  # cut short while writing
    assert resolve_resume(TrainArgs(output_dir=str(tmp_path), resume_from_checkpoint=True)) == \
        str(tmp_path / "checkpoint-2")
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        resolve_resume(TrainArgs(output_dir=str(tmp_path / "none"), resume_from_checkpoint=True))


# ---------------------------------------------------------------- signals, with real training runs


def _config(tmp_path: Path, model: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"q{i}", "input": "", "output": f"answer {i}"} for i in range(16)]
    (data / "d.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(model), "dataset": "d", "dataset_dir": str(data), "output_dir": str(tmp_path / "out"),
        "cutoff_len": 32, "max_steps": 100000, "save_steps": 100000, "logging_steps": 1, "lora_rank": 2,
        "per_device_train_batch_size": 2, "report_to": "none", "learning_rate": 1e-3}))
    return config


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "instill.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_steps(log: Path, proc: subprocess.Popen, steps: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= steps:
            return
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("training did not log its first steps in time")


@pytest.mark.parametrize("fails", ["_save_rng_state", "save_state"])
def test_a_failed_save_is_one_line_naming_the_last_good_checkpoint(tmp_path, tiny_qwen2, monkeypatch, capsys, fails):
    """Disk full in the second checkpoint's save (rng state is its last file but one), or in the final save
    after three checkpoints (save_total_limit 2 keeps two): exit 2, one error line, no half checkpoint, the
    resume command."""
    import errno

    from transformers import Trainer

    from instill.cli import main

    calls = []
    original = getattr(Trainer, fails)

    def full_disk(self, *args, **kwargs):
        calls.append(1)
        if fails == "save_state" or len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, fails, full_disk)
    config = _config(tmp_path, tiny_qwen2)
    assert main(["train", str(config), "max_steps=3", "save_steps=1", "save_total_limit=2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("instill: error:")]
    out = tmp_path / "out"
    last = out / ("checkpoint-1" if fails == "_save_rng_state" else "checkpoint-3")
    what = "checkpoint-2" if fails == "_save_rng_state" else f"the trained weights to {out}"
    assert len(errors) == 1 and errors[0] == (
        f"instill: error: saving {what} failed: No space left on device ({out / 'x'}) — the disk is full; "
        f"last good checkpoint: {last}; make room (or fix permissions), then resume with: "
        f"instill train {config} max_steps=3 save_steps=1 save_total_limit=2 resume_from_checkpoint=true"), err
    kept = ["checkpoint-1"] if fails == "_save_rng_state" else ["checkpoint-2", "checkpoint-3"]  # limit 2
    assert sorted(p.name for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()) == kept
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == kept
    assert not (out / ".instill-saving").exists() and not (out / LOCK_NAME).exists()


def test_sigterm_saves_a_checkpoint_and_the_printed_command_resumes(tmp_path, tiny_qwen2):
    config = _config(tmp_path, tiny_qwen2)
    proc = _start(["train", str(config)], tmp_path)
    _wait_for_steps(tmp_path / "out" / "trainer_log.jsonl", proc, 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "resume with: instill train" in line, err
    checkpoint = Path(line.split("checkpoint saved in ")[1].split(";")[0])
    step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    assert checkpoint.name == f"checkpoint-{step}" and step >= 3
    assert not (tmp_path / "out" / LOCK_NAME).exists()

    command = shlex.split(line.split("resume with: ")[1])
    assert command[:3] == ["instill", "train", str(config)] and command[-1] == "resume_from_checkpoint=true"
    resumed = _start([*command[1:], f"max_steps={step + 2}"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out + err
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == step + 2


def test_second_ctrl_c_quits_at_once(tmp_path, tiny_qwen2):
    config = _config(tmp_path, tiny_qwen2)
    proc = _start(["train", str(config)], tmp_path)
    _wait_for_steps(tmp_path / "out" / "trainer_log.jsonl", proc, 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert "stopping after this step" in err
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def _steps(folder: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*")]


def _kill_inside_a_save(staging: Path, proc: subprocess.Popen, after: int, timeout: float = 300) -> None:
    """kill -9 as soon as checkpoint-N, N > after, is being written into output_dir's staging folder
    (one of step after + 1 may be left there by the previous kill)."""
    deadline = time.monotonic() + timeout
    while not any(step > after for step in _steps(staging)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no checkpoint save seen: {proc.communicate()}")
        time.sleep(0.001)
    proc.kill()


@pytest.mark.slow
def test_kill_9_five_times_then_resume_ends_with_the_same_weights(tmp_path, tiny_qwen2):
    """kill -9 five times: at random moments, and twice as soon as a checkpoint save has begun; after each
    kill every checkpoint-N holds all its files (saves are staged and renamed), each restart resumes from
    the newest one (replacing the dead run's lock), and the final adapter equals an uninterrupted run's
    within 1e-5."""
    import random

    from safetensors.torch import load_file

    steps = 12
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference = _start(["train", str(_config(reference_dir, tiny_qwen2)), f"max_steps={steps}", "save_steps=1"],
                       reference_dir)
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, out + err
    whole = sorted(p.name for p in (reference_dir / "out" / f"checkpoint-{steps}").iterdir())

    config = _config(tmp_path, tiny_qwen2)
    log = tmp_path / "out" / "trainer_log.jsonl"
    staging = tmp_path / "out" / ".instill-saving"
    rng = random.Random(11)
    args = ["train", str(config), f"max_steps={steps}", "save_steps=1"]
    mid_save = []
    for kill_at in (2, 4, 6, 8, 10):
        newest = max(_steps(tmp_path / "out"), default=0)
        proc = _start(args, tmp_path)
        _wait_for_steps(log, proc, kill_at)
        if kill_at in (4, 8):
            _kill_inside_a_save(staging, proc, newest + 1)
        else:
            time.sleep(rng.uniform(0, 0.4))
            proc.kill()
        proc.wait()
        mid_save.append(staging.exists())
        assert (tmp_path / "out" / LOCK_NAME).exists()  # left behind: the next run must see it is stale
        for checkpoint in (tmp_path / "out").glob("checkpoint-*"):
            assert sorted(p.name for p in checkpoint.iterdir()) == whole, checkpoint
        args = ["train", str(config), f"max_steps={steps}", "save_steps=1", "resume_from_checkpoint=true"]
    assert mid_save[1] or mid_save[3], mid_save  # at least one kill landed inside a save
    # And one cut short for sure: the next step's checkpoint with half its files and half its state.
    newest = max(_steps(tmp_path / "out"))
    partial = tmp_path / "out" / f"checkpoint-{newest + 1}"
    partial.mkdir(exist_ok=True)
    (partial / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    (partial / "trainer_state.json").write_text('{"global_step": ')
    final = _start(args, tmp_path)
    out, err = final.communicate(timeout=600)
    assert final.returncode == 0, out + err
    assert "removed a stale lock" in out
    assert not staging.exists()
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == steps
    got = load_file(tmp_path / "out" / "adapter_model.safetensors")
    want = load_file(reference_dir / "out" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    worst = max(float((got[k] - want[k]).abs().max()) for k in want)
    assert worst < 1e-5, worst

    # Resumed in the middle of the second epoch (8 steps an epoch): the length-grouped order of that epoch
    # must be the interrupted run's (it was drawn from the global RNG, so such a resume trained other rows).
    mid = tmp_path / "mid"
    shutil.copytree(reference_dir / "out" / "checkpoint-10", mid / "checkpoint-10")
    resumed = _start(["train", str(config), f"max_steps={steps}", "save_steps=100000", f"output_dir={mid}",
                      f"resume_from_checkpoint={mid / 'checkpoint-10'}"], tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out + err
    got = load_file(mid / "adapter_model.safetensors")
    assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-5


def test_length_grouped_order_depends_on_seed_and_epoch_only():
    import torch

    from instill.train.patches import EpochSeededLengthSampler

    lengths = [5, 5, 5, 7, 7, 9, 9, 9, 3, 3, 3, 3, 5, 7, 9, 3]
    orders = []
    for global_seed, epoch in ((0, 1), (123, 1), (0, 0)):
        torch.manual_seed(global_seed)  # a fresh run and a resumed one hold different global RNG states
        orders.append(list(EpochSeededLengthSampler(2, lengths, 42, lambda epoch=epoch: epoch)))
    assert orders[0] == orders[1] and orders[0] != orders[2] and sorted(orders[0]) == list(range(16))
