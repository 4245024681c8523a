"""Training on N processes: torchrun / accelerate launch start them, DDP / DeepSpeed / FSDP (through the
Trainer and accelerate) do the parallel work; here only what instill must get right under them.

- `relaunch_command`: LLaMA-Factory's FORCE_TORCHRUN=1 convention (NNODES, NODE_RANK, NPROC_PER_NODE,
  MASTER_ADDR, MASTER_PORT), also taken when more than one accelerator is visible.
- `check_parallel`: deepspeed / fsdp validated before any model loads; refused where they cannot run.
- `parallel_arguments`: the TrainingArguments keys for them (ddp_find_unused_parameters False for adapters:
  a PeftModel is not a PreTrainedModel, so the Trainer would default it to True).
- `check_world_size`: the Trainer really sees WORLD_SIZE processes (on a CPU without use_cpu each rank
  silently trains alone).
- `rank0_lock`: only rank 0 takes output_dir's lock; its verdict reaches every rank.
- `peers_watched`: a rank that died or hung past ddp_timeout ends the others with one line, not a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from instill.config import RunConfig, TrainArgs
from instill.errors import ConfigError, InstillError
from instill.model.load import device_type
from instill.ranks import broadcast_error, is_main, rank, world_size
from instill.train.lock import output_lock

ADAPTERS = ("lora", "adalora", "oft")


def device_count() -> int:
    """Accelerators visible to this process (0 on a CPU-only machine)."""
    import torch

    kind = device_type()
    if kind in ("cpu", "mps"):
        return 0
    return getattr(torch, kind).device_count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relaunch_command(argv: list[str], env: dict[str, str] | None = None) -> list[str] | None:
    """The torchrun command that re-runs `instill <argv>` on every device, or None to run here as is.

    Taken with FORCE_TORCHRUN=1, or when more than one accelerator is visible; never inside torchrun."""
    env = dict(os.environ if env is None else env)
    if "LOCAL_RANK" in env or env.get("WORLD_SIZE", "1") != "1":
        return None
    forced = env.get("FORCE_TORCHRUN", "0").lower() in ("1", "true")
    devices = device_count()
    if not forced and devices <= 1:
        return None
    nproc = env.get("NPROC_PER_NODE") or str(max(devices, 1))
    return [sys.executable, "-m", "torch.distributed.run",
            "--nnodes", env.get("NNODES", "1"), "--node_rank", env.get("NODE_RANK", "0"),
            "--nproc_per_node", nproc, "--master_addr", env.get("MASTER_ADDR", "127.0.0.1"),
            "--master_port", env.get("MASTER_PORT") or str(_free_port()),
            "-m", "instill.cli", *argv]


def read_deepspeed_config(path: str) -> dict:
    """A DeepSpeed JSON config as a dict, checked for what the Trainer and a complete adapter save need."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"deepspeed: {path} not found (examples/deepspeed/ has ZeRO-0/2/3 configs)")
    try:
        ds = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"deepspeed: {path} is not valid JSON ({err})") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"deepspeed: {path} must hold a JSON object")
    zero = ds.get("zero_optimization", {})
    stage = zero.get("stage", 0) if isinstance(zero, dict) else None
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"deepspeed: {path}: zero_optimization.stage must be 0, 1, 2 or 3 (got {stage!r})")
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size"):
        if key in ds and ds[key] != "auto":
            raise ConfigError(f"deepspeed: {path}: set \"{key}\": \"auto\" (the YAML's batch keys decide it; "
                              "two sources that disagree stop the Trainer)")
    if stage == 3 and zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
        raise ConfigError(f"deepspeed: {path}: ZeRO-3 needs \"stage3_gather_16bit_weights_on_model_save\": true, "
                          "or the saved adapter/weights are empty shards")
    return ds


