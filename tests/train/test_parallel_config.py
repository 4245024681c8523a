"""DeepSpeed / FSDP / torchrun settings, checked without launching anything: the shipped example configs,
the refusals on this CPU, the torchrun command FORCE_TORCHRUN builds, and per-rank devices."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from instill.config import build_config
from instill.errors import ConfigError
from instill.train import distributed
from instill.train.distributed import (
    check_parallel,
    check_world_size,
    parallel_arguments,
    read_deepspeed_config,
    relaunch_command,
)
from instill.train.run import training_arguments

ROOT = Path(__file__).resolve().parents[2]
DEEPSPEED = sorted((ROOT / "examples" / "deepspeed").glob("*.json"))
FSDP_CONFIG = ROOT / "examples" / "fsdp" / "fsdp_config.json"
BASE = {"model_name_or_path": "m", "dataset": "d", "output_dir": "out", "report_to": "none"}


def _autos(node) -> list:
    if isinstance(node, dict):
        return [a for v in node.values() for a in _autos(v)]
    if isinstance(node, list):
        return [a for v in node for a in _autos(v)]
    return [node] if node == "auto" else []


def _trainer_filled(path: Path, args, hidden_size: int, steps: int) -> dict:
    """The config after transformers' own "auto" filling (HfTrainerDeepSpeedConfig's methods over accelerate's
    config reader: transformers refuses to build that class without the deepspeed package)."""
    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    names = ("is_auto", "fill_match", "fill_only", "trainer_config_process", "trainer_config_finalize")
    filled_type = type("Filled", (HfDeepSpeedConfig,), {n: HfTrainerDeepSpeedConfig.__dict__[n] for n in names})
    ds = filled_type(str(path))
    ds.mismatches, ds._dtype = [], None
    ds.trainer_config_process(args)
    model = type("M", (), {"config": type("C", (), {"hidden_size": hidden_size})()})()
    ds.trainer_config_finalize(args, model, steps)
    return ds.config


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.name)
def test_deepspeed_examples_are_complete(path, tmp_path):
    ds = read_deepspeed_config(str(path))
    config = build_config({**BASE, "output_dir": str(tmp_path), "per_device_train_batch_size": 2,
                           "gradient_accumulation_steps": 4, "learning_rate": 1e-4})
    args = training_arguments(config.train, False, "lora")
    filled = _trainer_filled(path, args, hidden_size=64, steps=10)
    assert _autos(filled) == []  # every "auto" is one the Trainer fills from our TrainingArguments
    assert filled["train_micro_batch_size_per_gpu"] == 2 and filled["gradient_accumulation_steps"] == 4
    assert filled["train_batch_size"] == 8  # world size 1 here
    if ds["zero_optimization"]["stage"] == 3:
        assert filled["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64)


def test_all_deepspeed_stages_shipped():
    names = {p.name for p in DEEPSPEED}
    assert {"ds_z0_config.json", "ds_z2_config.json", "ds_z3_config.json", "ds_z2_offload_config.json",
            "ds_z3_offload_config.json"} <= names


@pytest.mark.parametrize(("edit", "message"), [
    ({"zero_optimization": {"stage": 3}}, "stage3_gather_16bit_weights_on_model_save"),
    ({"train_micro_batch_size_per_gpu": 8}, "set \"train_micro_batch_size_per_gpu\": \"auto\""),
    ({"zero_optimization": {"stage": 4}}, "stage must be 0, 1, 2 or 3"),
])
def test_bad_deepspeed_config_is_one_line(edit, message, tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**json.loads((ROOT / "examples/deepspeed/ds_z2_config.json").read_text()), **edit}))
    with pytest.raises(ConfigError, match=message) as err:
        read_deepspeed_config(str(path))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        read_deepspeed_config(str(tmp_path / "missing.json"))


def test_fsdp_example_passes_through_the_trainer(tmp_path):
    config = build_config({**BASE, "output_dir": str(tmp_path), "fsdp": "full_shard auto_wrap",
                           "fsdp_config": str(FSDP_CONFIG)})
    kwargs = parallel_arguments(config.train, "lora")
    assert kwargs["fsdp"] == "full_shard auto_wrap" and kwargs["ddp_find_unused_parameters"] is False
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **kwargs)
    assert args.fsdp_config["state_dict_type"] == "FULL_STATE_DICT"  # the adapter saves whole, not per rank


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusals are for machines without a GPU")
@pytest.mark.parametrize(("keys", "message"), [
    ({"deepspeed": str(ROOT / "examples/deepspeed/ds_z2_config.json")}, "deepspeed needs GPUs or NPUs"),
    ({"fsdp": "full_shard"}, "fsdp needs GPUs or NPUs; on cpu accelerate would silently run plain DDP"),
    ({"fsdp": "full_shard", "deepspeed": "x.json"}, "deepspeed and fsdp are both set"),
    ({"fsdp": "full_shard", "fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}}, "FULL_STATE_DICT"),
    ({"deepspeed": str(ROOT / "examples/deepspeed/ds_z3_config.json"), "pissa_init": True}, "pissa_init cannot"),
    ({"deepspeed": str(ROOT / "examples/deepspeed/ds_z3_config.json"), "pure_bf16": True}, "pure_bf16 with ZeRO-3"),
    ({"deepspeed": str(ROOT / "examples/deepspeed/ds_z3_config.json"), "adapter_name_or_path": "a,b"},
     "merging adapters .* under ZeRO-3"),
])
def test_parallel_refusals_on_cpu(keys, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_parallel(build_config({**BASE, **keys}))
    assert "\n" not in str(err.value)


def test_find_unused_parameters_off_for_adapters():
    t = build_config(BASE).train
    assert parallel_arguments(t, "lora")["ddp_find_unused_parameters"] is False
    assert parallel_arguments(t, "full")["ddp_find_unused_parameters"] is None  # the Trainer's own default
    explicit = build_config({**BASE, "ddp_find_unused_parameters": True}).train
    assert parallel_arguments(explicit, "lora")["ddp_find_unused_parameters"] is True


def test_force_torchrun_command(monkeypatch):
    monkeypatch.setattr(distributed, "device_count", lambda: 0)
    argv = ["train", "cfg.yaml", "learning_rate=1e-4"]
    assert relaunch_command(argv, {}) is None  # one process on a CPU unless asked
    env = {"FORCE_TORCHRUN": "1", "NNODES": "2", "NODE_RANK": "1", "NPROC_PER_NODE": "4", "MASTER_ADDR": "10.0.0.1",
           "MASTER_PORT": "29501"}
    assert relaunch_command(argv, env) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1", "--nproc_per_node", "4",
        "--master_addr", "10.0.0.1", "--master_port", "29501", "-m", "instill.cli", *argv]
    assert relaunch_command(argv, {**env, "LOCAL_RANK": "0"}) is None  # already under torchrun: no recursion
    monkeypatch.setattr(distributed, "device_count", lambda: 8)
    command = relaunch_command(argv, {})  # several GPUs visible: all of them, as LLaMA-Factory does
    assert command[command.index("--nproc_per_node") + 1] == "8"


def test_world_size_mismatch_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="started as 2 processes .* but the Trainer sees 1"):
        check_world_size(type("Args", (), {"world_size": 1})())


def test_each_rank_gets_its_own_device(monkeypatch):
    from instill.model import load

    monkeypatch.setattr(load, "accelerator_type", lambda: "cuda")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert load.this_device() == torch.device("cuda", 1)
    monkeypatch.setattr(load, "accelerator_type", lambda: "mps")
    assert load.this_device() == torch.device("mps")


def test_lost_rank_is_one_line(monkeypatch):
    from instill.train.distributed import RankLost, peers_watched

    gone = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:3248. This is ...")
    with pytest.raises(RuntimeError, match="Connection closed"), peers_watched(lambda: "out/checkpoint-4"):
        raise gone  # one process: not ours to explain
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RankLost) as err, peers_watched(lambda: "out/checkpoint-4"):
        raise gone
    assert str(err.value) == ("rank 0: lost contact with another process of the run (Connection closed by peer "
                              "[127.0.0.1]:3248); see the failing rank's own output above; the last complete "
                              "checkpoint is out/checkpoint-4; fix the cause and rerun with resume_from_checkpoint=true")
    with pytest.raises(RuntimeError, match="shape mismatch"), peers_watched(lambda: None):
        raise RuntimeError("shape mismatch")  # a bug stays a traceback
