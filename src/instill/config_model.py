"""The model section: the base model, its adapters, tokenizer, attention, quantization and the inference
engine (`ModelArgs`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator

from instill.config_section import _comma_list, _Section


class ModelArgs(_Section):
    model_name_or_path: str
    """The base model: a local directory, a .gguf file, pkg:<package>/<file>, a Hugging Face, ModelScope or Modelers id."""
    adapter_name_or_path: list[str] | None = None
    """Adapters (comma-separated) to load on the base: the first is trained further, the rest are merged."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code (off unless you trust it)."""
    cache_dir: str | None = None
    """Where hub downloads are kept (default: the hub's own cache)."""
    model_revision: str = "main"
    """The hub revision (branch, tag or commit) to download."""
    hf_hub_token: str | None = None
    """A Hugging Face token for private or gated models (never written to run files)."""
    use_fast_tokenizer: bool = True
    """Use the Rust (fast) tokenizer."""
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = "auto"
    """Attention kernel: auto (transformers chooses, sdpa on recent torch), disabled (eager), sdpa, or fa2 (flash-attn, CUDA)."""
    torch_num_threads: int | None = Field(default=None, ge=1)
    """CPU threads for torch in this process (default: torch's own choice)."""
    quantization_bit: Literal[4, 8] | None = None
    """QLoRA: load the frozen base in 4 or 8 bits with bitsandbytes (lora / adalora only)."""
    quantization_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type: nf4 or fp4."""
    double_quantization: bool = True
    """Quantize the 4-bit quantization constants too (saves ~0.4 bit per weight)."""
    image_max_pixels: int = Field(default=256 * 256, ge=28 * 28)
    """Vision-language models: larger images are resized down to this many pixels before patching (the default
    keeps a CPU run short: at most 84 image tokens per image for Qwen2-VL; LLaMA-Factory's is 768*768)."""
    image_min_pixels: int = Field(default=64 * 64, ge=1)
    """Vision-language models: smaller images are resized up to this many pixels (LLaMA-Factory's default: 32*32)."""
    use_reentrant_gc: bool = False
    """Activation checkpointing with torch's reentrant variant. LLaMA-Factory's default is true; instill's is
    false (torch's recommendation: it needs no input gradients and works with adapters)."""
    infer_backend: Literal["huggingface", "hf", "vllm"] = "huggingface"
    """The inference engine: transformers (huggingface), or vllm for chat, predict and eval generation (a CUDA GPU
    and the vllm package; serve, eval_mode: score, preference eval and benchmarks run on transformers)."""
    vllm_maxlen: int = Field(default=4096, ge=1)
    """vLLM: the longest sequence (prompt + answer) the engine holds (its max_model_len)."""
    vllm_gpu_util: float = Field(default=0.7, gt=0, le=1)
    """vLLM: the fraction of GPU memory the engine may take (its gpu_memory_utilization)."""
    vllm_enforce_eager: bool = False
    """vLLM: run eagerly, without CUDA graphs (its enforce_eager)."""
    vllm_max_lora_rank: int = Field(default=32, ge=1)
    """vLLM: the largest LoRA rank the engine accepts (its max_lora_rank)."""
    vllm_config: dict[str, Any] | None = None
    """vLLM: more engine arguments for vllm.LLM, as a mapping or a JSON string; they override instill's."""
    rope_scaling: Literal["linear", "dynamic", "yarn", "llama3"] | None = None
    """RoPE scaling for sequences longer than the model's max_position_embeddings: the factor is
    ceil(cutoff_len / max_position_embeddings), as LLaMA-Factory derives it; saved with the run, so inference uses it."""

    adapter_folder: str | None = None
    """The subfolder of each adapter_name_or_path that holds the adapter (peft's subfolder)."""
    add_tokens: list[str] | None = None
    """Ordinary tokens (comma-separated) added to the tokenizer; the embeddings grow to fit them (resize_vocab)."""
    add_special_tokens: list[str] | None = None
    """Special tokens (comma-separated) added to the tokenizer; the embeddings grow to fit them (resize_vocab)."""
    new_special_tokens_config: str | None = None
    """A YAML file of {token: description}: its tokens are added as special tokens (instead of
    add_special_tokens), and desc_init starts each one at the mean embedding of its description."""
    resize_vocab: bool = False
    """Grow the embeddings and LM head to the tokenizer's length (rounded up to 64) and train them whole with
    LoRA (embed_tokens and lm_head join additional_target); set by itself when tokens are added."""
    init_special_tokens: Literal["noise_init", "desc_init", "desc_init_w_noise"] = "noise_init"
    """New embedding rows: noise_init (mean + noise), desc_init (mean of the description's token embeddings, from
    new_special_tokens_config) or desc_init_w_noise (the same plus noise)."""
    split_special_tokens: bool = False
    """Special-token text in the data is tokenized as ordinary text: instill always does this unless
    allow_special_tokens_in_data is true (LLaMA-Factory's default, false, matches allow_special_tokens_in_data: true)."""
    upcast_layernorm: bool = False
    """Keep the norm weights in fp32 while the base is in bf16/fp16."""
    upcast_lmhead_output: bool = False
    """Cast the LM head's output (the logits) to fp32 while the base is in bf16/fp16."""
    train_from_scratch: bool = False
    """Train from randomly initialised weights: the model is built from the config in model_name_or_path (its
    tokenizer is still used)."""
    print_param_status: bool = False
    """Print every parameter's name, dtype, device and whether it trains (rank 0), after the method is applied."""
    infer_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    """The dtype chat, predict, serve and eval load the model in (auto: bf16/fp16 as configured, else fp32)."""
    quantization_method: Literal["bnb", "bitsandbytes"] = "bnb"
    """How quantization_bit quantizes on the fly: bitsandbytes (bnb), the only method built in instill."""
    quantization_device_map: Literal["auto"] | None = None
    """auto: spread a 4-bit model over every visible GPU for inference (device_map auto); not for training."""
    moe_aux_loss_coef: float | None = Field(default=None, ge=0)
    """Mixture-of-experts models: the weight of the router's load-balancing loss added to the training loss."""

    _split = field_validator("adapter_name_or_path", "add_tokens", "add_special_tokens", mode="before")(_comma_list)

    @field_validator("vllm_config", mode="before")
    @classmethod
    def _vllm_config(cls, v: Any) -> Any:
        """LLaMA-Factory takes a JSON string too."""
        if isinstance(v, str) and v.strip().startswith("{"):
            try:
                return json.loads(v)
            except json.JSONDecodeError as err:
                raise ValueError(f"not valid JSON ({err.msg} at character {err.pos})") from None
        return v

