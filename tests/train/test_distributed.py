"""Training under torchrun on this CPU (gloo over loopback): the README's commands on the tiny Qwen2.

Two processes with the same global batch and seed must end with the adapter one process trains, only
rank 0 writes, and the data is tokenized once. Each run has a hard timeout: a hang fails, never blocks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instill.config import load_config
from instill.train.run import run_training

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "distributed" / "lora_sft.yaml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # what the `torchrun` script runs
INSTILL = [sys.executable, "-m", "instill.cli"]
ATOL = 1e-5  # measured: 7.6e-8 between one process and two (adapter entries ~3e-2)
TIMEOUT_S = 600


def overrides(model_dir: Path, out: Path, per_device: int, **extra: object) -> list[str]:
    """The example YAML, shrunk: 8 rows, 3 steps of the same global batch of 4."""
    values = {"model_name_or_path": model_dir, "output_dir": out, "dataset_dir": ROOT / "examples" / "data",
              "max_samples": 4, "cutoff_len": 48, "max_steps": 3, "logging_steps": 1, "save_strategy": "'no'",
              "learning_rate": 1e-2, "lr_scheduler_type": "constant", "warmup_ratio": 0, "lora_rank": 4,
              "per_device_train_batch_size": per_device, "report_to": "none"} | extra
    return [f"{k}={v}" for k, v in values.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_TORCHRUN", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", INSTILL_TOKENIZED_CACHE=str(tmp / "tokenized"), **extra)
    return env


def launch(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> str:
    """The process's output once it ends; killed (its whole group) and failed when it runs past `timeout`."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{proc.args} ran past {timeout} s:\n{out[-3000:]}")
    return out


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter_model.safetensors")


def assert_same_adapter(a: Path, b: Path) -> None:
    left, right = adapter(a), adapter(b)
    assert left.keys() == right.keys()
    worst = max((left[k] - right[k]).abs().max().item() for k in left)
    assert worst < ATOL, worst
    assert max(v.abs().max().item() for k, v in left.items() if "lora_B" in k) > 100 * ATOL  # it trained


@pytest.fixture(scope="module")
def reference(tiny_qwen2, tmp_path_factory) -> Path:
    """One process, batch 4: the run the parallel ones must reproduce."""
    out = tmp_path_factory.mktemp("one-process") / "out"
    run_training(load_config(EXAMPLE, overrides(tiny_qwen2, out, per_device=4)))
    return out


def test_torchrun_two_processes_equal_one(reference, tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    cmd = [*TORCHRUN, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "instill.cli", "train",
           str(EXAMPLE), *overrides(tiny_qwen2, out, per_device=2)]
    log = finish(launch(cmd, child_env(tmp_path)))
    assert "over 2 processes" in log, log[-3000:]
    assert_same_adapter(reference, out)
    # Tokenized once: rank 0 fills the cache while rank 1 waits, then loads it.
    assert log.count("tokenized data cached in") == 1, log[-3000:]
    assert "rank 1: tokenized data loaded from the cache" in log and "tokenized again" not in log
    # Only rank 0 writes: the same files as one process, no lock left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    losses = [[r["loss"] for r in map(json.loads, (d / "trainer_log.jsonl").read_text().splitlines()) if "loss" in r]
              for d in (reference, out)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


@pytest.mark.slow
def test_two_nodes_on_one_machine_equal_one(reference, tiny_qwen2, tmp_path):
    """LLaMA-Factory's multi-node form: FORCE_TORCHRUN=1 NNODES=2 NODE_RANK=i ... instill train, once per node."""
    port, out = str(free_port()), tmp_path / "out"
    nodes = [launch([*INSTILL, "train", str(EXAMPLE), *overrides(tiny_qwen2, out, per_device=2)],
                    child_env(tmp_path / f"node{rank}", FORCE_TORCHRUN="1", NNODES="2", NODE_RANK=str(rank),
                              NPROC_PER_NODE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for rank in (0, 1)]
    logs = [finish(node) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), logs[0][-2000:] + logs[1][-2000:]
    assert "--nnodes 2 --node_rank 1" in logs[1] and "over 2 processes" in logs[0]
    assert_same_adapter(reference, out)


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except psutil.Error:
            continue
    return None


def _train_until_a_checkpoint(model_dir: Path, tmp: Path, ddp_timeout: int) -> tuple[subprocess.Popen, list, int]:
    """A long two-process run, returned once its first checkpoint is complete: (launcher, command, rank 1's pid)."""
    from instill.train.checkpoint import last_complete_checkpoint

    out = tmp / "out"
    cmd = [*TORCHRUN, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "instill.cli", "train",
           str(EXAMPLE), *overrides(model_dir, out, per_device=2, max_steps=1000, save_strategy="steps",
                                    save_steps=2, ddp_timeout=ddp_timeout)]
    proc = launch(cmd, child_env(tmp))
    deadline = time.monotonic() + TIMEOUT_S
    while last_complete_checkpoint(out) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no checkpoint was written:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.5)
    victim = _rank_pid(proc, 1)
    assert victim is not None
    return proc, cmd, victim


def _signal_rank_1(model_dir: Path, tmp: Path, ddp_timeout: int, sig: int) -> tuple[str, float, int, list]:
    """Send `sig` to rank 1 after the first checkpoint; (output, seconds until the run ended, exit status, command)."""
    proc, cmd, victim = _train_until_a_checkpoint(model_dir, tmp, ddp_timeout)
    os.kill(victim, sig)
    sent = time.monotonic()
    try:
        log = finish(proc, timeout=ddp_timeout + 180)
    finally:
        try:
            os.kill(victim, signal.SIGKILL)  # a stopped rank must not outlive the test
        except ProcessLookupError:
            pass
    assert "instill: error: rank 0: lost contact with another process of the run" in log, log[-3000:]  # one line
    return log, time.monotonic() - sent, proc.returncode, cmd


@pytest.mark.slow
def test_killed_rank_stops_the_run_and_it_resumes(tiny_qwen2, tmp_path):
    from instill.train.checkpoint import last_complete_checkpoint

    timeout = 60
    log, _, code, cmd = _signal_rank_1(tiny_qwen2, tmp_path, timeout, signal.SIGKILL)
    assert code != 0, log[-3000:]  # torchrun ended it (a run left hanging fails in finish(), no timing asserted)
    assert "SIGKILL" in log and "the last complete checkpoint is" in log  # torchrun names the rank that died

    out = tmp_path / "out"
    step = int(Path(last_complete_checkpoint(out)).name.removeprefix("checkpoint-"))
    resumed = [*[a for a in cmd if not a.startswith("max_steps=")], f"max_steps={step + 2}",
               "resume_from_checkpoint=true"]
    log = finish(launch(resumed, child_env(tmp_path)))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == step + 2, log[-3000:]
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_hung_rank_ends_the_run_after_ddp_timeout(tiny_qwen2, tmp_path):
    """A rank that stops answering (SIGSTOP: alive, silent; torchrun cannot tell) is given up after ddp_timeout."""
    timeout = 25
    log, seconds, code, _ = _signal_rank_1(tiny_qwen2, tmp_path, timeout, signal.SIGSTOP)
    assert code != 0 and "Timed out" in log, log[-3000:]  # gloo's own words, inside our line
    assert seconds > timeout - 5, f"rank 0 gave up after {seconds:.0f} s, before ddp_timeout ({timeout} s)"
