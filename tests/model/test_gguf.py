"""GGUF + Ollama export: the file reads back through transformers' GGUF loader as the merged model.

llama.cpp itself is checked when the `llamacpp` extra is installed (the last test). Not checked: Ollama (not
installed); the Modelfile's TEMPLATE is rendered by the small Go-template subset below, not Ollama's Go engine.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from instill.config import ModelArgs, build_config
from instill.errors import ConfigError, ModelError
from instill.hub import gguf_to_safetensors
from instill.infer.engine import load_generator
from instill.model.export import export_model
from instill.model.gguf import CHATML_TEMPLATE, write_gguf
from tests.conftest import SMOLLM2
from tests.test_bad_input import run_cli

TEXTS = ["The quick brown fox jumps over 13 lazy dogs.", "我想在北京工作，你好！", "  spaces\tand\nnewlines  "]
CONVERSATION = [{"role": "user", "content": "Name the river."}, {"role": "assistant", "content": "The Nile."},
                {"role": "user", "content": "你好，它有多长？"}]


def _adapter(base_dir, out):
    """A LoRA adapter with non-zero B, so the merge changes every targeted weight (no training needed)."""
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    model.save_pretrained(out)
    return out


def _export(model, out, gguf_type="f16", **extra):
    return export_model(build_config({"model_name_or_path": str(model), "template": "auto", "export_dir": str(out),
                                      "export_dtype": "float16", "export_format": "gguf",
                                      "export_gguf_type": gguf_type, **extra}))


def _logits(model_dir, tokenizer, **load):
    ids = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **load)
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """INSTILL_CACHE in a temp folder: where instill converts a .gguf model (hub.gguf_to_safetensors)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTILL_CACHE", str(tmp_path_factory.mktemp("instill-cache")))
        yield


@pytest.fixture(scope="module")
def qwen_export(tiny_qwen2, tmp_path_factory, cache):
    """The tiny Qwen2 with a LoRA adapter, merged and exported as f16 GGUF."""
    root = tmp_path_factory.mktemp("gguf-qwen")
    return _export(tiny_qwen2, root / "out", adapter_name_or_path=str(_adapter(tiny_qwen2, root / "lora")))


@pytest.fixture(scope="module")
def qwen_back(qwen_export):
    """The f16 GGUF read back by transformers' GGUF loader (model and tokenizer), as instill reads a .gguf model.

    Read once: the loader parses the 151,936-token vocabulary in Python (about 10 s on an idle core)."""
    return gguf_to_safetensors(qwen_export / "model-f16.gguf")


def test_f16_gguf_reads_back_with_the_merged_models_logits(qwen_export, qwen_back, tiny_qwen2):
    tokenizer = AutoTokenizer.from_pretrained(qwen_export)
    merged = _logits(qwen_export, tokenizer)
    # The merged f16 weights are held unchanged in the f16 GGUF: logits agree to float32 summation noise.
    torch.testing.assert_close(_logits(qwen_back, tokenizer), merged, rtol=0, atol=1e-5)
    # and the merge changed the model, so the comparison is not of the bare base with itself
    assert (merged - _logits(tiny_qwen2, tokenizer)).abs().max() > 1e-2
    modelfile = (qwen_export / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are Qwen, created by Alibaba Cloud. You are a helpful assistant."""' in modelfile


# Stated bounds (tiny random weights, the worst case for block quantization): cosine of all logits to the
# merged model's, measured 0.99996 for q8_0 and 0.985 for q4_0.
@pytest.mark.parametrize("gguf_type, min_cosine", [("q8_0", 0.9999), pytest.param("q4_0", 0.97, marks=pytest.mark.slow)])
def test_quantized_gguf_logits_agree_within_the_stated_bound(qwen_export, gguf_type, min_cosine, tmp_path):
    path = write_gguf(qwen_export, gguf_type, tmp_path)  # alone in its folder: read from the GGUF only
    tokenizer = AutoTokenizer.from_pretrained(qwen_export)
    merged = _logits(qwen_export, tokenizer)
    quantized = _logits(tmp_path, tokenizer, gguf_file=path.name)
    cosine = torch.nn.functional.cosine_similarity(quantized.flatten(), merged.flatten(), dim=0).item()
    assert cosine > min_cosine, cosine
    assert path.stat().st_size < (qwen_export / "model-f16.gguf").stat().st_size


def _special_text(tokenizer):
    return tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)


def test_gguf_tokenizer_encodes_as_the_trained_one(qwen_export, qwen_back):
    ours = AutoTokenizer.from_pretrained(qwen_export)
    back = AutoTokenizer.from_pretrained(qwen_back)
    for text in [*TEXTS, _special_text(ours), "<tool_call>{}</tool_call><|endoftext|>"]:
        assert back(text)["input_ids"] == ours(text)["input_ids"], text
    assert (back.eos_token_id, back.pad_token_id) == (ours.eos_token_id, ours.pad_token_id)
    assert back.chat_template == ours.chat_template


def _go_template(template: str, data: dict) -> str:
    """The subset of Go's text/template the Modelfile uses: {{ .X }}, if, range, end and {{- -}} trimming."""
    parts = re.split(r"({{-?\s*.*?\s*-?}})", template)
    for i, part in enumerate(parts):  # apply trim markers to the neighbouring text
        if part.startswith("{{-") and i > 0:
            parts[i - 1] = parts[i - 1].rstrip()
        if part.endswith("-}}") and i + 1 < len(parts):
            parts[i + 1] = parts[i + 1].lstrip()
    actions = [(p.strip("{}- \t\n"), True) if p.startswith("{{") else (p, False) for p in parts]

    def run(pos: int, scope: dict, out: list[str]) -> int:
        while pos < len(actions):
            text, is_action = actions[pos]
            if not is_action:
                out.append(text)
            elif text == "end":
                return pos
            elif text.startswith(("if ", "range ")):
                keyword, field = text.split(" ", 1)
                value = scope.get(field.strip().lstrip("."))
                items = (value or []) if keyword == "range" else ([scope] if value else [])
                for item in items:
                    run(pos + 1, {**scope, **{k[0].upper() + k[1:]: v for k, v in item.items()}}, out)
                pos = _matching_end(actions, pos)
            else:
                out.append(str(scope[text.lstrip(".")]))
            pos += 1
        return pos

    out: list[str] = []
    run(0, data, out)
    return "".join(out)


def _matching_end(actions: list[tuple[str, bool]], start: int) -> int:
    depth = 0
    for pos in range(start, len(actions)):
        text, is_action = actions[pos]
        if is_action and text.startswith(("if ", "range ")):
            depth += 1
        elif is_action and text == "end":
            depth -= 1
            if depth == 0:
                return pos
    raise ValueError("no matching {{ end }}")


def _ollama_render(modelfile: str, messages: list[dict]) -> str:
    """What Ollama sends the model: TEMPLATE with .System from a system message or the Modelfile's SYSTEM."""
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)
    default = re.search(r'SYSTEM """(.*?)"""', modelfile, re.S)
    system = messages[0]["content"] if messages[0]["role"] == "system" else (default.group(1) if default else "")
    rest = [m for m in messages if m["role"] != "system"]
    return _go_template(template, {"System": system, "Messages": rest})


@pytest.mark.parametrize("with_system", [False, True])
def test_modelfile_template_renders_as_the_chat_template(qwen_export, with_system):
    tokenizer = AutoTokenizer.from_pretrained(qwen_export)
    conversation = ([{"role": "system", "content": "Answer briefly."}] if with_system else []) + CONVERSATION
    modelfile = (qwen_export / "Modelfile").read_text()
    assert CHATML_TEMPLATE in modelfile
    assert _ollama_render(modelfile, conversation) == tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True)


