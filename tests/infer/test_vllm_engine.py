"""infer_backend: vllm, wired through a stand-in `vllm` module that records what instill hands it.

vLLM itself cannot be installed here (CUDA only): these tests check the mapping of instill's keys and
generation settings to vllm.LLM / SamplingParams / LoRARequest, that prompts are the token ids the
transformers engine would generate from, and the one-line refusals. They do not check vLLM's answers.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import instill.infer.vllm_engine as vllm_engine
from instill.config import build_config
from instill.data.templates import get_template
from instill.errors import ConfigError
from instill.evaluate.samples import load_samples
from instill.infer.chat import run_chat
from instill.infer.engine import Generator
from tests.evaluate.conftest import fudan_rows, register, write_jsonl
from tests.infer.conftest import write_yaml
from tests.test_bad_input import run_cli


@pytest.fixture()
def fake_vllm(monkeypatch):
    """`vllm`, `vllm.lora.request` in sys.modules, recording LLM(**kwargs), SamplingParams(**kwargs),
    LoRARequest(*args) and each generate call; each reply names its prompt's length. A CUDA GPU is 'visible'."""
    calls: dict[str, list] = {"llm": [], "sampling": [], "lora": [], "generate": []}

    class SamplingParams:
        def __init__(self, **kwargs):
            calls["sampling"].append(kwargs)

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"].append(kwargs)

        def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
            calls["generate"].append({"prompts": prompts, "params": sampling_params, "lora_request": lora_request})
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(
                text=f" reply to {len(p['prompt_token_ids'])} tokens ")]) for p in prompts]

    class LoRARequest:
        def __init__(self, *args):
            calls["lora"].append(args)

    modules = {name: types.ModuleType(name) for name in ("vllm", "vllm.lora", "vllm.lora.request")}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    modules["vllm"].LLM, modules["vllm"].SamplingParams = LLM, SamplingParams
    modules["vllm.lora.request"].LoRARequest = LoRARequest
    monkeypatch.setattr(vllm_engine, "cuda_visible", lambda: True)
    return calls


@pytest.fixture()
def predict_yaml(tmp_path, tiny_qwen2, adapters):
    write_jsonl(tmp_path / "data" / "fudan_val.jsonl", fudan_rows(5))
    register(tmp_path / "data", "fudan_val", "fudan_val.jsonl", formatting="openai")
    return write_yaml(tmp_path / "predict.yaml", model_name_or_path=str(tiny_qwen2), template="auto",
                      adapter_name_or_path=str(adapters["beta"]), dataset_dir=str(tmp_path / "data"),
                      eval_dataset="fudan_val", cutoff_len=96, output_dir=str(tmp_path / "run"),
                      max_new_tokens=6, do_sample=True, temperature=0.7, top_p=0.9, infer_backend="vllm",
                      vllm_maxlen=512, vllm_gpu_util=0.5, vllm_enforce_eager=True, vllm_max_lora_rank=16,
                      vllm_config='{"seed": 3, "max_num_seqs": 4}')


