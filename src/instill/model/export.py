"""Merge adapters into the base and save a standalone model (safetensors shards, tokenizer, template).

With `export_format: gguf` the saved model is then also written as a GGUF with an Ollama Modelfile (model/gguf.py).
With `export_hub_model_id` the export directory is then uploaded to the Hugging Face Hub (with hf_hub_token, as
LLaMA-Factory does, else HF_TOKEN or the `hf auth login` token); the hub and the token are checked before anything
loads.

The base is always loaded in full precision for merging, even for a QLoRA adapter: merging into
4-bit weights would bake quantisation error into every merged layer. The merge runs in fp32 and
the result is cast to `export_dtype`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from instill.config import RunConfig
from instill.data.templates import get_template
from instill.errors import ConfigError
from instill.hub import check_hub_upload, resolve_model_args, upload_folder
from instill.model.adapters import check_adapters
from instill.model.gguf import check_architecture, write_gguf, write_modelfile
from instill.model.load import load_tokenizer
from instill.model.processor import auto_model_class, load_image_inputs
from instill.model.rope import inference_rope


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
    check_adapters(config.model.adapter_name_or_path)
    model_dir = resolve_model_args(config.model)
    if args.export_format == "gguf":
        check_architecture(model_dir)  # refused by name before the merge, not after
    tokenizer = load_tokenizer(config.model, model_dir)
    rope = inference_rope(config.model.rope_scaling, model_dir, config.model.adapter_name_or_path or [],
                          config.model.trust_remote_code)  # saved in the export's config.json
    model = auto_model_class(model_dir).from_pretrained(model_dir, dtype=torch.float32,
                                                        trust_remote_code=config.model.trust_remote_code,
                                                        **(rope or {}))
    media = load_image_inputs(config.model, model_dir, tokenizer)  # a vision-language model's image processor
    for adapter in config.model.adapter_name_or_path or []:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if expand_layers:
        from instill.model.expand import expand_layers as expand

        expand(model, expand_layers)
    model = model.to(getattr(torch, args.export_dtype))

    template = get_template(config.data.template, tokenizer)
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
    if args.export_hub_model_id:
        upload_folder("export_hub_model_id", args.export_hub_model_id, out, config.model.hf_hub_token,
                      "instill export")
    return out