@pytest.mark.slow
def test_smollm2_exports_to_gguf_with_permuted_attention(smollm2_dir, tmp_path, cache):
    out = _export(SMOLLM2, tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(out)
    back_dir = gguf_to_safetensors(out / "model-f16.gguf")  # what instill chat / serve read for the .gguf
    # Llama Q/K rows are permuted for llama.cpp; transformers' loader permutes them back.
    torch.testing.assert_close(_logits(back_dir, tokenizer), _logits(out, tokenizer), rtol=0, atol=1e-4)
    back = AutoTokenizer.from_pretrained(back_dir)
    assert back.chat_template == tokenizer.chat_template
    for text in [*TEXTS, _special_text(tokenizer)]:
        assert back(text)["input_ids"] == tokenizer(text)["input_ids"], text
    # instill chat / serve on the .gguf answer the held-out style prompts as on the merged model (greedy)
    conversations = [[{"role": "user", "content": "What is the capital of France?"}],
                     [{"role": "user", "content": "Write one sentence about rivers."}]]
    expected = load_generator(ModelArgs(model_name_or_path=str(out))).generate(conversations, max_new_tokens=16)
    from_gguf = load_generator(ModelArgs(model_name_or_path=str(out / "model-f16.gguf")))
    assert from_gguf.generate(conversations, max_new_tokens=16) == expected and all(expected), expected
    modelfile = (out / "Modelfile").read_text()
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    for with_system in (False, True):
        conversation = ([{"role": "system", "content": "Be terse."}] if with_system else []) + CONVERSATION
        assert _ollama_render(modelfile, conversation) == tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True)


def test_chat_and_serve_engine_answers_from_the_gguf_as_from_the_merged_model(qwen_export, qwen_back):
    conversations = [CONVERSATION, [{"role": "user", "content": "Say something."}]]
    merged = load_generator(ModelArgs(model_name_or_path=str(qwen_export)))
    from_gguf = load_generator(ModelArgs(model_name_or_path=str(qwen_export / "model-f16.gguf")))
    assert from_gguf.encode_prompts(conversations)[0] == merged.encode_prompts(conversations)[0]
    assert from_gguf.generate(conversations, max_new_tokens=12) == merged.generate(conversations, max_new_tokens=12)


def test_export_command_prints_the_gguf_and_the_ollama_commands(tiny_qwen2, tmp_path, capsys):
    config = tmp_path / "export.yaml"
    config.write_text(f"model_name_or_path: {tiny_qwen2}\nexport_dir: {tmp_path / 'my-model'}\n"
                      "export_format: gguf\nexport_gguf_type: q8_0\n")
    code, out, err = run_cli(["export", str(config)], capsys)
    assert code == 0, err
    assert f"GGUF written to {tmp_path / 'my-model' / 'model-q8_0.gguf'}" in out
    assert f"ollama create my-model -f {tmp_path / 'my-model' / 'Modelfile'} && ollama run my-model" in out


@pytest.mark.parametrize("overrides, message", [
    ({"export_format": "gguf", "export_gguf_type": "iq2_xs"},
     "export_gguf_type 'iq2_xs' is not written by instill; choose one of f16, bf16, q8_0, q4_0, q2_k, q3_k_s"),
    ({"export_gguf_type": "q8_0"}, "export_gguf_type is set but export_format is not gguf"),
    ({"export_format": "ggml"}, "export_format"),
])
def test_gguf_keys_are_checked_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        build_config({"model_name_or_path": "x", "export_dir": "out", **overrides})
    assert "\n" not in str(err.value)