def test_predict_hands_vllm_the_engine_keys_sampling_and_the_adapter(fake_vllm, predict_yaml, tiny_qwen2, adapters,
                                                                     tmp_path, capsys):
    code, out, err = run_cli(["predict", str(predict_yaml)], capsys)
    assert code == 0, err
    beta = adapters["beta"]
    assert fake_vllm["llm"] == [{
        "model": str(tiny_qwen2), "tokenizer": str(beta), "trust_remote_code": False, "download_dir": None,
        "dtype": "auto", "max_model_len": 512, "gpu_memory_utilization": 0.5, "enforce_eager": True,
        "enable_lora": True, "max_lora_rank": 16, "seed": 3, "max_num_seqs": 4}]
    assert fake_vllm["lora"] == [("beta", 1, str(beta))]
    tokenizer = AutoTokenizer.from_pretrained(beta)
    stop = sorted({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")})
    assert fake_vllm["sampling"] == [{"max_tokens": 6, "temperature": 0.7, "top_p": 0.9, "stop_token_ids": stop,
                                      "skip_special_tokens": True}]
    [call] = fake_vllm["generate"]
    assert type(call["lora_request"]).__name__ == "LoRARequest"
    # the prompts are the ids the transformers engine generates from (beta's chatml template, cut to cutoff_len)
    config = build_config(yaml_keys(predict_yaml))
    samples = load_samples(config, None)
    expected, _ = Generator(None, tokenizer, get_template("auto", tokenizer)).encode_prompts(
        [x.prompt for x in samples], [x.tools for x in samples], 96)
    assert [p["prompt_token_ids"] for p in call["prompts"]] == expected
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == [f"reply to {len(ids)} tokens" for ids in expected]


def yaml_keys(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_chat_answers_from_vllm_greedily_and_keeps_the_history(fake_vllm, tiny_qwen2, tmp_path):
    config = build_config({"model_name_or_path": str(tiny_qwen2), "template": "auto", "infer_backend": "vllm",
                           "output_dir": str(tmp_path / "none")})
    lines = iter(["Hello there", "And again"])

    def read(_prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out = types.SimpleNamespace(text="", write=None, flush=lambda: None)
    out.write = lambda text: setattr(out, "text", out.text + text)
    run_chat(config, "base", read, out)
    assert fake_vllm["llm"][0]["enable_lora"] is False and fake_vllm["lora"] == []
    assert fake_vllm["sampling"][0] == {"max_tokens": 512, "temperature": 0.0, "top_p": 1.0,
                                        "stop_token_ids": fake_vllm["sampling"][0]["stop_token_ids"],
                                        "skip_special_tokens": True}
    first, second = (call["prompts"][0]["prompt_token_ids"] for call in fake_vllm["generate"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2)
    assert f"reply to {len(first)} tokens" in tokenizer.decode(second)  # the first answer is in the history
    assert out.text.count("assistant> reply to") == 2


@pytest.mark.parametrize("extra, message", [
    ({}, "infer_backend: vllm needs a CUDA GPU and none is visible; use infer_backend: huggingface"),
    ({"adapter_name_or_path": "ADAPTERS"}, "infer_backend: vllm applies one LoRA adapter, 2 are given"),
])
def test_vllm_without_a_gpu_or_with_two_adapters_is_refused_in_one_line(fake_vllm, monkeypatch, predict_yaml,
                                                                        adapters, extra, message, capsys):
    if not extra:
        monkeypatch.setattr(vllm_engine, "cuda_visible", lambda: False)
    else:
        extra = {"adapter_name_or_path": f"{adapters['alpha']},{adapters['beta']}"}
    write_yaml(predict_yaml, **{**yaml_keys(predict_yaml), **extra})
    code, out, err = run_cli(["predict", str(predict_yaml)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert fake_vllm["llm"] == []


def test_vllm_not_installed_is_refused_before_anything_loads(monkeypatch, predict_yaml, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)
    code, out, err = run_cli(["predict", str(predict_yaml)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "infer_backend: vllm needs the vllm package, which is not installed" in err


@pytest.mark.parametrize("keys, message", [
    ({"eval_task": "classification", "eval_mode": "score"}, "eval_mode: score ranks labels by likelihood"),
    ({"eval_task": "preference"}, "eval_task: preference scores pairs by likelihood"),
    ({"vllm_config": "{seed: 3}"}, "vllm_config"),
    ({"vllm_gpu_util": 1.5}, "vllm_gpu_util"),
])
def test_vllm_config_mistakes_are_refused_at_the_door(keys, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_config({"model_name_or_path": "x", "infer_backend": "vllm", **keys})
    assert "\n" not in str(err.value)


def test_serve_with_vllm_is_refused_in_one_line(tiny_qwen2, tmp_path, capsys):
    config = write_yaml(tmp_path / "serve.yaml", model_name_or_path=str(tiny_qwen2), infer_backend="vllm")
    code, out, err = run_cli(["serve", str(config)], capsys)
    assert code == 2 and "instill serve batches on transformers" in err and len(err.strip().splitlines()) == 1
