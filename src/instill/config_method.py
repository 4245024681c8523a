"""The method section: the stage, how the model is trained (LoRA, AdaLoRA, OFT, freeze, full), preference and
online-stage settings, and the optimizers beyond transformers' `optim` (`MethodArgs`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from instill.config_section import _comma_list, _Section
from instill.stage_facts import STAGE_NAMES


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