def test_unsupported_architecture_is_refused_by_name(tiny_qwen2, tmp_path):
    import json
    import shutil

    other = tmp_path / "gpt2ish"
    shutil.copytree(tiny_qwen2, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["Phi3ForCausalLM"]}))
    with pytest.raises(ModelError, match="this model is Phi3ForCausalLM"):
        _export(other, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config_class, read_as, gguf_type", [
    # transformers' GGUF reader takes Qwen3's head_dim from its default (128), so the tiny model uses 128
    ("Qwen3Config", "Qwen3ForCausalLM", "f16"),
    # llama.cpp runs Mistral as the llama architecture; untied output; bf16 weights kept as bf16
    ("MistralConfig", "LlamaForCausalLM", "bf16"),
])
def test_qwen3_and_mistral_write_gguf_that_reads_back_exactly(smollm2_dir, tmp_path, config_class, read_as,
                                                              gguf_type):
    import shutil

    import transformers

    config = getattr(transformers, config_class)(
        vocab_size=49152, hidden_size=256, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=128, tie_word_embeddings=config_class == "Qwen3Config")
    torch.manual_seed(0)
    dtype = torch.float16 if gguf_type == "f16" else torch.bfloat16
    AutoModelForCausalLM.from_config(config).to(dtype).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # a byte-level BPE tokenizer
        shutil.copy(smollm2_dir / name, tmp_path / name)
    path = write_gguf(tmp_path, gguf_type, tmp_path / "gguf")  # alone in its folder: read from the GGUF only
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert type(back).__name__ == read_as
    ids = torch.tensor([[1, 5, 900, 33, 2000, 7]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)(ids).logits
        torch.testing.assert_close(back(ids).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_llama_cpp_tokenizes_and_answers_as_instill(smollm2_dir, tmp_path, cache):
    """llama.cpp itself (the optional `llamacpp` extra, a source build): same token ids as the trained
    tokenizer, and greedy f16 answers identical to instill's engine on the merged model."""
    llama_cpp = pytest.importorskip("llama_cpp")
    out = _export(SMOLLM2, tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(out)
    llm = llama_cpp.Llama(model_path=str(out / "model-f16.gguf"), n_ctx=512, n_threads=1, verbose=False)
    for text in [*TEXTS, _special_text(tokenizer)]:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"], text
    conversations = [[{"role": "user", "content": p}] for p in
                     ("What is the capital of France?", "Write one sentence about rivers.", "What is 12 plus 7?")]
    expected = load_generator(ModelArgs(model_name_or_path=str(out))).generate(conversations, max_new_tokens=16)
    for conversation, want in zip(conversations, expected):
        ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_dict=True)["input_ids"]
        got = llm.create_completion(prompt=ids, max_tokens=16, temperature=0.0, top_k=1)["choices"][0]["text"]
        assert got.strip() == want.strip(), (got, want)
    llm.close()


def test_k_quants_without_llama_cpp_are_refused_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if not installed: find_spec None, import fails
    with pytest.raises(ConfigError, match=re.escape("export_gguf_type 'q4_k_m' is quantized by llama.cpp, which is "
                                                    "not installed; install the llamacpp extra")) as err:
        build_config({"model_name_or_path": "x", "export_dir": "out", "export_format": "gguf",
                      "export_gguf_type": "q4_k_m"})
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_llama_cpp_quantizes_smollm2_to_q4_k_m_and_it_answers(smollm2_dir, tmp_path, cache):
    """export_gguf_type: q4_k_m goes through llama.cpp's own quantizer; the file holds K-quant tensors
    (rows of 1536 = 6 x 256; 576-wide rows take llama.cpp's fallback) and llama.cpp answers from it.

    Measured on this model (llama.cpp logits over a 33-token text against the f16 GGUF's): top-1 agreement
    0.85 and mean cosine 0.990 for q4_k_m (q6_k 0.91 / 0.998, q8_0 0.97 / 0.999). The 4-bit answers stay on
    topic but are not the f16 ones (q4_k_m answers the capital of France wrongly), so the prompts here ask
    for what it still answers."""
    pytest.importorskip("llama_cpp", reason="K-quants need llama.cpp: the llamacpp extra is not installed")
    import gguf
    import llama_cpp

    out = _export(SMOLLM2, tmp_path / "out", "q4_k_m")
    path = out / "model-q4_k_m.gguf"
    assert sorted(p.name for p in out.glob("*.gguf")) == ["model-q4_k_m.gguf"]  # the f16 step is removed
    assert not list(out.glob(".f16-*"))
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    down = [kind for name, kind in types.items() if name.endswith("ffn_down.weight")]
    assert len(down) == 30 and set(down) <= {"Q4_K", "Q5_K", "Q6_K"} and "Q4_K" in down, down
    assert {kind for name, kind in types.items() if name.endswith("_norm.weight")} == {"F32"}
    assert path.stat().st_size < 0.45 * (out / "model.safetensors").stat().st_size  # f16 safetensors: 2 bytes a weight
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(out)
    for prompt, expected in (("Write one sentence about rivers.", "river"), ("What is 12 plus 7?", "12")):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_dict=True)["input_ids"]
        answer = llm.create_completion(prompt=ids, max_tokens=16, temperature=0.0, top_k=1)["choices"][0]["text"]
        assert expected in answer.lower(), answer
    llm.close()
