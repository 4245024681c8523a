"""LLaMA-Factory's trainer keys on a tiny run: early stopping, the torch profiler and module timings, checkpoints
without optimizer state, the automatic batch size, and uploads to the hub (a local stand-in for the hub)."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import pytest
import transformers

from instill.config import build_config
from instill.errors import ConfigError
from instill.train.run import run_training
from tests.conftest import HUB_TOKEN as TOKEN
from tests.conftest import write_dataset

ROWS = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(8)]


@pytest.fixture()
def data_dir(tmp_path):
    return write_dataset(tmp_path / "data", "memo", ROWS)


def config(model_dir, data_dir, out, **overrides):
    raw = {"model_name_or_path": str(model_dir), "template": "qwen", "dataset": "memo", "dataset_dir": str(data_dir),
           "output_dir": str(out), "cutoff_len": 32, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
           "max_steps": 4, "logging_steps": 2, "lr_scheduler_type": "constant", "save_strategy": "no",
           "report_to": "none", "seed": 7}
    raw.update(overrides)
    return build_config(raw)


def test_early_stopping_stops_when_the_eval_loss_stalls(tiny_qwen2, data_dir, tmp_path):
    # A learning rate of 1e-30 leaves the eval loss bit-identical: no evaluation after the first improves on it.
    result = run_training(config(tiny_qwen2, data_dir, tmp_path / "out", learning_rate=1e-30, max_steps=12,
                                 val_size=2, eval_strategy="steps", eval_steps=1, early_stopping_steps=2))
    assert result.trainer.state.global_step == 3  # best at 1, no better at 2 and 3: patience 2 spent


def test_early_stopping_without_evaluation_is_one_line(tiny_qwen2, data_dir, tmp_path):
    with pytest.raises(ConfigError, match="early_stopping_steps needs evaluation"):
        config(tiny_qwen2, data_dir, tmp_path / "out", early_stopping_steps=3)


def test_torch_profiler_writes_a_trace_and_module_times(tiny_qwen2, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    run_training(config(tiny_qwen2, data_dir, out, enable_torch_profiler=True, profiler_with_stack=False,
                        profiler_profile_memory=False, profile_modules="*.layers.0.mlp, *.layers.1.self_attn"))
    traces = list((out / "profiler" / "rank_0").glob("*.pt.trace.json"))
    assert len(traces) == 1, traces  # wait 1, warmup 1, active 1, one cycle
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any(str(e.get("name", "")).startswith("aten::") for e in events)
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "module times at step 2 " in printed and "model.layers.0.mlp" in printed, printed[-3000:]


def test_profile_modules_that_match_nothing_is_one_line(tiny_qwen2, data_dir, tmp_path):
    with pytest.raises(ConfigError, match="profile_modules: no module name matches no_such"):
        run_training(config(tiny_qwen2, data_dir, tmp_path / "out", profile_modules="no_such.*"))


def test_save_only_model_checkpoints_hold_no_optimizer_and_refuse_resume(tiny_qwen2, data_dir, tmp_path):
    out = tmp_path / "out"
    kwargs = dict(save_strategy="steps", save_steps=2, save_only_model=True, max_steps=2)
    run_training(config(tiny_qwen2, data_dir, out, **kwargs))
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "trainer_state.json").is_file()
    assert not list(checkpoint.glob("optimizer*")) and not list(checkpoint.glob("rng_state*"))
    with pytest.raises(ConfigError, match="holds no optimizer state .*save_only_model: true"):
        run_training(config(tiny_qwen2, data_dir, out, resume_from_checkpoint=str(checkpoint), **kwargs))


def test_auto_find_batch_size_halves_the_batch_after_out_of_memory(tiny_qwen2, data_dir, tmp_path, monkeypatch):
    step = transformers.Trainer.training_step

    def tight_memory(self, model, inputs, *args, **kwargs):  # as if 4 rows did not fit
        if inputs["input_ids"].shape[0] > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")
        return step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", tight_memory)
    result = run_training(config(tiny_qwen2, data_dir, tmp_path / "out", auto_find_batch_size=True, max_steps=2))
    assert result.trainer.state.train_batch_size == 2 and result.trainer.state.global_step == 2


# ---------------------------------------------------------------- push_to_hub


def test_push_to_hub_offline_stops_before_anything_loads(tiny_qwen2, data_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="push_to_hub: the Hugging Face Hub is offline"):
        run_training(config(tiny_qwen2, data_dir, out, push_to_hub=True, hub_token=TOKEN))
    assert not out.exists()


def test_check_hub_upload_names_the_key(local_hub, monkeypatch):
    from huggingface_hub import constants

    from instill.hub import check_hub_upload

    assert check_hub_upload("push_to_hub", TOKEN) == "tester"
    with pytest.raises(ConfigError, match="export_hub_model_id: the Hugging Face Hub refused the token"):
        check_hub_upload("export_hub_model_id", "hf_wrong")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(ConfigError, match="push_to_hub: no Hugging Face token"):
        check_hub_upload("push_to_hub", None)
    local_hub.shutdown()
    local_hub.server_close()
    with pytest.raises(ConfigError, match="push_to_hub: the Hugging Face Hub .* cannot be reached"):
        check_hub_upload("push_to_hub", TOKEN, timeout=2)
    assert constants.ENDPOINT.startswith("http://127.0.0.1")


class _FakeApi:
    """transformers.trainer.hf_api()'s stand-in: records the repository and every upload (and what it saw then)."""

    def __init__(self):
        self.created, self.uploads = [], []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False):
        import os

        self.created.append({"repo_id": repo_id, "private": private, "env_token": os.environ.get("HF_TOKEN")})
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, **kwargs):
        import os

        folder = Path(kwargs["folder_path"])
        self.uploads.append({**kwargs, "env_token": os.environ.get("HF_TOKEN"), "exists": folder.is_dir(),
                             "files": sorted(p.name for p in folder.iterdir())})
        done = Future()  # run_as_future: an upload already finished
        done.set_result(None)
        return done


def test_push_to_hub_uploads_through_the_trainer_and_keeps_the_token_out_of_files(
        tiny_qwen2, data_dir, tmp_path, local_hub, monkeypatch):
    import os

    api = _FakeApi()
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: api)
    out = tmp_path / "out"
    run_training(config(tiny_qwen2, data_dir, out, push_to_hub=True, hub_token=TOKEN, hub_model_id="tester/tiny",
                        hub_private_repo=True, hub_strategy="checkpoint", save_strategy="steps", save_steps=2,
                        hub_revision="dev", pissa_init=True, lora_rank=4))
    assert api.created == [{"repo_id": "tester/tiny", "private": True, "env_token": TOKEN}]
    checkpoint_pushes = [u for u in api.uploads if u.get("path_in_repo") == "last-checkpoint"]
    # Each checkpoint uploads from its final place (not the staging folder it was written in).
    assert [u["folder_path"] for u in checkpoint_pushes] == [str(out / "checkpoint-2"), str(out / "checkpoint-4")]
    assert all(u["exists"] and u["revision"] == "dev" for u in api.uploads)
    final = api.uploads[-1]
    assert final["commit_message"] == "End of training" and final["folder_path"] == str(out)
    assert {"adapter_model.safetensors", "tokenizer.json", "run_config.yaml", "report.html"} <= set(final["files"])
    assert all(u["token"] is None and u["env_token"] == TOKEN for u in api.uploads)
    assert "HF_TOKEN" not in os.environ  # set for the run only
    # the upload at the end did not save the trained adapter again over the converted PiSSA one (rank 2r)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    leaked = [p for p in out.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []
