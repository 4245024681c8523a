"""Merge adapters into the base and save a standalone model (safetensors shards, tokenizer, template).

With `export_format: gguf` the saved model is then also written as a GGUF with an Ollama Modelfile (model/gguf.py).
With `export_hub_model_id` the export directory is then uploaded to the Hugging Face Hub (with hf_hub_token, as
LLaMA-Factory does, else HF_TOKEN or the `hf auth login` token); the hub and the token are checked before anything
loads.

With `export_quantization_bit` the (already merged) model is saved quantized instead, through transformers'
quantizers: GPTQConfig (LLaMA-Factory's GPTQ through optimum and gptqmodel, calibrated on random windows of
`export_quantization_dataset`, as LLaMA-Factory 0.9.5's `_get_quantization_dataset` takes them; CUDA only,
refused in one line before anything loads elsewhere) or, with `export_quantization_method: bnb`,
BitsAndBytesConfig (the QLoRA loader, `model/load.py`), whose 4/8-bit weights bitsandbytes serializes on the CPU too.

The base is always loaded in full precision for merging, even for a QLoRA adapter: merging into
4-bit weights would bake quantisation error into every merged layer. The merge runs in fp32 and
the result is cast to `export_dtype`.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any

import torch

from instill.config import RunConfig
from instill.data.templates import TemplateChoice, get_template
from instill.errors import ConfigError, DataError
from instill.hub import check_hub_upload, resolve_model_args, upload_folder
from instill.model.adapters import check_adapters
from instill.model.gguf import check_architecture, write_gguf, write_modelfile
from instill.model.load import Precision, load_model, load_tokenizer, tokenizer_dir
from instill.model.processor import auto_model_class, load_image_inputs
from instill.model.rope import inference_rope
from instill.model.vocab import resize_embeddings


def export_model(config: RunConfig, expand_layers: int = 0) -> Path:
    """Write the merged model to `export_dir`; return that directory. `expand_layers`: LLaMA Pro's block
    expansion of the merged model by that many identity blocks (model/expand.py)."""
    from peft import PeftModel
    args = config.export
    if not args.export_dir:
        raise ConfigError("export needs export_dir (where to write the merged model)")
    out = Path(args.export_dir)
    if out.is_dir() and any(out.iterdir()) and not config.train.overwrite_output_dir:
        raise ConfigError(f"export_dir {out} is not empty; set overwrite_output_dir: true to write into it")

    if args.export_hub_model_id:
        check_hub_upload("export_hub_model_id", config.model.hf_hub_token)
    if args.export_quantization_bit is not None:
        if expand_layers:
            raise ConfigError("--expand-layers and export_quantization_bit do not combine; expand first, then quantize "
                              "the expanded model")
        return _uploaded(config, _quantized_export(config, out))
    adapters, sub = config.model.adapter_name_or_path or [], config.model.adapter_folder
    check_adapters(adapters, sub)
    model_dir = resolve_model_args(config.model)
    if args.export_format == "gguf":
        check_architecture(model_dir)  # refused by name before the merge, not after
    tokenizer = load_tokenizer(config.model, tokenizer_dir(model_dir, adapters, sub))  # with the adapter's new tokens
    rope = inference_rope(config.model.rope_scaling, model_dir, config.model.adapter_name_or_path or [],
                          config.model.trust_remote_code)  # saved in the export's config.json
    model = auto_model_class(model_dir).from_pretrained(model_dir, dtype=torch.float32,
                                                        trust_remote_code=config.model.trust_remote_code,
                                                        **(rope or {}))
    resize_embeddings(model, tokenizer)  # new tokens' rows, replaced by the adapter's trained ones
    media = load_image_inputs(config.model, model_dir, tokenizer)  # a vision-language model's image processor
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, adapter, **({"subfolder": sub} if sub else {})).merge_and_unload()
    if expand_layers:
        from instill.model.expand import expand_layers as expand

        expand(model, expand_layers)
    model = model.to(getattr(torch, args.export_dtype))

    template = get_template(TemplateChoice.of(config.data), tokenizer)
    if template.end_of_turn:
        eot = tokenizer.convert_tokens_to_ids(template.end_of_turn)
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if eot not in eos:
            model.generation_config.eos_token_id = eos + [eot]  # so plain `generate` stops at the end of a turn
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=f"{args.export_size}GB")
    tokenizer.chat_template = template.jinja  # the template training rendered with, named or the tokenizer's own
    tokenizer.save_pretrained(out)
    if media is not None:
        media.processor.save_pretrained(out)
    if args.export_format == "gguf":
        write_modelfile(write_gguf(out, args.export_gguf_type), tokenizer)
    return _uploaded(config, out)


def _uploaded(config: RunConfig, out: Path) -> Path:
    """`out`, uploaded first to export_hub_model_id when the config names one."""
    if config.export.export_hub_model_id:
        upload_folder("export_hub_model_id", config.export.export_hub_model_id, out, config.model.hf_hub_token,
                      "instill export")
    return out


def check_gptq() -> None:
    """GPTQ's needs, before anything loads: a CUDA GPU, gptqmodel and optimum; a one-line ConfigError otherwise."""
    if not torch.cuda.is_available():
        raise ConfigError("export_quantization_bit: GPTQ calibrates on a CUDA GPU (gptqmodel's kernels) and none is "
                          "visible; set export_quantization_method: bnb for a bitsandbytes 4/8-bit export made here")
    missing = [name for name in ("gptqmodel", "optimum") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"export_quantization_bit: GPTQ needs {' and '.join(missing)}, not installed "
                          f"(pip install {' '.join(missing)})")


