"""RunConfig: one YAML (LLaMA-Factory key names), validated once, before any model loads.

Users write a flat YAML, exactly as for LLaMA-Factory. We route each key to one typed
section (model / data / method / train / eval) and validate with pydantic, so a bad
config fails at the door naming the key. Later stages receive only their section.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from instill.config_rules import CROSS_RULES
from instill.defaults import defaults_note, learning_defaults
from instill.errors import ConfigError
from instill.key_policy import POLICY, refusal
from instill.stage_facts import STAGE_FACTS, STAGE_KEYS, STAGE_NAMES
from instill.textfile import printable, read_text


def _is_number_type(annotation: Any) -> bool:
    """int or float, alone or in a union (`int | None`); bool is a subclass of int but not a number here."""
    return annotation in (int, float) or any(_is_number_type(a) for a in get_args(annotation))


class _Section(BaseModel):
    # Numbers are strict for every key at once: finite (no .inf / .nan) and never a boolean.
    # A field's docstring is its help text (`instill keys`, the README).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False,
                              use_attribute_docstrings=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads yes/no/true/false/on/off as booleans, which pydantic would turn into 1 and 0."""
        if isinstance(value, bool) and _is_number_type(cls.model_fields[info.field_name].annotation):
            raise ValueError("a number is needed, not a boolean: YAML reads yes/no/true/false/on/off as booleans")
        return value


def _comma_list(value: Any) -> Any:
    """'a, b' -> ['a', 'b']; lists pass through; None stays None."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


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


class DataArgs(_Section):
    dataset: list[str] | None = None
    """Training datasets (comma-separated names from dataset_info.json in dataset_dir)."""
    dataset_dir: str = "data"
    """The folder holding dataset_info.json and the data files."""
    packing: bool = False
    """Pack each batch's rows into rows of cutoff_len tokens; packed sequences never see each other."""
    neat_packing: bool = False
    """The same as packing here (instill's packing never lets sequences see each other)."""
    eval_dataset: list[str] | None = None
    """Evaluation datasets (comma-separated names from dataset_info.json)."""
    template: str = "auto"
    """The chat template: auto (the tokenizer's own) or a template name."""
    cutoff_len: int = Field(default=2048, ge=8)
    """Longest sample in tokens; longer ones are cut, keeping the answer (the prompt is cut first)."""
    max_samples: int | None = Field(default=None, ge=1)
    """Use at most this many rows of each dataset (after shuffling)."""
    val_size: float = Field(default=0.0, ge=0)
    """Rows held out for evaluation: a fraction in (0, 1) or a whole number of rows."""
    overwrite_cache: bool = False
    """Tokenize again even when the cache holds this data."""
    tokenized_path: str | None = None
    """Where the tokenized data is saved and loaded (default: the instill cache)."""
    streaming: bool = False
    """Read and tokenize rows lazily as training consumes them (data larger than memory; needs max_steps)."""
    eval_on_each_dataset: bool = False
    """Evaluate each eval_dataset apart: its loss is logged as eval_<dataset>_loss (stage sft and pt)."""
    media_dir: str | None = None
    """The folder images in the data are found in, when their paths are relative (default: dataset_dir)."""
    disable_shuffling: bool = False
    """Train on the rows in the datasets' order: no shuffle of the data (unless val_size draws a held-out part)
    and a sequential train sampler (group_by_length off)."""
    buffer_size: int = Field(default=16384, ge=1)
    """streaming: the rows a seeded shuffle buffer holds (a larger buffer mixes the stream better)."""
    mix_strategy: Literal["concat", "interleave_under", "interleave_over", "interleave_once"] = "concat"
    """How several datasets mix: concat (one after another, then shuffled), or interleaved by datasets'
    interleave_datasets: interleave_under stops when the first dataset runs out (the rows left out are counted),
    interleave_over when the last does (others repeat), interleave_once when every row was drawn once."""
    interleave_probs: list[float] | None = None
    """With an interleave mix_strategy: the probability of drawing from each dataset (comma-separated, one per
    dataset, summing to 1; default: take turns)."""
    preprocessing_num_workers: int | None = Field(default=None, ge=1)
    """Processes that tokenize the data (default: one, or more for large sets)."""
    train_on_prompt: bool = False
    """Train on the prompt tokens too, not only on what the assistant says."""
    mask_history: bool = False
    """Train only on the last assistant turn of each conversation."""
    dataset_placeholders: dict[str, str] = Field(default_factory=dict)
    """Values for {{name}} placeholders in datasets (LLaMA-Factory's identity.json uses name and author)."""
    allow_special_tokens_in_data: bool = False
    """Text in a message that spells a special token becomes that control token (off: it stays text)."""
    default_system: str | None = None
    """The system prompt of conversations that have none (or an empty one); replaces the template's own default.
    Baked into the chat template, so evaluation, chat, serve and the saved model use it too."""
    enable_thinking: bool = True
    """Reasoning templates (qwen3, deepseekr1, glm4_moe, ... and the tokenizer's own jinja through its
    enable_thinking variable): false drops thoughts from answers and puts an empty thought in the prompt."""
    tool_format: Literal["default", "gemma4", "glm4", "glm4_moe", "lfm2", "ling", "llama3", "minimax1", "minimax2",
                         "mistral", "qwen", "qwen3_5", "seed_oss"] | None = None
    """How tools and tool calls are written (LLaMA-Factory's tool formats); default: the template's own. Needs a
    LLaMA-Factory template name, which is then rendered from LLaMA-Factory's slots (not the model's own jinja)."""

    _split = field_validator("dataset", "eval_dataset", mode="before")(_comma_list)

    @field_validator("interleave_probs", mode="before")
    @classmethod
    def _probs(cls, v: Any) -> Any:
        """'0.7, 0.3' or one number -> a list (each item then checked as a number)."""
        if isinstance(v, int | float) and not isinstance(v, bool):
            return [v]
        return _comma_list(v)

    @model_validator(mode="after")
    def _mixing(self) -> DataArgs:
        probs = self.interleave_probs
        if probs is None:
            return self
        if self.mix_strategy == "concat":
            raise ValueError("interleave_probs needs an interleave mix_strategy (interleave_under, interleave_over "
                             "or interleave_once)")
        for key in ("dataset", "eval_dataset"):
            names = getattr(self, key)
            if names is not None and len(names) != len(probs):
                raise ValueError(f"interleave_probs has {len(probs)} probabilities for the {len(names)} datasets of "
                                 f"{key}; give one per dataset")
        if any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-6:
            raise ValueError(f"interleave_probs must be non-negative and sum to 1 (they sum to {sum(probs):g})")
        return self

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("must be a fraction in [0, 1) or a whole number of samples")
        return v


