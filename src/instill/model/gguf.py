"""Write a merged model directory as one GGUF file (llama.cpp, Ollama, LM Studio) and an Ollama Modelfile.

Which converter: llama.cpp's own `convert_hf_to_gguf.py` is not installable from the package index. It
ships only as source inside `llama-cpp-python`'s 76 MB sdist (vendor/llama.cpp/convert_hf_to_gguf.py and
its `conversion/` package), which no wheel installs and which expects its vendored `gguf-py`. So this
module follows that script's logic for the families instill supports, through the `gguf` package (the
same gguf-py, from PyPI): its `GGUFWriter`, its tensor-name maps, its `SpecialVocab` (merges, special
token ids, add_bos) and its quantizers. Followed from the script: Llama-architecture Q/K rows permuted
(`LlamaModel.permute`), 1-D tensors and norms kept F32, every other weight in the file type (token
embeddings and output included), the pre-tokenizer named by the hash of the script's check text,
tokens padded to `vocab_size` as `[PAD<i>]`, added tokens CONTROL when special or `<|...|>`. Checked
against llama.cpp itself through llama-cpp-python (tests/model/test_gguf.py, the `llamacpp` extra).

K-quants (q4_k_m, q6_k, ...): the gguf package has no K-quant quantizer, so the f16 GGUF written here is
quantized by llama.cpp's own `llama_model_quantize` (through llama-cpp-python, the `llamacpp` extra), with its
default parameters: its per-tensor mix for the _s/_m/_l types and its fallback for rows that are not a multiple
of 256 (SmolLM2's 576-wide rows become q5_0/q8_0 and the like; 1536-wide rows stay K-quants).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from instill.config_rules import GGUF_K_QUANTS, GGUF_TYPES
from instill.errors import ConfigError, ModelError

# export_gguf_type -> GGMLQuantizationType. Only the types the gguf package quantizes itself (its
# Q4_K / Q5_K / Q6_K have de-quantizers only), listed in config_rules.GGUF_TYPES.
_QUANT_TYPES = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
_FILE_TYPES = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
# HF architecture -> (gguf MODEL_ARCH name, permute Q/K as llama.cpp's Llama converter does)
ARCHITECTURES = {
    "LlamaForCausalLM": ("LLAMA", True),
    "MistralForCausalLM": ("LLAMA", True),  # llama.cpp converts Mistral as the llama architecture
    "Qwen2ForCausalLM": ("QWEN2", False),
    "Qwen3ForCausalLM": ("QWEN3", False),
}
# convert_hf_to_gguf.py's check text; sha256(str(token ids)) names the pre-tokenizer llama.cpp applies.
_CHECK_TEXT = (
    '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 '
    '33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
    '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
    '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'
)
# The hashes of the supported families, copied from get_vocab_base_pre in llama.cpp's converter.
_PRE_TOKENIZERS = {
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2 / Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo and later
}


def gguf_path(out_dir: Path, gguf_type: str) -> Path:
    return out_dir / f"model-{gguf_type}.gguf"


def check_architecture(model_dir: Path) -> str:
    """The model's HF architecture if GGUF export supports it; a ModelError naming it otherwise."""
    config = json.loads((model_dir / "config.json").read_text())
    hf_arch = (config.get("architectures") or ["?"])[0]
    if hf_arch not in ARCHITECTURES:
        raise ModelError(f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {hf_arch}")
    return hf_arch


def ollama_commands(out_dir: Path) -> tuple[str, str]:
    """`ollama create` and `ollama run` for the Modelfile in `out_dir`, named after the folder."""
    name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in out_dir.resolve().name.lower()) or "instill"
    return f"ollama create {name} -f {out_dir / 'Modelfile'}", f"ollama run {name}"


def write_gguf(model_dir: Path, gguf_type: str, out_dir: Path | None = None) -> Path:
    """Write `model_dir` (a merged safetensors model with its tokenizer) as `model-<type>.gguf`; return it."""
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    if gguf_type in GGUF_K_QUANTS:
        return _llama_quantize(model_dir, gguf_type, out_dir or model_dir)
    if gguf_type not in GGUF_TYPES:
        raise ConfigError(f"export_gguf_type '{gguf_type}' is not written by instill; choose one of "
                          f"{', '.join((*GGUF_TYPES, *GGUF_K_QUANTS))}")
    hf_arch = check_architecture(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    arch_name, permute = ARCHITECTURES[hf_arch]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ModelError(f"GGUF export: rope_type '{rope.get('rope_type', rope.get('type'))}' is not written yet "
                         "(only the default RoPE)")
    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokens, toktypes, pre = _vocab(tokenizer, config["vocab_size"], gguf)

    path = gguf_path(out_dir or model_dir, gguf_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(model_dir.name)
    writer.add_file_type(getattr(gguf.LlamaFileType, _FILE_TYPES[gguf_type]))
    if gguf_type.startswith("q"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_block_count(n_layers)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    if config.get("head_dim") and config["head_dim"] != config["hidden_size"] // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch_name == "LLAMA":
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(head_dim)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(toktypes)
    special = gguf.SpecialVocab(model_dir, load_merges=True)  # merges, bos/eos/pad ids, add_bos, chat template
    special.add_to_gguf(writer)
    eot = _end_of_turn(model_dir, tokenizer)
    if eot is not None and eot != special.special_token_ids.get("eos"):
        writer.add_eot_token_id(eot)

    names = gguf.get_tensor_name_map(arch, n_layers)
    qtype = getattr(gguf.GGMLQuantizationType, _QUANT_TYPES[gguf_type])
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(file, framework="pt") as tensors:
            for name in tensors.keys():  # noqa: SIM118 — safe_open is not a mapping
                if name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp reads the tied output from token_embd
                new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise ModelError(f"GGUF export: no GGUF name for tensor '{name}' of {hf_arch}")
                data = tensors.get_tensor(name).to(torch.float32)
                if permute and name.endswith(("q_proj.weight", "q_proj.bias")):
                    data = _permute(data, n_head)
                elif permute and name.endswith(("k_proj.weight", "k_proj.bias")):
                    data = _permute(data, n_kv)
                array = data.numpy()
                if array.ndim <= 1 or new_name.endswith("_norm.weight"):
                    writer.add_tensor(new_name, array.astype(np.float32))
                    continue
                try:
                    packed, kind = gguf.quants.quantize(array, qtype), qtype
                except gguf.QuantError:  # a row not a multiple of the block size: F16, as the converter does
                    kind = gguf.GGMLQuantizationType.F16
                    packed = gguf.quants.quantize(array, kind)
                writer.add_tensor(new_name, packed, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _llama_quantize(model_dir: Path, gguf_type: str, out_dir: Path) -> Path:
    """`model-<K-quant>.gguf` by llama.cpp's quantizer from an f16 GGUF written first (and removed after)."""
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(f"export_gguf_type '{gguf_type}' is quantized by llama.cpp, which is not installed; "
                          "install the llamacpp extra (pip install 'instill[llamacpp]')") from None
    import tempfile

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{gguf_type.upper()}")
    path = gguf_path(out_dir, gguf_type)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".f16-") as tmp:
        f16 = write_gguf(model_dir, "f16", Path(tmp))
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        logger = logging.getLogger("llama-cpp-python")  # llama.cpp's log: a line per tensor unless errors only
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            code = llama_cpp.llama_model_quantize(str(f16).encode(), str(path).encode(), params)
        finally:
            logger.setLevel(level)
    if code != 0:
        path.unlink(missing_ok=True)
        raise ModelError(f"llama.cpp could not quantize the GGUF to {gguf_type} (llama_model_quantize returned {code})")
    return path


def _permute(weights: Any, n_head: int) -> Any:
    """llama.cpp's Llama Q/K row order (its RoPE pairs adjacent dims; HF's pairs the two halves)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _vocab(tokenizer: Any, vocab_size: int, gguf: Any) -> tuple[list[str], list[int], str]:
    """Tokens, token types and pre-tokenizer name, as the converter's get_vocab_base writes them."""
    if tokenizer.backend_tokenizer.model.__class__.__name__ != "BPE" or \
            "ByteLevel" not in json.dumps(json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer")):
        raise ModelError("GGUF export supports byte-level BPE tokenizers (Qwen, SmolLM2, Llama 3, Mistral tekken); "
                         "this tokenizer is not one")
    digest = hashlib.sha256(str(tokenizer.encode(_CHECK_TEXT)).encode()).hexdigest()
    pre = _PRE_TOKENIZERS.get(digest)
    if pre is None:
        raise ModelError("GGUF export: this tokenizer's pre-tokenizer is not one llama.cpp knows for the supported "
                         f"families (check-text hash {digest[:12]})")
    reverse = {i: tok for tok, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if i in added:
            special = added[i].special or (token.startswith("<|") and token.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types, pre


def _end_of_turn(model_dir: Path, tokenizer: Any) -> int | None:
    """The id that ends an assistant turn: the last eos of generation_config.json (instill export appends it)."""
    gen = model_dir / "generation_config.json"
    eos = json.loads(gen.read_text()).get("eos_token_id") if gen.is_file() else None
    if isinstance(eos, list):
        return eos[-1] if eos else None
    return eos if isinstance(eos, int) else tokenizer.eos_token_id


# ---- Ollama --------------------------------------------------------------------------------------
# Ollama's Go template for ChatML; SYSTEM (the template's default system prompt) fills .System when the
# conversation has no system message, as the chat template itself does.
CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def _chatml(messages: list[dict], system: str | None) -> str:
    """What CHATML_TEMPLATE renders (the reference the chat template is compared with)."""
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return head + body + "<|im_start|>assistant\n"


def chatml_system(tokenizer: Any) -> tuple[bool, str | None]:
    """(the chat template is ChatML, its default system prompt). Decided by rendering probe conversations."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "2+2?"}]
    try:
        plain = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        given = tokenizer.apply_chat_template([{"role": "system", "content": "S"}, *probe], tokenize=False,
                                              add_generation_prompt=True)
    except Exception:  # noqa: BLE001 — a template that cannot render plain turns is not ChatML
        return False, None
    system = None
    if plain.startswith("<|im_start|>system\n"):
        system = plain[len("<|im_start|>system\n"):plain.find("<|im_end|>")]
    same = plain == _chatml(probe, system) and given == _chatml([{"role": "system", "content": "S"}, *probe], None)
    return same, system if same else None


def write_modelfile(gguf_file: Path, tokenizer: Any) -> Path:
    """An Ollama Modelfile beside `gguf_file`: FROM, TEMPLATE and SYSTEM for ChatML templates, stop tokens."""
    chatml, system = chatml_system(tokenizer)
    lines = [f"FROM ./{gguf_file.name}", ""]
    if chatml:
        lines += [f'TEMPLATE """{CHATML_TEMPLATE}"""', ""]
        if system:
            lines += [f'SYSTEM """{system}"""', ""]
        stops = ["<|im_start|>", "<|im_end|>"]
    else:
        lines += ["# The chat template is not ChatML: Ollama takes the template from the GGUF's chat_template.", ""]
        stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    path = gguf_file.parent / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
