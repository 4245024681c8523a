"""export_quantization_bit: bitsandbytes 4/8-bit exports made and reloaded on the CPU; GPTQ's calibration set, its
one-line refusal without CUDA, and its wiring to transformers' GPTQConfig through stand-in gptqmodel/optimum
modules (GPTQ itself needs CUDA kernels: not run here)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import instill.model.export as export
from instill.config import ModelArgs, build_config
from instill.errors import ConfigError, DataError
from instill.infer.engine import load_generator
from instill.model.export import calibration_samples, export_model
from tests.test_bad_input import run_cli

TEXT = ("The Nile flows north through Egypt into the Mediterranean Sea. Ancient cities grew along its banks, "
        "and its yearly flood carried the silt that fed their fields for thousands of years.")


def _keys(model, out, **extra):
    return {"model_name_or_path": str(model), "template": "auto", "export_dir": str(out), **extra}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.mark.parametrize("bits, layer, min_cosine", [(4, "Linear4bit", 0.98), (8, "Linear8bitLt", 0.999)])
def test_bnb_export_saves_quantized_weights_that_reload_unchanged(tiny_qwen2, tmp_path, bits, layer, min_cosine):
    out = export_model(build_config(_keys(tiny_qwen2, tmp_path / "out", export_quantization_bit=bits,
                                          export_quantization_method="bnb")))
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "bitsandbytes" and saved[f"load_in_{bits}bit"] is True
    assert (out / "model.safetensors").stat().st_size < (tiny_qwen2 / "model.safetensors").stat().st_size
    back = AutoModelForCausalLM.from_pretrained(out, device_map="cpu")
    assert type(back.model.layers[0].mlp.down_proj).__name__ == layer
    ids = torch.tensor([[1, 5, 900, 33, 2000, 7]])
    full = _logits(AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32), ids)
    cosine = torch.nn.functional.cosine_similarity(_logits(back, ids).flatten(), full.flatten(), dim=0).item()
    assert min_cosine < cosine < 1 - 1e-7, cosine  # quantized: close, and not the full weights
    # instill's own engine reads the export (chat, predict, eval) and its tokenizer + template came along
    generator = load_generator(ModelArgs(model_name_or_path=str(out)))
    assert generator.template.jinja == AutoTokenizer.from_pretrained(tiny_qwen2).chat_template
    assert len(generator.generate([[{"role": "user", "content": "Hi"}]], max_new_tokens=4)) == 1


def _text_file(tmp_path, rows):
    path = tmp_path / "calib.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_gptq_calibration_takes_windows_as_llamafactory_does(qwen2_tokenizer, tmp_path):
    path = _text_file(tmp_path, [{"text": "short"}, {"text": TEXT}, {"text": TEXT.upper()}])
    samples = calibration_samples(qwen2_tokenizer, str(path), nsamples=5, maxlen=8, seed=1)
    rows = [qwen2_tokenizer(t)["input_ids"] for t in (TEXT, TEXT.upper())]
    assert len(samples) == 5
    for sample in samples:
        [window], [mask] = sample["input_ids"], sample["attention_mask"]
        assert len(window) == 8 and mask == [1] * 8
        assert any(window == row[i:i + 8] for row in rows for i in range(len(row) - 8))  # a slice of a long row
    assert calibration_samples(qwen2_tokenizer, str(path), 5, 8, seed=1) == samples  # seeded
    with pytest.raises(DataError, match="no row of .* longer than export_quantization_maxlen \\(4096 tokens\\)"):
        calibration_samples(qwen2_tokenizer, str(path), 1, 4096)
    with pytest.raises(DataError, match="has no 'text' column \\(it has content\\)"):
        calibration_samples(qwen2_tokenizer, str(_text_file(tmp_path, [{"content": TEXT}])), 1, 8)


def _gptq_yaml(tiny_qwen2, tmp_path):
    config = tmp_path / "gptq.yaml"
    calib = _text_file(tmp_path, [{"text": TEXT}])
    config.write_text(f"model_name_or_path: {tiny_qwen2}\nexport_dir: {tmp_path / 'out'}\nexport_quantization_bit: 4\n"
                      f"export_quantization_dataset: {calib}\nexport_quantization_nsamples: 3\n"
                      "export_quantization_maxlen: 16\n")
    return config


def test_gptq_without_cuda_is_refused_in_one_line_before_anything_loads(tiny_qwen2, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = []
    monkeypatch.setattr(export, "resolve_model_args", lambda *a: loaded.append(a))
    code, out, err = run_cli(["export", str(_gptq_yaml(tiny_qwen2, tmp_path))], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "export_quantization_bit: GPTQ calibrates on a CUDA GPU" in err and "export_quantization_method: bnb" in err
    assert loaded == [] and not (tmp_path / "out").exists()


def test_gptq_export_hands_transformers_gptqconfig_the_calibration_windows(tiny_qwen2, tmp_path, monkeypatch, capsys):
    """With a GPU 'visible' and stand-in gptqmodel/optimum modules, the model is loaded through GPTQConfig with
    LLaMA-Factory's settings (bits, tokenizer, calibration windows, device_map auto, float16) and saved."""
    for name in ("gptqmodel", "optimum"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    calls = []
    load = AutoModelForCausalLM.from_pretrained

    def from_pretrained(path, **kwargs):
        calls.append(kwargs)
        return load(path)  # the full model: quantizing needs the kernels

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    code, out, err = run_cli(["export", str(_gptq_yaml(tiny_qwen2, tmp_path))], capsys)
    assert code == 0, err
    [kwargs] = calls
    quantization = kwargs.pop("quantization_config")
    assert kwargs == {"device_map": "auto", "dtype": torch.float16, "trust_remote_code": False}
    assert type(quantization).__name__ == "GPTQConfig" and quantization.bits == 4
    assert quantization.tokenizer is not None
    assert [len(s["input_ids"][0]) for s in quantization.dataset] == [16, 16, 16]
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()


@pytest.mark.parametrize("extra, message", [
    ({"export_quantization_bit": 4}, "export_quantization_bit: GPTQ needs export_quantization_dataset"),
    ({"export_quantization_bit": 3, "export_quantization_method": "bnb"}, "bnb writes 4 or 8 bits"),
    ({"export_quantization_bit": 5, "export_quantization_dataset": "c.jsonl"}, "export_quantization_bit"),
    ({"export_quantization_bit": 8, "export_quantization_method": "bnb", "adapter_name_or_path": "a"},
     "export with the adapters merged first"),
    ({"export_quantization_bit": 4, "export_quantization_method": "bnb", "export_format": "gguf"},
     "do not combine"),
])
def test_quantized_export_mistakes_are_refused_at_the_door(extra, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_config({"model_name_or_path": "x", "export_dir": "out", **extra})
    assert "\n" not in str(err.value)