class MethodArgs(_Section):
    stage: Literal[STAGE_NAMES] = "sft"  # type: ignore[valid-type]
    """The training stage (stage_facts.py): sft, pt, dpo, kto, rm, grpo, rloo or distill."""
    finetuning_type: Literal["lora", "adalora", "oft", "full", "freeze"] = "lora"
    """How the model is trained: lora, adalora, oft (orthogonal fine-tuning), freeze (the last layers) or full."""
    lora_target: list[str] = Field(default_factory=lambda: ["all"])
    """Modules that get adapters: all (every linear layer but the head) or names, comma-separated."""
    lora_rank: int = Field(default=8, ge=1)
    """LoRA rank r."""
    lora_alpha: int | None = Field(default=None, ge=1)
    """LoRA scaling alpha (default: 2 x lora_rank)."""
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input while training."""
    use_rslora: bool = False
    """Rank-stabilised LoRA: scale by alpha / sqrt(r)."""
    use_dora: bool = False
    """DoRA: weight-decomposed LoRA (a trained magnitude per output)."""
    pissa_init: bool = False
    """PiSSA: initialise adapters from the principal singular vectors; the saved adapter applies to the original base."""
    pissa_iter: int = Field(default=16, ge=-1)
    """PiSSA's fast-SVD iterations (-1: exact SVD)."""
    additional_target: list[str] | None = None
    """Modules trained in full beside the adapters (e.g. embed_tokens, lm_head)."""
    adalora_init_r: int = Field(default=12, ge=1)
    """AdaLoRA: the starting rank of every adapter."""
    adalora_target_r: int = Field(default=8, ge=1)
    """AdaLoRA: the average rank left after pruning by importance."""
    adalora_tinit: int = Field(default=0, ge=0)
    """AdaLoRA: steps before pruning starts."""
    adalora_tfinal: int = Field(default=0, ge=0)
    """AdaLoRA: steps at the end with the final ranks fixed."""
    adalora_delta_t: int = Field(default=1, ge=1)
    """AdaLoRA: steps between rank allocations."""
    adalora_orth_reg_weight: float = Field(default=0.5, ge=0)
    """AdaLoRA: weight of the orthogonality regulariser."""
    oft_target: list[str] = Field(default_factory=lambda: ["all"])
    """OFT: modules that get orthogonal adapters: all (every linear layer but the head) or names, comma-separated."""
    oft_rank: int = Field(default=0, ge=0)
    """OFT: orthogonal blocks per adapted layer (0: set by oft_block_size; give one of the two)."""
    oft_block_size: int = Field(default=32, ge=0)
    """OFT: the size of each orthogonal block (0: set by oft_rank); peft lowers it to a divisor of a layer's input
    width where it does not divide it."""
    module_dropout: float = Field(default=0.0, ge=0, lt=1)
    """OFT: probability of dropping a whole block (to the identity) while training."""
    freeze_trainable_layers: int = Field(default=2)
    """freeze: train the last N layers (negative: the first N)."""
    freeze_trainable_modules: list[str] = Field(default_factory=lambda: ["all"])
    """freeze: modules of those layers to train (all, or names)."""
    freeze_extra_modules: list[str] | None = None
    """freeze: modules outside the layers to train too (e.g. embed_tokens)."""
    use_llama_pro: bool = False
    """LLaMA Pro: train only the freeze_trainable_layers blocks added by `instill export --expand-layers N`
    (freeze, lora or oft); the original layers stay frozen."""
    freeze_vision_tower: bool = True
    """Vision-language models: keep the vision tower frozen (no adapters on it)."""
    freeze_multi_modal_projector: bool = True
    """Vision-language models: keep the projector frozen."""
    pref_beta: float = Field(default=0.1, gt=0)
    """DPO/KTO: beta, how far the policy may move from the reference."""
    pref_ftx: float = Field(default=0.0, ge=0)
    """DPO: weight of an SFT loss on the chosen answer mixed into the preference loss."""
    pref_loss: Literal["sigmoid", "ipo", "hinge", "orpo", "simpo"] = "sigmoid"
    """DPO's loss: sigmoid (DPO), ipo, hinge, orpo or simpo."""
    dpo_label_smoothing: float = Field(default=0.0, ge=0, le=0.5)
    """DPO: label smoothing (conservative DPO), in [0, 0.5]."""
    pref_bco_weight: float = Field(default=0.0, ge=0)
    """DPO: weight of the BCO term mixed in, as LLaMA-Factory does: (loss + w * bco) / (1 + w)."""
    ld_alpha: float | None = Field(default=None, ge=0, le=1)
    """LD-DPO: weight of the tokens of the longer answer beyond the shorter one's length (trl's ld_alpha)."""
    simpo_gamma: float = Field(default=0.5, ge=0)
    """SimPO: the target reward margin."""
    kto_chosen_weight: float = Field(default=1.0, gt=0)
    """KTO: weight of desirable answers."""
    kto_rejected_weight: float = Field(default=1.0, gt=0)
    """KTO: weight of undesirable answers."""
    ref_model: str | None = None
    """Full fine-tuning: the reference model (default: a frozen copy of the base; LoRA uses the base with the adapter off)."""
    ref_model_adapters: list[str] | None = None
    """DPO/KTO: adapters (comma-separated) merged into ref_model, in order, to make the reference."""
    ref_model_quantization_bit: Literal[4, 8] | None = None
    """DPO/KTO: load ref_model in 4 or 8 bits with bitsandbytes."""
    freeze_language_model: bool = False
    """Vision-language models: keep the language model frozen (train the vision tower / projector only)."""
    create_new_adapter: bool = False
    """LoRA/OFT: merge every adapter_name_or_path into the base and train a new adapter on top (else the last one
    is trained further)."""
    # -- optimizers beyond transformers' `optim` (train/optimizers.py) --
    use_galore: bool = False
    """GaLore: gradients of the target layers projected to low rank (transformers' galore_* optimizers; full / freeze)."""
    galore_target: list[str] = Field(default_factory=lambda: ["all"])
    """GaLore: linear layers it projects (all: every one but the head; or names, comma-separated)."""
    galore_rank: int = Field(default=16, ge=1)
    """GaLore: the rank of the projected gradients."""
    galore_update_interval: int = Field(default=200, ge=1)
    """GaLore: optimizer steps between recomputations of the projection."""
    galore_scale: float = Field(default=2.0, gt=0)
    """GaLore: the scale of the projected update."""
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = "std"
    """GaLore: which side(s) of the gradient is projected."""
    galore_layerwise: bool = False
    """GaLore: step each parameter as soon as its gradient is ready (less memory; one process, no accumulation)."""
    use_apollo: bool = False
    """APOLLO: AdamW with low-rank, scaled gradient statistics (transformers' apollo_* optimizers; full / freeze)."""
    apollo_target: list[str] = Field(default_factory=lambda: ["all"])
    """APOLLO: linear layers it applies to (all: every one but the head; or names, comma-separated)."""
    apollo_rank: int = Field(default=16, ge=1)
    """APOLLO: the rank of the projected gradients."""
    apollo_update_interval: int = Field(default=200, ge=1)
    """APOLLO: optimizer steps between recomputations of the projection."""
    apollo_scale: float = Field(default=32.0, gt=0)
    """APOLLO: the scale of the update."""
    apollo_proj: Literal["svd", "random"] = "random"
    """APOLLO: the projection, random or svd."""
    apollo_proj_type: Literal["std", "right", "left"] = "std"
    """APOLLO: which side of the gradient is projected."""
    apollo_scale_type: Literal["channel", "tensor"] = "channel"
    """APOLLO: scale per channel or per tensor."""
    apollo_layerwise: bool = False
    """APOLLO: step each parameter as soon as its gradient is ready (less memory; one process, no accumulation)."""
    use_badam: bool = False
    """BAdam: Adam on one block of layers at a time, switching blocks (the badam package; full / freeze)."""
    badam_mode: Literal["layer", "ratio"] = "layer"
    """BAdam: layer (one decoder layer at a time) or ratio (a share of every weight)."""
    badam_start_block: int | None = Field(default=None, ge=0)
    """BAdam, layer mode: the block to start with (default: as badam_switch_mode says)."""
    badam_switch_mode: Literal["ascending", "descending", "random", "fixed"] = "ascending"
    """BAdam, layer mode: the order of the blocks."""
    badam_switch_interval: int = Field(default=50)
    """BAdam: optimizer steps per block (-1: never switch)."""
    badam_update_ratio: float = Field(default=0.05, gt=0, le=1)
    """BAdam, ratio mode: the share of each weight updated."""
    badam_mask_mode: Literal["adjacent", "scatter"] = "adjacent"
    """BAdam, ratio mode: the updated entries adjacent or scattered."""
    badam_verbose: int = Field(default=0, ge=0, le=2)
    """BAdam: 0 silent, 1 prints the block, 2 also its parameters."""
    use_adam_mini: bool = False
    """Adam-mini: one second-moment value per block of parameters instead of per parameter (the adam-mini package)."""
    use_muon: bool = False
    """Muon (torch.optim.Muon) on the 2-D hidden weights, AdamW on embeddings, head, norms and biases."""
    loraplus_lr_ratio: float | None = Field(default=None, gt=0)
    """LoRA+: the B matrices learn at this many times learning_rate (peft's create_loraplus_optimizer; lora)."""
    loraplus_lr_embedding: float = Field(default=1e-6, gt=0)
    """LoRA+: the learning rate of adapters on embedding layers."""
    use_dft_loss: bool = False
    """SFT: the DFT loss (each token's cross-entropy weighted by its detached probability)."""
    use_eaft_loss: bool = False
    """SFT: the EAFT loss (each token's cross-entropy weighted by (top-20 entropy / 3) ** eaft_alpha)."""
    eaft_alpha: float = Field(default=1.0, ge=0)
    """EAFT: the power of the entropy weight."""
    use_asft_loss: bool = False
    """SFT: the ASFT loss (DFT plus asft_alpha x KL(reference || model) at the labelled tokens)."""
    asft_alpha: float = Field(default=0.1, ge=0)
    """ASFT: the weight of the KL term anchoring the model to the reference (ref_model, or the base)."""

    # Online stages (grpo, rloo): trl's key names. Sampling uses the eval keys temperature and top_p, one key
    # each as in LLaMA-Factory, whose generating arguments drive its PPO sampling too.
    num_generations: int = Field(default=4, ge=2)
    """grpo/rloo: answers sampled per prompt (the group whose rewards are compared)."""
    max_prompt_length: int | None = Field(default=512, ge=1)
    """grpo/rloo: prompts longer than this many tokens are left out (counted in the run summary)."""
    max_completion_length: int = Field(default=256, ge=1)
    """grpo/rloo: longest sampled answer, in tokens."""
    beta: float | None = Field(default=None, ge=0)
    """grpo/rloo: weight of the KL term to the reference (the base, adapter disabled; default 0 grpo, 0.05 rloo); distill: the divergence, 0 forward KL to 1 reverse KL (default 1)."""
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "dapo"
    """grpo: how token losses are averaged: grpo (per answer), dapo (per token, trl's default), dr_grpo, bnpo."""
    epsilon: float = Field(default=0.2, gt=0)
    """grpo/rloo: clipping range of the policy ratio."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """grpo: divide advantages by the reward std of the group, of the batch, or not at all."""
    mask_truncated_completions: bool = False
    """grpo/rloo: answers cut at max_completion_length get no loss."""
    steps_per_generation: int | None = Field(default=None, ge=1)
    """grpo/rloo: optimizer steps per round of sampling (default: gradient_accumulation_steps)."""
    use_vllm: bool = False
    """grpo/rloo: sample with vLLM (CUDA, vLLM installed) instead of transformers."""
    reward_funcs: list[str] = Field(default_factory=list)
    """grpo/rloo: rewards, comma-separated: label_match, entity_f1, accuracy, format, think_format, length, json_valid, repetition, or file.py:function."""
    reward_weights: list[float] | None = None
    """grpo/rloo: a weight per reward function (default: 1 each)."""
    reward_model: str | None = None
    """grpo/rloo: a reward model trained with stage: rm (its output_dir), scoring each answer."""
    length_range: list[int] | None = None
    """The length reward's target: [min, max] completion tokens."""
    teacher_model_name_or_path: str | None = None
    """distill: the teacher (local directory, hub id or .gguf); it must share the student's tokenizer."""


    _split = field_validator(
        "lora_target", "additional_target", "freeze_trainable_modules", "freeze_extra_modules", "oft_target",
        "reward_funcs", "ref_model_adapters", mode="before")(_comma_list)
    _split_optimizer_targets = field_validator("galore_target", "apollo_target", mode="before")(_comma_list)

    @field_validator("reward_weights", "length_range", mode="before")
    @classmethod
    def _number_list(cls, v: Any) -> Any:
        """'1, 0.5' or one number -> a list (each item then checked as a number)."""
        if isinstance(v, int | float) and not isinstance(v, bool):
            return [v]
        return _comma_list(v)

    @field_validator("freeze_trainable_layers")
    @classmethod
    def _nonzero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must be non-zero (positive: last N layers, negative: first N layers)")
        return v

    @field_validator("badam_switch_interval")
    @classmethod
    def _switch_interval(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be a positive number of steps, or -1 never to switch blocks")
        return v

    @model_validator(mode="after")
    def _method_options(self) -> MethodArgs:
        if self.adalora_target_r > self.adalora_init_r:
            raise ValueError("adalora_target_r must not exceed adalora_init_r")
        if self.pissa_init and self.use_dora:
            raise ValueError("pissa_init and use_dora cannot be combined")
        if self.finetuning_type == "oft" and bool(self.oft_rank) == bool(self.oft_block_size):
            raise ValueError("OFT needs exactly one of oft_rank and oft_block_size (the other 0): blocks x block size "
                             "= a layer's input width")
        if self.length_range is not None and (len(self.length_range) != 2 or not 0 <= self.length_range[0]
                                              <= self.length_range[1]):
            raise ValueError("length_range must be [min, max] with 0 <= min <= max")
        return self


class TrainArgs(_Section):
    do_train: bool = True
    """Train (false with do_predict: only predict)."""
    output_dir: str = "saves/run"
    """Where the run writes its adapter or weights, checkpoints, logs and report."""
    overwrite_output_dir: bool = False
    """Write into an output_dir that already holds files."""
    logging_steps: int = Field(default=10, ge=1)
    """Log loss, learning rate and throughput every N steps."""
    save_steps: int = Field(default=500, ge=1)
    """Save a checkpoint every N steps (save_strategy: steps)."""
    save_strategy: Literal["steps", "epoch", "no"] = "steps"
    """When to save checkpoints: steps, epoch or no."""
    save_total_limit: int | None = Field(default=None, ge=1)
    """Keep at most this many checkpoints (the oldest are deleted)."""
    plot_loss: bool = False
    """Write training_loss.png (and rewards.png for preference stages)."""
    per_device_train_batch_size: int = Field(default=1, ge=1)
    """Rows per training step on each device."""
    per_device_eval_batch_size: int = Field(default=1, ge=1)
    """Rows per evaluation step on each device."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Steps whose gradients add up to one optimizer update."""
    learning_rate: float = Field(default=5e-5, gt=0)
    """Peak learning rate (default: per stage and method, named in the run summary)."""
    num_train_epochs: float = Field(default=3.0, gt=0)
    """Passes over the training data."""
    max_steps: int = Field(default=-1)
    """Optimizer updates to run (-1: use num_train_epochs)."""
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
        "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay",
    ] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    """Fraction of the updates spent warming the learning rate up."""
    warmup_steps: int = Field(default=0, ge=0)
    """Updates spent warming up (wins over warmup_ratio)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, ge=0)
    """Clip the gradient norm to this (0: no clipping)."""
    optim: str = "adamw_torch"
    """The optimizer (transformers' names: adamw_torch, adamw_8bit, sgd, ...)."""
    bf16: bool | Literal["auto", "force"] = False
    """bf16 mixed precision: true, false, auto (where the hardware runs it natively: CUDA with bf16, a CPU with AMX /
    AVX512-BF16) or force (bf16 even where it is emulated; true trains in fp32 there and says so)."""
    fp16: bool = False
    """fp16 mixed precision (CUDA)."""
    pure_bf16: bool = False
    """Train in bf16 throughout: weights loaded in bf16, no fp32 master copy of the trained ones, no autocast."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, slower."""
    group_by_length: bool = True
    """Batches of similar lengths (less padding, the same data each epoch)."""
    compute_accuracy: bool = False
    """SFT: token accuracy at each evaluation (argmax next token = label, per row, averaged), logged as
    eval_accuracy (LLaMA-Factory's ComputeAccuracy); evaluation then computes full logits (more memory)."""
    share_prefix: bool = True
    """Run the prefix every row of a batch shares (a system prompt and instruction) once per batch (exact; with
    gradient checkpointing too). Off under active dropout unless share_prefix_with_dropout."""
    share_prefix_with_dropout: bool = False
    """Share the prefix under active dropout (lora_dropout, attention dropout) too: every row then gets the
    prefix's one dropout mask instead of its own (not exact; off until its effect on accuracy is measured)."""
    torch_compile: bool = False
    """Compile the model with torch.compile (CUDA only)."""
    enable_liger_kernel: bool = False
    """Liger kernels (CUDA only, needs the liger-kernel package)."""
    gradient_checkpointing_kwargs: dict[str, Any] | None = None
    """Passed to the model's gradient_checkpointing_enable (e.g. {use_reentrant: false}); wins over use_reentrant_gc."""
    seed: int = 42
    """Seed of model initialisation, data order and sampling."""
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    """When to evaluate during training: no, steps or epoch."""
    eval_steps: int | None = Field(default=None, ge=1)
    """Evaluate every N steps (default: save_steps)."""
    resume_from_checkpoint: bool | str | None = None
    """Continue a run: true (the newest complete checkpoint in output_dir) or a checkpoint path."""
    report_to: list[str] = Field(default_factory=lambda: ["none"])
    """Trackers: none, tensorboard, swanlab (comma-separated)."""
    run_name: str | None = None
    """The run's name in trackers."""
    swanlab_mode: Literal["auto", "local", "offline", "cloud"] = "auto"
    """SwanLab: auto (cloud when logged in, else local), local, offline or cloud."""
    swanlab_project: str | None = None
    """SwanLab project (default: instill)."""
    swanlab_workspace: str | None = None
    """SwanLab workspace (default: your own)."""
    swanlab_run_name: str | None = None  # default: run_name, else the output_dir's name
    """SwanLab experiment name (default: run_name, else the output_dir's name)."""
    swanlab_logdir: str | None = None
    """SwanLab log folder (default: output_dir/swanlog)."""
    ddp_timeout: int = Field(default=1800, ge=1)
    """Seconds processes wait for each other (torchrun) before failing."""
    ddp_find_unused_parameters: bool | None = None  # None: False for LoRA-style adapters, else the Trainer's default
    """DDP: look for parameters without gradients (default: false for adapters)."""
    deepspeed: str | None = None
    """A DeepSpeed JSON config (ZeRO-2 or 3), e.g. examples/deepspeed/ds_z3_config.json."""
    fsdp: list[str] = Field(default_factory=list)  # e.g. "full_shard auto_wrap"
    """FSDP options, e.g. "full_shard auto_wrap"."""
    fsdp_config: str | dict | None = None
    """FSDP settings (a dict or a JSON file)."""
    dataloader_num_workers: int = Field(default=0, ge=0)
    """Worker processes that load batches (0: in the training process)."""
    logging_first_step: bool = True
    """Log the first step too."""
    # transformers' TrainingArguments fields passed on unchanged (TRAINER_PASSTHROUGH); defaults are its own.
    adam_beta1: float = Field(default=0.9, ge=0, lt=1)
    """AdamW's beta1."""
    adam_beta2: float = Field(default=0.999, ge=0, lt=1)
    """AdamW's beta2."""
    adam_epsilon: float = Field(default=1e-8, gt=0)
    """AdamW's epsilon."""
    optim_args: str | None = None
    """Extra optimizer arguments, "key=value,key=value" (transformers' optim_args)."""
    optim_target_modules: list[str] | str | None = None
    """Modules an optimizer that needs them targets (transformers' optim_target_modules)."""
    lr_scheduler_kwargs: dict[str, Any] | None = None
    """Extra arguments for the learning-rate scheduler, e.g. {min_lr: 1e-6} for cosine_with_min_lr."""
    label_smoothing_factor: float = Field(default=0.0, ge=0, lt=1)
    """Label smoothing of the cross-entropy (the Trainer's own loss path runs when it is set)."""
    load_best_model_at_end: bool = False
    """Keep the checkpoint with the best metric_for_best_model and load it at the end (needs evaluation)."""
    metric_for_best_model: str | None = None
    """The metric load_best_model_at_end compares (default: loss)."""
    greater_is_better: bool | None = None
    """Whether a larger metric_for_best_model is better (default: false for losses)."""
    data_seed: int | None = None
    """Seed of the data order (default: seed)."""
    full_determinism: bool = False
    """Deterministic algorithms everywhere (slower; transformers' enable_full_determinism)."""
    tf32: bool | None = None
    """TF32 matmuls on Ampere or newer CUDA GPUs."""
    eval_on_start: bool = False
    """Evaluate once before the first training step."""
    eval_accumulation_steps: int | None = Field(default=None, ge=1)
    """Evaluation steps whose outputs are gathered before moving them off the device."""
    eval_delay: float = Field(default=0, ge=0)
    """Steps (or epochs) to wait before the first evaluation."""
    bf16_full_eval: bool = False
    """Evaluate with the model in bf16."""
    fp16_full_eval: bool = False
    """Evaluate with the model in fp16."""
    dataloader_drop_last: bool = False
    """Drop the last incomplete batch of an epoch."""
    dataloader_pin_memory: bool = True
    """Pin host memory of batches (CUDA)."""
    dataloader_persistent_workers: bool = False
    """Keep data-loader worker processes alive between epochs."""
    dataloader_prefetch_factor: int | None = Field(default=None, ge=1)
    """Batches each data-loader worker loads ahead."""
    logging_strategy: Literal["steps", "epoch", "no"] = "steps"
    """When to log: every logging_steps, every epoch, or never."""
    log_level: Literal["debug", "info", "warning", "error", "critical", "passive"] = "passive"
    """transformers' log level on the main process."""
    log_level_replica: Literal["debug", "info", "warning", "error", "critical", "passive"] = "warning"
    """transformers' log level on the other processes."""
    log_on_each_node: bool = True
    """Log on the main process of every node (false: the first node only)."""
    logging_nan_inf_filter: bool = True
    """Leave nan/inf losses out of the logged mean."""
    save_on_each_node: bool = False
    """Every node writes checkpoints (nodes without a shared file system)."""
    torch_empty_cache_steps: int | None = Field(default=None, ge=1)
    """Empty the accelerator's cache every N steps (lower peak memory, slower)."""
    neftune_noise_alpha: float | None = Field(default=None, gt=0)
    """NEFTune: noise on the input embeddings while training (transformers' built-in), never at evaluation."""
    torch_compile_backend: str | None = None
    """The torch.compile backend (with torch_compile)."""
    torch_compile_mode: str | None = None
    """The torch.compile mode (with torch_compile)."""
    ddp_bucket_cap_mb: int | None = Field(default=None, ge=1)
    """DDP gradient bucket size in MB."""
    ddp_broadcast_buffers: bool | None = None
    """DDP: broadcast buffers at every forward."""
    ddp_static_graph: bool | None = None
    """DDP: the graph is the same at every step."""
    ddp_backend: Literal["nccl", "gloo", "mpi", "ccl", "hccl", "cncl", "mccl"] | None = None
    """The torch.distributed backend (default: nccl on CUDA, hccl on Ascend, gloo on CPU)."""
    skip_memory_metrics: bool = True
    """Skip the Trainer's own memory profiling (instill logs peak memory anyway)."""
    debug: str = ""
    """transformers' debug options, e.g. underflow_overflow."""
    ignore_data_skip: bool = False
    """On resume, do not skip the batches already seen (faster resume, different data order)."""
    restore_callback_states_from_checkpoint: bool = False
    """On resume, restore stateful callbacks from the checkpoint."""
    average_tokens_across_devices: bool = True
    """Normalise the loss by the tokens of every process (transformers' default)."""
    accelerator_config: dict[str, Any] | str | None = None
    """accelerate's Accelerator options (a dict or a JSON file)."""
    enable_jit_checkpoint: bool = False
    """transformers' just-in-time checkpoint on SIGTERM."""
    dataloader_in_order: bool = True
    """Keep batches in order across data-loader workers."""
    dataloader_multiprocessing_context: str | None = None
    """Start method of data-loader workers: fork, spawn or forkserver."""
    liger_kernel_config: dict[str, Any] | None = None
    """Options for Liger kernels (with enable_liger_kernel)."""
    save_only_model: bool = False
    """Checkpoints hold the weights only (no optimizer, scheduler or RNG state): smaller, but they cannot be resumed."""
    auto_find_batch_size: bool = False
    """On an out-of-memory error, halve per_device_train_batch_size and start training again (transformers', through
    accelerate's find_executable_batch_size)."""
    early_stopping_steps: int | None = Field(default=None, ge=1)
    """Stop training when metric_for_best_model (default: the eval loss) has not improved for this many evaluations
    (transformers' EarlyStoppingCallback; needs evaluation during training)."""
    # The torch profiler (LLaMA-Factory's ProfilerArguments): a schedule stepped once per optimizer step.
    enable_torch_profiler: bool = False
    """Record torch.profiler traces while training (TensorBoard / Chrome JSON, in profiler_output_dir/rank_N)."""
    profiler_output_dir: str | None = None
    """Where the profiler writes its traces (default: output_dir/profiler)."""
    profiler_wait_steps: int = Field(default=1, ge=0)
    """Profiler: optimizer steps skipped at the start of each cycle."""
    profiler_warmup_steps: int = Field(default=1, ge=0)
    """Profiler: warm-up steps of each cycle (traced, then discarded)."""
    profiler_active_steps: int = Field(default=1, ge=1)
    """Profiler: steps recorded in each cycle."""
    profiler_repeat: int = Field(default=1, ge=0)
    """Profiler: cycles to record (0: until training ends)."""
    profiler_record_shapes: bool = True
    """Profiler: record the shapes of operator inputs."""
    profiler_profile_memory: bool = True
    """Profiler: record tensor memory allocations."""
    profiler_with_stack: bool = True
    """Profiler: record the Python stack of each operator (slower)."""
    profile_modules: list[str] | None = None
    """Modules (comma-separated fnmatch patterns of module names, e.g. model.layers.*.mlp) whose mean forward and
    backward times are printed at every log step."""
    # Uploading to the Hugging Face Hub (transformers' Trainer uploads; instill checks the hub and token first).
    push_to_hub: bool = False
    """Upload output_dir to the Hugging Face Hub (as hub_strategy says, and at the end of training)."""
    hub_model_id: str | None = None
    """The hub repository to upload to, user/name (default: the output_dir's name under your account)."""
    hub_token: str | None = None
    """A Hugging Face token with write access (default: HF_TOKEN or `hf auth login`; never written to run files)."""
    hub_private_repo: bool | None = None
    """Create the repository private (an existing repository keeps its visibility)."""
    hub_strategy: Literal["end", "every_save", "checkpoint", "all_checkpoints"] = "every_save"
    """When to upload: end (once), every_save (the weights at each checkpoint), checkpoint (also the latest checkpoint,
    as last-checkpoint) or all_checkpoints (every checkpoint folder)."""
    hub_always_push: bool = False
    """Upload at every save even while the previous upload is still running (default: skip that save)."""
    hub_revision: str | None = None
    """The hub branch to upload to (default: main)."""

    _split = field_validator("report_to", "profile_modules", mode="before")(_comma_list)

    @field_validator("fsdp", mode="before")
    @classmethod
    def _fsdp(cls, v: Any) -> list[str]:
        if v not in (None, False) and not isinstance(v, str | list):
            raise ValueError("give fsdp options as text or a list, e.g. 'full_shard auto_wrap'")
        words = v.split() if isinstance(v, str) else list(v or [])
        if not all(isinstance(word, str) for word in words):
            raise ValueError("give fsdp options as text or a list, e.g. 'full_shard auto_wrap'")
        allowed = {"full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "hybrid_shard_zero2", "offload", "auto_wrap"}
        for word in words:
            if word not in allowed:
                raise ValueError(f"'{word}' is not an fsdp option (choose from {sorted(allowed)})")
        return words

    @field_validator("max_steps")
    @classmethod
    def _max_steps(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be a positive number of steps, or -1 to use num_train_epochs")
        return v

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, v: list[str]) -> list[str]:
        allowed = {"none", "tensorboard", "swanlab"}
        v = [name.strip().lower() for name in v]
        for name in v:
            if name not in allowed:
                raise ValueError(f"'{name}' is not a supported tracker here (choose from {sorted(allowed)})")
        if "none" in v and len(v) > 1:
            raise ValueError("'none' cannot be combined with trackers; list only the trackers")
        return list(dict.fromkeys(v)) or ["none"]


class EvalArgs(_Section):
    """`instill eval` / `instill predict` (and task metrics during training)."""

    do_eval: bool = False
    """Score the eval task (accuracy, entity F1, ...) at each evaluation and after training."""
    do_predict: bool = False
    """After training (or alone), predict on the eval data and write generated_predictions.jsonl."""
    eval_task: Literal["classification", "ner", "generation", "preference"] = "generation"
    """What the eval measures: classification, ner, generation or preference."""
    eval_mode: Literal["generate", "score"] = "generate"
    """generate (decode and read the answer) or score (rank candidate labels by likelihood; classification)."""
    eval_calibration: Literal["none", "batch"] = "none"
    """Score mode: batch divides each label's probability by its mean over the rows (removes label bias)."""
    labels: list[str] | None = None
    """Classification labels, one list for every row (default: the set of reference labels)."""
    choices_column: str | None = None
    """A row column holding that row's candidate labels."""
    label_column: str | None = None
    """The row column holding the gold label (default: the final assistant answer)."""
    label_template: str | None = None
    """The answer text around the label, e.g. '\\boxed{{label}}' (default: inferred from the references)."""
    eval_batch_size: int | None = Field(default=None, ge=1)
    """Rows per evaluation batch (default: per_device_eval_batch_size when given, else 8)."""
    eval_max_samples: int | None = Field(default=None, ge=1)
    """Evaluate at most this many rows."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Longest generated answer (default: 64 for classification, 512 otherwise)."""
    do_sample: bool = False
    """Sample instead of greedy decoding."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature (with do_sample; the online stages always sample with it)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling threshold (with do_sample; the online stages always sample with it)."""
    top_k: int | None = Field(default=None, ge=0)
    """Sample only from the k most likely tokens (with do_sample; default: the model's generation_config; 0: off)."""
    repetition_penalty: float | None = Field(default=None, gt=0)
    """Divide the scores of tokens already in the prompt or answer by this (1.0: none; default: the model's
    generation_config)."""
    num_beams: int = Field(default=1, ge=1)
    """Beam search with this many beams in eval and predict (1: none); chat and serve stream tokens, so they refuse it."""
    eval_num_beams: int | None = Field(default=None, ge=1)
    """Beams for eval, predict and the task metrics during training (default: num_beams)."""
    length_penalty: float = 1.0
    """Beam search: the exponent of the length that divides a beam's score (> 0 favours longer answers)."""
    max_length: int | None = Field(default=None, ge=1)
    """The longest prompt + answer in tokens, used when max_new_tokens is not set (in a batch, counted from the longest
    prompt, as transformers does); eval, predict and chat."""
    skip_special_tokens: bool = True
    """Leave special tokens (a template's control tokens) out of the decoded answers."""
    benchmark_dir: str | None = None
    """Folder of lm-eval task YAMLs and their data files for --benchmarks (offline; default: lm-eval's own tasks)."""
    task: list[str] | None = None
    """Benchmarks to run (LLaMA-Factory's eval key): mmlu_test, cmmlu_test, ceval_validation or lm-eval names."""
    task_dir: str | None = None
    """LLaMA-Factory's name for benchmark_dir (its default 'evaluation' is ignored when there is no such folder)."""
    n_shot: int | None = Field(default=None, ge=0)
    """Few-shot examples per benchmark question (default: each benchmark's own)."""
    save_dir: str | None = None
    """Where benchmarks.json goes (default: output_dir/eval)."""
    batch_size: int | None = Field(default=None, ge=1)
    """Benchmark questions per batch (default: eval_batch_size, else 8)."""

    _split = field_validator("labels", "task", mode="before")(_comma_list)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not [label for label in v if str(label).strip()]:
            raise ValueError("the label set is empty")
        return v

    @field_validator("label_template")
    @classmethod
    def _label_template(cls, v: str | None) -> str | None:
        if v is not None and "{label}" not in v:
            raise ValueError("must contain '{label}' where the label goes, e.g. '\\boxed{{label}}'")
        return v

    @model_validator(mode="after")
    def _modes(self) -> EvalArgs:
        if self.eval_mode == "score" and self.eval_task != "classification":
            raise ValueError("eval_mode: score ranks candidate labels, so it needs eval_task: classification")
        if self.eval_calibration != "none" and self.eval_mode != "score":
            raise ValueError("eval_calibration applies to eval_mode: score (it re-ranks label likelihoods)")
        return self


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


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelArgs,
    "data": DataArgs,
    "method": MethodArgs,
    "train": TrainArgs,
    "eval": EvalArgs,
    "export": ExportArgs,
}

# TrainArgs fields handed to transformers' TrainingArguments as they are.
TRAINER_PASSTHROUGH = (
    "adam_beta1", "adam_beta2", "adam_epsilon", "optim_args", "optim_target_modules", "lr_scheduler_kwargs",
    "label_smoothing_factor", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
    "full_determinism", "tf32", "eval_on_start", "eval_accumulation_steps", "eval_delay", "bf16_full_eval",
    "fp16_full_eval", "dataloader_drop_last", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "logging_strategy", "log_level", "log_level_replica", "log_on_each_node",
    "logging_nan_inf_filter", "save_on_each_node", "torch_empty_cache_steps", "neftune_noise_alpha",
    "torch_compile_backend", "torch_compile_mode", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph",
    "ddp_backend", "skip_memory_metrics", "debug", "ignore_data_skip", "restore_callback_states_from_checkpoint",
    "average_tokens_across_devices", "accelerator_config", "enable_jit_checkpoint", "dataloader_in_order",
    "dataloader_multiprocessing_context", "liger_kernel_config", "save_only_model", "auto_find_batch_size",
    "push_to_hub", "hub_model_id", "hub_private_repo", "hub_strategy", "hub_always_push", "hub_revision",
)
# Other names for implemented keys (transformers 5's new names, LLaMA-Factory's): key -> instill's key.
ALIASES = {
    "generation_max_length": "max_length",  # Seq2SeqTrainingArguments' names for the eval generation settings
    "generation_num_beams": "eval_num_beams",
    "activation_checkpointing": "gradient_checkpointing",
    "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs",
    "use_liger_kernel": "enable_liger_kernel",
}

KNOWN_KEYS: dict[str, str] = {key: name for name, cls in SECTIONS.items() for key in cls.model_fields}


class RunConfig(BaseModel):
    """The validated configuration of one run, in typed sections."""

    model_config = ConfigDict(extra="forbid")

    model: ModelArgs
    data: DataArgs
    method: MethodArgs
    train: TrainArgs
    eval: EvalArgs
    export: ExportArgs
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        for rule in CROSS_RULES:
            problem = rule(self)
            if problem:
                raise ValueError(problem)
        return self

    def flat(self) -> dict[str, Any]:
        """The resolved config as one flat dict, LLaMA-Factory style (what run_config.yaml holds)."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out.update(getattr(self, name).model_dump())
        return out



def check_training(config: RunConfig, source: str = "config") -> None:
    """Rules only a training run has (instill eval reads the same config without them)."""
    if config.train.do_train and not config.data.dataset:
        raise ConfigError(f"{source}: training needs 'dataset' (names from dataset_info.json in dataset_dir)")


def _default_of(key: str) -> Any:
    """The default of an implemented key (None when it has none)."""
    field = SECTIONS[KNOWN_KEYS[key]].model_fields[key]
    return None if field.is_required() else field.get_default(call_default_factory=True)


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, [*KNOWN_KEYS, *ALIASES, *POLICY], n=1, cutoff=0.75)
    return f" — did you mean '{close[0]}'?" if close else ""


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{printable(item)}' is not of the form key=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML lets the second win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: construct_mapping below reports it
                continue
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (lines {first} and {line}); keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def yaml_position(text: str, err: yaml.reader.ReaderError) -> str:
    """LINE:COLUMN (1-based) of the character a YAML ReaderError refuses."""
    line = text.count("\n", 0, err.position) + 1
    return f"{line}:{err.position - text.rfind(chr(10), 0, err.position)}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = read_text(path, error=ConfigError)
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 — a SafeLoader
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    except yaml.reader.ReaderError as err:  # a control character: no problem_mark, and a two-line str()
        raise ConfigError(f"{path}:{yaml_position(text, err)}: invalid YAML (character #x{err.character:04x} is "
                          "not allowed in YAML)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value")
    return raw


def build_config(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "config") -> RunConfig:
    """Validate a flat LLaMA-Factory-style mapping (plus key=value overrides) into a RunConfig."""
    flat = dict(raw)
    for item in overrides:
        key, value = _parse_override(item)
        flat[key] = value

    notes: list[str] = []
    # LLaMA-Factory's `use_swanlab: true` is our `report_to: swanlab`.
    if flat.pop("use_swanlab", False):
        trackers = _comma_list(flat.get("report_to")) or []
        flat["report_to"] = [r for r in trackers if r != "none"] + (["swanlab"] if "swanlab" not in trackers else [])
    # LLaMA-Factory checkpoints activations unless told not to; instill only when asked (gradient_checkpointing).
    if flat.pop("disable_gradient_checkpointing", False):
        flat["gradient_checkpointing"] = False
    if flat.get("do_predict") and "do_train" not in flat:  # LLaMA-Factory's predict YAMLs omit do_train
        flat["do_train"] = False
    for alias, key in ALIASES.items():
        if alias in flat and flat[alias] is None:  # transformers' default for its new names: unset
            del flat[alias]
        if alias in flat:
            if key in flat:
                raise ConfigError(f"{source}: '{alias}' and '{key}' are the same key; keep one")
            flat[key] = flat.pop(alias)
    chosen = learning_defaults(flat)
    if chosen:
        notes.append(defaults_note(chosen, flat))
        flat = {**flat, **chosen}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    ignored: list[str] = []
    for key, value in flat.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r} is not a string")
        why = refusal(key, value)
        if why:
            shown = f"{key}: {printable(str(value))}" if isinstance(value, str | int | float | bool) else key
            raise ConfigError(f"{source}: '{shown}': {why}")
        if key in POLICY:  # ignored, or a refused key at LLaMA-Factory's default (asks for nothing)
            if POLICY[key].action == "ignored":
                ignored.append(f"'{key}' ({POLICY[key].reason})")
            continue
        if key not in KNOWN_KEYS:
            raise ConfigError(f"{source}: unknown key '{printable(key)}'{_suggest(key)}")
        sections[KNOWN_KEYS[key]][key] = value
    stage = str(flat.get("stage", "sft"))
    if stage in STAGE_FACTS:
        # a key of another stage at its default asks for nothing (LLaMA-Factory's YAMLs spell defaults out)
        other = sorted(k for k in flat if k in STAGE_KEYS and k not in STAGE_FACTS[stage].own_keys
                       and flat[k] != _default_of(k))
        ignored += [f"'{k}' (read by stage {', '.join(n for n, f in STAGE_FACTS.items() if k in f.own_keys)}, "
                    f"not {stage})" for k in other]
    if ignored:
        notes.append("ignored: " + "; ".join(ignored))

    for key, value in flat.items():
        if _has_surrogate(value):  # YAML's "\ud800" escape: not text, and pydantic would raise UnicodeEncodeError
            raise ConfigError(f"{source}: '{key}' holds a lone surrogate (an escape such as \\ud800 that is no "
                              "character); write the character itself")
    if "model_name_or_path" not in sections["model"]:
        raise ConfigError(f"{source}: 'model_name_or_path' is required")

    try:
        built = {name: SECTIONS[name](**values) for name, values in sections.items()}
        return RunConfig(**built, notes=notes)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err, flat)}") from None


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return isinstance(value, list) and any(map(_has_surrogate, value))


def _describe(err: ValidationError, flat: dict[str, Any]) -> str:
    first = err.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if not isinstance(part, int)]
    key = next((part for part in reversed(loc) if part in KNOWN_KEYS), None)
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if key is None:
        return msg
    value = flat.get(key)
    hint = ""
    if isinstance(value, bool) and re.search(r"'(no|yes|off|on)'", msg):  # YAML 1.1 reads no/yes/off/on as booleans
        hint = f"; YAML reads an unquoted {'yes/on' if value else 'no/off'} as {str(value).lower()}: quote it"
    return f"invalid value for '{key}': {value!r} ({msg}){hint}"


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML file, apply key=value overrides, validate. Raises ConfigError naming the key.

    A reward plugin (`reward_funcs: my_rewards.py:fn`) is read from the YAML's folder: its path is made
    absolute here, so run_config.yaml names the file that ran."""
    config = build_config(load_yaml(path), overrides, source=str(path))
    funcs = config.method.reward_funcs
    if any(".py:" in f for f in funcs):
        here = Path(path).resolve().parent
        funcs = [str(here / f) if ".py:" in f and not Path(f.rpartition(":")[0]).is_absolute() else f
                 for f in funcs]
        config.method.reward_funcs = funcs
    return config


# Key names that hold a secret: ...token (hf_hub_token), ...api_key, ...password, ...secret.
# Not use_fast_tokenizer or ignore_pad_token_for_loss: the secret word must end the key.
SECRET_KEY = re.compile(r"(?:^|_)(?:token|api_key|key|password|secret)$", re.IGNORECASE)


def is_secret(key: Any, value: Any) -> bool:
    """True for a secret key holding a value worth hiding (None and booleans say nothing)."""
    return bool(SECRET_KEY.search(str(key))) and value not in (None, "", False, True)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as flat YAML (run_config.yaml); secret values are never written."""
    flat = config.flat()
    secrets = [k for k, v in flat.items() if is_secret(k, v)]
    text = yaml.safe_dump({k: None if k in secrets else v for k, v in flat.items()}, allow_unicode=True,
                          sort_keys=False)
    if secrets:
        text = "".join(f"{line}  # not saved (a secret)\n" if line.split(":")[0] in secrets else line + "\n"
                       for line in text.splitlines())
    Path(path).write_text(text, encoding="utf-8")