def _fsdp_setting(fsdp_config: str | dict | None, key: str, default: Any) -> Any:
    """One key of fsdp_config (a dict or a JSON file; the Trainer accepts an fsdp_ prefix)."""
    if isinstance(fsdp_config, str):
        try:
            fsdp_config = json.loads(Path(fsdp_config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"fsdp_config: cannot read {fsdp_config} as JSON ({err})") from None
    fsdp_config = fsdp_config or {}
    if not isinstance(fsdp_config, dict):
        raise ConfigError("fsdp_config: must be a JSON object or a mapping")
    return fsdp_config.get(key, fsdp_config.get(f"fsdp_{key}", default))


def check_parallel(config: RunConfig) -> None:
    """Refuse, in one line, deepspeed / fsdp settings that cannot run here or would save an incomplete model."""
    t = config.train
    if t.deepspeed and t.fsdp:
        raise ConfigError("deepspeed and fsdp are both set; choose one")
    ds = read_deepspeed_config(t.deepspeed) if t.deepspeed else None
    sharded = bool(t.fsdp) or (ds is not None and ds.get("zero_optimization", {}).get("stage") == 3)
    if sharded and config.method.pissa_init:
        raise ConfigError("pissa_init cannot be combined with ZeRO-3 or FSDP (its conversion needs the whole adapter "
                          "on one process); remove pissa_init or shard less")
    zero3 = ds is not None and ds.get("zero_optimization", {}).get("stage") == 3
    if zero3 and t.pure_bf16:  # as LLaMA-Factory
        raise ConfigError("pure_bf16 with ZeRO-3 is not supported (ZeRO-3 keeps fp32 master weights); use bf16: true")
    if zero3 and (len(config.model.adapter_name_or_path or []) > 1 or config.method.create_new_adapter):
        raise ConfigError("merging adapters (several adapter_name_or_path, or create_new_adapter) is not supported "
                          "under ZeRO-3 (the weights are sharded); merge them with instill export first")
    if t.fsdp and _fsdp_setting(t.fsdp_config, "state_dict_type", "FULL_STATE_DICT") != "FULL_STATE_DICT":
        raise ConfigError("fsdp_config: state_dict_type must be FULL_STATE_DICT, or the saved adapter/weights are "
                          "one shard per rank")
    on = device_type()
    if t.fsdp and on in ("cpu", "mps"):
        raise ConfigError(f"fsdp needs GPUs or NPUs; on {on} accelerate would silently run plain DDP instead; "
                          "remove fsdp (torchrun alone gives data parallel here)")
    if ds is not None:
        if on in ("cpu", "mps"):
            raise ConfigError(f"deepspeed needs GPUs or NPUs (on {on} the Trainer ignores it); remove deepspeed "
                              "(torchrun alone gives data parallel here)")
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("deepspeed: the deepspeed package is not installed (pip install deepspeed)")
        if config.model.quantization_bit and ds.get("zero_optimization", {}).get("stage") == 3:
            raise ConfigError("quantization_bit (QLoRA) with ZeRO-3 is not supported; use ZeRO-2 or FSDP")


def parallel_arguments(t: TrainArgs, finetuning_type: str) -> dict[str, Any]:
    """TrainingArguments keys for multi-process runs (harmless for one process)."""
    find_unused = t.ddp_find_unused_parameters
    if find_unused is None and finetuning_type in ADAPTERS:
        find_unused = False  # as LLaMA-Factory: every adapter parameter gets a gradient; True costs a graph walk
    kwargs: dict[str, Any] = {"ddp_find_unused_parameters": find_unused, "ddp_timeout": t.ddp_timeout}
    if t.deepspeed:
        kwargs["deepspeed"] = t.deepspeed
    if t.fsdp:
        kwargs["fsdp"] = " ".join(t.fsdp)
        kwargs["fsdp_config"] = t.fsdp_config
    return kwargs


def check_world_size(training_args: Any) -> None:
    """The Trainer must see the WORLD_SIZE processes torchrun started, or every rank trains alone."""
    expected = world_size()
    if training_args.world_size != expected:
        raise ConfigError(f"started as {expected} processes (WORLD_SIZE) but the Trainer sees "
                          f"{training_args.world_size}: each process would train its own copy; "
                          "check the launcher and CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES")


class RankLost(InstillError):
    """Another process of the run died or stopped answering; this one stops too."""


# What gloo / NCCL / HCCL raise when a peer is gone or silent past ddp_timeout (gloo raises plain RuntimeError).
_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "Broken pipe",
               "NCCL", "HCCL", "gloo")


@contextmanager
def peers_watched(last_checkpoint: Callable[[], str | None]) -> Iterator[None]:
    """Under N processes, a collective that fails because another rank died (or hung past ddp_timeout) becomes one
    line naming the last complete checkpoint, instead of a traceback from inside backward()."""
    import torch.distributed as dist

    try:
        yield
    except RuntimeError as err:
        if world_size() <= 1 or not (isinstance(err, dist.DistError) or any(s in str(err) for s in _PEER_SIGNS)):
            raise
        last = last_checkpoint()
        then = (f"the last complete checkpoint is {last}; fix the cause and rerun with resume_from_checkpoint=true"
                if last else "no checkpoint was saved")
        cause = str(err).split("] ", 1)[-1].split(". ")[0]
        raise RankLost(f"rank {rank()}: lost contact with another process of the run ({cause}); "
                       f"see the failing rank's own output above; {then}") from None


@contextmanager
def rank0_lock(output_dir: str, check: Callable[[], None]) -> Iterator[None]:
    """Rank 0 takes output_dir's lock and runs `check()`; a refusal stops every rank with rank 0's line."""
    with ExitStack() as stack:
        failure: InstillError | None = None
        if is_main():
            try:
                stack.enter_context(output_lock(output_dir))
                check()
            except InstillError as err:
                failure = err
        message = broadcast_error(str(failure) if failure else None)
        if failure is not None:
            raise failure
        if message is not None:
            raise ConfigError(message)
        yield