def calibration_samples(tokenizer: Any, source: str, nsamples: int, maxlen: int, seed: int = 42) -> list[dict]:
    """GPTQ calibration as LLaMA-Factory takes it: `nsamples` windows of `maxlen` tokens, each from a random row of
    the 'text' column longer than `maxlen` (100 tries each), as nested lists ({input_ids: [[...]], ...})."""
    from datasets import load_dataset

    path = Path(source)
    if path.is_file():
        kinds = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
        if path.suffix.lower() not in kinds:
            raise DataError(f"export_quantization_dataset: {source}: give a json, jsonl, csv, parquet or txt file")
        dataset = load_dataset(kinds[path.suffix.lower()], data_files=str(path), split="train")
    else:
        dataset = load_dataset(source, split="train")
    if "text" not in dataset.column_names:
        raise DataError(f"export_quantization_dataset: {source} has no 'text' column (it has "
                        f"{', '.join(dataset.column_names)})")
    rng = random.Random(seed)
    samples = []
    for _ in range(nsamples):
        for _try in range(100):
            ids = tokenizer(dataset[rng.randrange(len(dataset))]["text"])["input_ids"]
            if len(ids) > maxlen:
                break
        else:
            raise DataError(f"export_quantization_dataset: no row of {source} longer than export_quantization_maxlen "
                            f"({maxlen} tokens) in 100 tries; lower export_quantization_maxlen")
        start = rng.randint(0, len(ids) - maxlen - 1)
        samples.append({"input_ids": [ids[start:start + maxlen]], "attention_mask": [[1] * maxlen]})
    return samples


def _quantized_export(config: RunConfig, out: Path) -> Path:
    """The model (no adapters: the config refuses them) saved quantized to `out` with its tokenizer."""
    from transformers import AutoModelForCausalLM, GPTQConfig

    args = config.export
    if args.export_quantization_method == "gptq":
        check_gptq()
    model_dir = resolve_model_args(config.model)
    tokenizer = load_tokenizer(config.model, model_dir)
    if args.export_quantization_method == "gptq":
        quantization = GPTQConfig(bits=args.export_quantization_bit, tokenizer=tokenizer, dataset=calibration_samples(
            tokenizer, args.export_quantization_dataset, args.export_quantization_nsamples,
            args.export_quantization_maxlen, config.train.seed))
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization, device_map="auto",
                                                     dtype=torch.float16,  # gptqmodel's, as in LLaMA-Factory
                                                     trust_remote_code=config.model.trust_remote_code)
    else:
        model = load_model(config.model.model_copy(update={"quantization_bit": args.export_quantization_bit}),
                           Precision(config.train.bf16, config.train.fp16), "lora", model_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=f"{args.export_size}GB")
    tokenizer.chat_template = get_template(TemplateChoice.of(config.data), tokenizer).jinja
    tokenizer.save_pretrained(out)
    return out
