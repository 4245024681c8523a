"""The export section: `instill export`'s merge, GGUF, quantization and hub upload (`ExportArgs`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from instill.config_section import _Section


class ExportArgs(_Section):
    """`instill export`: merge adapters into the base and save a standalone model."""

    export_dir: str | None = None
    """Where instill export writes the merged model."""
    export_size: int = Field(default=5, ge=1)
    """Largest weight shard of the export, in GB."""
    export_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    """The dtype the merged model is saved in."""
    export_format: Literal["safetensors", "gguf"] = "safetensors"
    """gguf: also write export_dir/model-<export_gguf_type>.gguf and an Ollama Modelfile beside the merged model."""
    export_gguf_type: str = "f16"
    """The GGUF's weight type with export_format: gguf: f16, bf16, q8_0, q4_0, or a K-quant (q4_k_m, q5_k_m, q6_k,
    ...: quantized by llama.cpp, the llamacpp extra). Norms stay f32."""
    export_quantization_bit: Literal[2, 3, 4, 8] | None = None
    """Quantize the exported model to this many bits: GPTQ, as LLaMA-Factory does (a CUDA GPU, gptqmodel and
    optimum, calibration text in export_quantization_dataset), or bitsandbytes 4/8-bit with
    export_quantization_method: bnb (runs on the CPU too). Export a merged model first; adapters are refused."""
    export_quantization_method: Literal["gptq", "bnb"] = "gptq"
    """How export_quantization_bit quantizes: gptq (LLaMA-Factory's) or bnb (bitsandbytes nf4/fp4 or int8, saved
    in safetensors; loads with transformers and bitsandbytes; quantization_type and double_quantization apply)."""
    export_quantization_dataset: str | None = None
    """GPTQ calibration text: a json/jsonl/csv/parquet/txt file, or a hub dataset, with a 'text' column."""
    export_quantization_nsamples: int = Field(default=128, ge=1)
    """GPTQ: how many calibration windows to take from export_quantization_dataset."""
    export_quantization_maxlen: int = Field(default=1024, ge=1)
    """GPTQ: tokens per calibration window (rows must be longer than this)."""
    export_hub_model_id: str | None = None
    """Upload export_dir to this Hugging Face Hub repository, user/name, after the export (token: hf_hub_token,
    else HF_TOKEN or `hf auth login`)."""

