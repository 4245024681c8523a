"""LLaMA-Factory 0.9.5's own example YAMLs: each loads, or stops with its specific refusal; its README's
three quick-start commands run in order with instill's verbs (model and dataset swapped for offline stand-ins)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from instill.cli import main as instill_main
from instill.config import load_config
from instill.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent / "fixtures" / "llamafactory_examples"
YAMLS = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.yaml"))

# The examples refused at the door, with the key that stops them (the reason is the key's policy).
REFUSED = {
    "ascend/qwen3_5_full_sft_fsdp2.yaml": "use_v1_kernels", "ascend/qwen3_full_sft_fsdp2.yaml": "use_v1_kernels",
    "ascend/qwen3moe_full_sft_fsdp.yaml": "use_v1_kernels", "ascend/qwen3vlmoe_full_sft_fsdp2.yaml": "use_v1_kernels",
    "ascend/qwen3vlmoe_lora_sft_fsdp.yaml": "use_v1_kernels",
    "extras/fp8/llama3_fp8_deepspeed_sft.yaml": "fp8", "extras/fp8/llama3_fp8_fsdp_sft.yaml": "fp8",
    "extras/mod/llama3_full_sft.yaml": "mixture_of_depths",
    "extras/qoft/llama3_oft_sft_bnb_npu.yaml": "quantization_bit",  # peft has no 4/8-bit OFT layers
    "ktransformers/train_lora/deepseek_v2_lora_sft_kt.yaml": "use_kt",
    "ktransformers/train_lora/deepseek_v3_lora_sft_kt.yaml": "use_kt",
    "ktransformers/train_lora/qwen3_5moe_lora_sft_kt.yaml": "use_kt",
    "ktransformers/train_lora/qwen3moe_lora_sft_kt.yaml": "use_kt",
    "megatron/qwen2_vl_full.yaml": "tensor_model_parallel_size", "megatron/qwen3_moe_full.yaml": "tensor_model_parallel_size",
    "train_lora/qwen3_lora_sft_ray.yaml": "ray_num_workers",
}


def test_every_v0_example_is_here():
    assert len(YAMLS) == 58 and set(REFUSED) <= set(YAMLS)


@pytest.mark.parametrize("name", YAMLS)
def test_example_loads_or_is_refused_by_name(name):
    try:
        load_config(EXAMPLES / name)
    except ConfigError as err:
        message = str(err)
        assert name in REFUSED, message
        assert "unknown key" not in message and f"'{REFUSED[name]}: " in message, message
    else:
        assert name not in REFUSED


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "instill.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=600, input="Who are you?\n/exit\n")


@pytest.mark.slow
def test_llamafactory_quick_start_in_order(tiny_qwen2, lf_dataset_dir, tmp_path, monkeypatch):
    """LLaMA-Factory's README: train, chat, export with its own YAMLs (model and data are stand-ins)."""
    monkeypatch.chdir(tmp_path)  # the YAMLs write to saves/... relative to where they run
    model = f"model_name_or_path={tiny_qwen2}"
    trained = _cli("train", str(EXAMPLES / "train_lora/qwen3_lora_sft.yaml"), model, f"dataset_dir={lf_dataset_dir}",
                   "max_samples=8", "max_steps=2", "cutoff_len=256")
    assert trained.returncode == 0, trained.stderr[-2000:]
    adapter = tmp_path / "saves/qwen3-4b/lora/sft"
    assert (adapter / "adapter_model.safetensors").is_file()
    chat = _cli("chat", str(EXAMPLES / "inference/qwen3_lora_sft.yaml"), model,
                "max_new_tokens=8")
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert "assistant>" in chat.stdout
    exported = _cli("export", str(EXAMPLES / "merge_lora/qwen3_lora_sft.yaml"), model)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert any((tmp_path / "saves/qwen3_sft_merged").glob("*.safetensors"))


# Examples run end to end with stand-ins (the tiny Qwen2, LLaMA-Factory's demo data, a few rows and one step).
# The optimizer and method extras run in tests/train/test_optimizers.py and test_methods_extras.py, the quick
# start above; the pre-quantized-model QLoRA examples (aqlm/awq/gptq) and fsdp_qlora only swap the model, so
# with a stand-in they are the LoRA runs here.
RUNS = {
    "train_lora/qwen3_lora_dpo.yaml": ("train", 0, "done (dpo)"),
    "train_lora/qwen3_lora_kto.yaml": ("train", 0, "done (kto)"),
    "train_lora/qwen3_lora_reward.yaml": ("train", 0, "done (rm)"),
    "train_lora/qwen3_lora_pretrain.yaml": ("train", 0, "done (pt)"),
    "train_lora/qwen3_preprocess.yaml": ("train", 0, "done (sft)"),
    "train_qlora/qwen3_lora_sft_otfq.yaml": ("train", 0, "done (sft)"),
    "extras/pissa/llama3_lora_sft.yaml": ("train", 0, "done (sft)"),
    "extras/nlg_eval/llama3_lora_predict.yaml": ("train", 0, "generated_predictions.jsonl"),
    "inference/qwen3.yaml": ("chat", 0, "assistant>"),
    "merge_lora/qwen3_full_sft.yaml": ("export", 0, ""),
    # Refused at run time, each with its reason.
    "inference/qwen3vl.yaml": ("chat", 2, "Qwen3-VL"),
    "train_lora/qwen3vl_lora_sft.yaml": ("train", 2, "Qwen3-VL"),
    "train_lora/qwen3_lora_sft_ds3.yaml": ("train", 2, "deepspeed: examples/deepspeed/ds_z3_config.json"),
}


@pytest.fixture(scope="module")
def lf_data(tmp_path_factory) -> Path:
    """LLaMA-Factory's demo entries, plus its dpo/kto/c4/mllm entry names pointing at the shared stand-ins."""
    from tests.conftest import write_lf_demo_data

    return write_lf_demo_data(tmp_path_factory.mktemp("lf-data"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_runs_with_stand_ins(name, tiny_qwen2, lf_data, tmp_path, monkeypatch, capsys):
    """The YAML as LLaMA-Factory ships it; only the model, data folder and run size are swapped."""
    import io

    verb, code, says = RUNS[name]
    monkeypatch.chdir(tmp_path)  # outputs go to saves/... relative to here, as the YAMLs say
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n/exit\n"))
    model = f"model_name_or_path={tiny_qwen2}"
    small_run = [f"dataset_dir={lf_data}", "max_samples=4", "max_steps=1", "cutoff_len=128",
                 "dataloader_num_workers=0", "preprocessing_num_workers=1"]
    overrides = [model, *small_run] if verb == "train" else [model]
    if "adapter_name_or_path" in (EXAMPLES / name).read_text():  # a LoRA adapter to predict with
        assert instill_main(["train", str(EXAMPLES / "train_lora/qwen3_lora_sft.yaml"), model, *small_run,
                             "output_dir=adapter"]) == 0
        overrides.append("adapter_name_or_path=adapter")
    assert instill_main([verb, str(EXAMPLES / name), *overrides]) == code
    out, err = capsys.readouterr()
    if code:
        assert err.startswith("instill: error:") and err.count("\n") == 1 and says in err, err
    else:
        assert says in out + err or any(tmp_path.rglob(says)), (out + err)[-2000:]
