"""The train section: the training loop, checkpoints, precision, trackers, distribution, the profiler and hub
uploads (`TrainArgs`), and the fields passed to transformers' TrainingArguments as they are.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from instill.config_section import _comma_list, _Section


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
    gradient checkpointing too). Under active dropout too, unless share_prefix_with_dropout is false."""
    share_prefix_with_dropout: bool = True
    """Share the prefix under active dropout (lora_dropout, attention dropout) too: every row then gets the
    prefix's one dropout mask instead of its own (not exact; measured within seed noise on Fudan-news, see
    bench/bench_prefix_dropout.py); false runs every row in full under dropout."""
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

