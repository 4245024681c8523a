"""RunConfig: one YAML (LLaMA-Factory key names), validated once, before any model loads.

Users write a flat YAML, exactly as for LLaMA-Factory. We route each key to one typed
section (model / data / method / train / eval) and validate with pydantic, so a bad
config fails at the door naming the key. Later stages receive only their section.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from instill.defaults import defaults_note, learning_defaults
from instill.errors import ConfigError
from instill.textfile import read_text


def _is_number_type(annotation: Any) -> bool:
    """int or float, alone or in a union (`int | None`); bool is a subclass of int but not a number here."""
    return annotation in (int, float) or any(_is_number_type(a) for a in get_args(annotation))


class _Section(BaseModel):
    # Numbers are strict for every key at once: finite (no .inf / .nan) and never a boolean.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

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
    adapter_name_or_path: list[str] | None = None
    trust_remote_code: bool = False
    cache_dir: str | None = None
    model_revision: str = "main"
    hf_hub_token: str | None = None
    use_fast_tokenizer: bool = True
    # "auto" lets transformers choose (sdpa on recent torch); "fa2" needs flash-attn and a CUDA GPU.
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = "auto"
    # Torch threads for this process; default: torch's own choice.
    torch_num_threads: int | None = Field(default=None, ge=1)
    # QLoRA: load the frozen base in 4 or 8 bits with bitsandbytes (lora / adalora only).
    quantization_bit: Literal[4, 8] | None = None
    quantization_type: Literal["nf4", "fp4"] = "nf4"
    double_quantization: bool = True
    # Vision-language models (LLaMA-Factory's keys): images are resized to lie within these pixel counts
    # before patching. The defaults (64x64 .. 256x256, at most 84 image tokens per image for Qwen2-VL) keep a
    # CPU run short; LLaMA-Factory's are 32*32 .. 768*768.
    image_max_pixels: int = Field(default=256 * 256, ge=28 * 28)
    image_min_pixels: int = Field(default=64 * 64, ge=1)

    _split = field_validator("adapter_name_or_path", mode="before")(_comma_list)


class DataArgs(_Section):
    dataset: list[str] | None = None
    dataset_dir: str = "data"
    # Pack each batch's rows into rows of cutoff_len tokens with exact per-sequence masks (data/collate.py).
    # packing and neat_packing are the same here: instill never lets packed sequences see each other.
    packing: bool = False
    neat_packing: bool = False
    eval_dataset: list[str] | None = None
    template: str = "auto"
    cutoff_len: int = Field(default=2048, ge=8)
    max_samples: int | None = Field(default=None, ge=1)
    # A fraction in (0, 1) or an absolute count >= 1 of held-out samples.
    val_size: float = Field(default=0.0, ge=0)
    # Tokenized data is cached by fingerprint (data/dataset.py); true rebuilds it.
    overwrite_cache: bool = False
    # Where the tokenized data is saved and loaded (LLaMA-Factory's key); default: the instill cache.
    tokenized_path: str | None = None
    # Read and tokenize lazily as training consumes rows (data larger than memory); needs max_steps.
    streaming: bool = False
    preprocessing_num_workers: int | None = Field(default=None, ge=1)
    train_on_prompt: bool = False
    mask_history: bool = False
    # Values for `{{name}}` placeholders in datasets (LLaMA-Factory's identity.json uses name/author).
    dataset_placeholders: dict[str, str] = Field(default_factory=dict)
    # Text in a message that spells a special token (`<|im_end|>`) is tokenized as text; true makes it the
    # control token, as older tools did.
    allow_special_tokens_in_data: bool = False

    _split = field_validator("dataset", "eval_dataset", mode="before")(_comma_list)

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("must be a fraction in [0, 1) or a whole number of samples")
        return v


FINETUNING_TYPES = ("lora", "full", "freeze")


class MethodArgs(_Section):
    stage: Literal["sft", "pt", "dpo", "kto", "rm"] = "sft"  # train/stages.py: STAGES
    finetuning_type: Literal["lora", "adalora", "full", "freeze"] = "lora"
    lora_target: list[str] = Field(default_factory=lambda: ["all"])
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: int | None = Field(default=None, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    use_rslora: bool = False
    use_dora: bool = False
    # PiSSA: initialise adapters from the principal singular vectors (fast SVD with pissa_iter iterations;
    # -1 = exact SVD). The saved adapter is converted so it applies to the original base.
    pissa_init: bool = False
    pissa_iter: int = Field(default=16, ge=-1)
    additional_target: list[str] | None = None
    # AdaLoRA: start at adalora_init_r, prune to an average of adalora_target_r by importance.
    adalora_init_r: int = Field(default=12, ge=1)
    adalora_target_r: int = Field(default=8, ge=1)
    adalora_tinit: int = Field(default=0, ge=0)
    adalora_tfinal: int = Field(default=0, ge=0)
    adalora_delta_t: int = Field(default=1, ge=1)
    adalora_orth_reg_weight: float = Field(default=0.5, ge=0)
    freeze_trainable_layers: int = Field(default=2)
    freeze_trainable_modules: list[str] = Field(default_factory=lambda: ["all"])
    freeze_extra_modules: list[str] | None = None
    # Vision-language models: the vision tower and the projector stay frozen (no LoRA on them) unless false.
    freeze_vision_tower: bool = True
    freeze_multi_modal_projector: bool = True
    # Preference stages (train/preference.py, train/reward.py), LLaMA-Factory's names.
    pref_beta: float = Field(default=0.1, gt=0)
    pref_ftx: float = Field(default=0.0, ge=0)  # SFT loss on the chosen answer mixed into DPO
    pref_loss: Literal["sigmoid", "ipo", "hinge", "orpo", "simpo"] = "sigmoid"
    dpo_label_smoothing: float = Field(default=0.0, ge=0, le=0.5)
    simpo_gamma: float = Field(default=0.5, ge=0)
    kto_chosen_weight: float = Field(default=1.0, gt=0)
    kto_rejected_weight: float = Field(default=1.0, gt=0)
    ref_model: str | None = None  # full fine-tuning: the reference model (default: a frozen copy of the base)

    _split = field_validator(
        "lora_target", "additional_target", "freeze_trainable_modules", "freeze_extra_modules", mode="before"
    )(_comma_list)

    @field_validator("freeze_trainable_layers")
    @classmethod
    def _nonzero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must be non-zero (positive: last N layers, negative: first N layers)")
        return v

    @model_validator(mode="after")
    def _method_options(self) -> MethodArgs:
        if self.adalora_target_r > self.adalora_init_r:
            raise ValueError("adalora_target_r must not exceed adalora_init_r")
        if self.pissa_init and self.use_dora:
            raise ValueError("pissa_init and use_dora cannot be combined")
        return self


class TrainArgs(_Section):
    do_train: bool = True
    output_dir: str = "saves/run"
    overwrite_output_dir: bool = False
    logging_steps: int = Field(default=10, ge=1)
    save_steps: int = Field(default=500, ge=1)
    save_strategy: Literal["steps", "epoch", "no"] = "steps"
    save_total_limit: int | None = Field(default=None, ge=1)
    plot_loss: bool = False
    per_device_train_batch_size: int = Field(default=1, ge=1)
    per_device_eval_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    num_train_epochs: float = Field(default=3.0, gt=0)
    max_steps: int = Field(default=-1)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
        "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay",
    ] = "cosine"
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)
    optim: str = "adamw_torch"
    # auto: bf16 where the hardware runs it natively (CUDA with bf16, a CPU with AMX / AVX512-BF16), else fp32.
    bf16: bool | Literal["auto", "force"] = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    # Batches of similar lengths (transformers' LengthGroupedSampler): less padding, same data each epoch.
    group_by_length: bool = True
    # A prefix every row of a batch shares (a system prompt and instruction) runs once per batch (exact).
    share_prefix: bool = True
    torch_compile: bool = False  # CUDA only
    enable_liger_kernel: bool = False  # CUDA only, needs the liger-kernel package
    seed: int = 42
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    eval_steps: int | None = Field(default=None, ge=1)
    resume_from_checkpoint: bool | str | None = None
    report_to: list[str] = Field(default_factory=lambda: ["none"])
    run_name: str | None = None
    # SwanLab (report_to: swanlab). auto: cloud when an API key is configured (swanlab login), else local
    # (watch with `swanlab watch <swanlab_logdir>`; needs swanlab[dashboard]). offline: files for `swanlab sync`.
    swanlab_mode: Literal["auto", "local", "offline", "cloud"] = "auto"
    swanlab_project: str | None = None  # default: instill
    swanlab_workspace: str | None = None
    swanlab_run_name: str | None = None  # default: run_name, else the output_dir's name
    swanlab_logdir: str | None = None  # default: output_dir/swanlog
    ddp_timeout: int = Field(default=1800, ge=1)
    # Multi-process (torchrun / accelerate launch); checked and passed on by train/distributed.py.
    ddp_find_unused_parameters: bool | None = None  # None: False for LoRA-style adapters, else the Trainer's default
    deepspeed: str | None = None  # a DeepSpeed JSON config, e.g. examples/deepspeed/ds_z3_config.json
    fsdp: list[str] = Field(default_factory=list)  # e.g. "full_shard auto_wrap"
    fsdp_config: str | dict | None = None
    dataloader_num_workers: int = Field(default=0, ge=0)
    logging_first_step: bool = True

    _split = field_validator("report_to", mode="before")(_comma_list)

    @field_validator("fsdp", mode="before")
    @classmethod
    def _fsdp(cls, v: Any) -> list[str]:
        words = v.split() if isinstance(v, str) else list(v or [])
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
    # `instill train` with do_predict: after training (or alone, when do_train is not set), run the
    # eval task on eval_dataset, as `instill eval` would. LLaMA-Factory's predict YAMLs set both keys;
    # predictions are always generated (or scored), so predict_with_generate is accepted and ignored.
    do_predict: bool = False
    # preference: chosen-vs-rejected accuracy on ranking data (evaluate/preference.py)
    eval_task: Literal["classification", "ner", "generation", "preference"] = "generation"
    # generate: decode greedily and read a label from the text; score: rank candidate labels by log-likelihood.
    eval_mode: Literal["generate", "score"] = "generate"
    # score mode only. batch: divide each label's probability by its mean over the evaluated rows
    # (batch calibration), which removes a model's bias toward some labels; none: raw likelihoods.
    eval_calibration: Literal["none", "batch"] = "none"
    # Classification labels: one list for every row, or a row column holding that row's candidates
    # (a list or a string such as "['Art', 'Sports']"); with neither, the set of reference labels.
    labels: list[str] | None = None
    choices_column: str | None = None
    # Row column holding the gold label; default: the final assistant answer.
    label_column: str | None = None
    # The answer text around the label, e.g. '\boxed{{label}}'; default: inferred from the references.
    label_template: str | None = None
    # Default: per_device_eval_batch_size when given, else 8.
    eval_batch_size: int | None = Field(default=None, ge=1)
    eval_max_samples: int | None = Field(default=None, ge=1)
    # Default: 64 for classification, 512 otherwise. Generation always stops at the template's end of turn.
    max_new_tokens: int | None = Field(default=None, ge=1)
    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)

    _split = field_validator("labels", mode="before")(_comma_list)

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
        # Non-default values only, so a resolved run_config.yaml (which lists every key) loads back.
        if not self.do_sample and (self.temperature != 1.0 or self.top_p != 1.0):
            raise ValueError("temperature/top_p apply only when sampling; set do_sample: true (greedy otherwise)")
        return self


class ExportArgs(_Section):
    """`instill export`: merge adapters into the base and save a standalone model."""

    export_dir: str | None = None
    export_size: int = Field(default=5, ge=1)  # shard size in GB
    export_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelArgs,
    "data": DataArgs,
    "method": MethodArgs,
    "train": TrainArgs,
    "eval": EvalArgs,
    "export": ExportArgs,
}

# LLaMA-Factory keys for features this build does not have. Harmless ones are accepted with a
# note; the others are refused with a message saying what to do instead.
_ACCEPTED_AND_IGNORED = {
    "include_num_input_tokens_seen": "tokens/s is always logged",
    "logging_dir": "TensorBoard events go to output_dir/runs",
    "disable_tqdm": "progress bars are always shown",
    "predict_with_generate": None,  # predictions are always generated (or scored)
    "ignore_pad_token_for_loss": None,  # padding never carries a label
    "mix_strategy": None,  # refused below unless concat
    "video_max_pixels": "video datasets are refused on this build (images only)",
    "video_min_pixels": "video datasets are refused on this build (images only)",
    "video_fps": "video datasets are refused on this build (images only)",
    "video_maxlen": "video datasets are refused on this build (images only)",
    "save_only_model": None,  # LLaMA-Factory's DPO/KTO/RM examples write save_only_model: false
}
_REFUSED = {
    "use_unsloth": "unsloth is not supported; remove 'use_unsloth'",
}
_REFUSED_VALUES = {
    ("stage", "ppo"): "PPO was removed from trl (the library instill trains on); use stage: dpo or kto",
}
_FALSE_ONLY = {
    "save_only_model": "checkpoints always hold the optimizer state (for resuming); set save_only_model: false",
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
        t, d = self.train, self.data
        if t.bf16 is True and t.fp16:
            raise ValueError("bf16 and fp16 are both true; choose one")
        if d.val_size and d.eval_dataset:
            raise ValueError("give either val_size or eval_dataset, not both")
        if t.eval_strategy != "no" and not (d.val_size or d.eval_dataset):
            raise ValueError(f"eval_strategy is '{t.eval_strategy}' but there is no val_size or eval_dataset")
        if self.model.quantization_bit and self.method.finetuning_type not in ("lora", "adalora"):
            raise ValueError("quantization_bit (QLoRA) needs finetuning_type lora or adalora: quantized weights cannot be trained")
        if self.model.quantization_bit and self.method.pissa_init:
            raise ValueError("pissa_init needs full-precision base weights; remove quantization_bit")
        if d.streaming and t.max_steps < 0:
            raise ValueError("streaming: true needs max_steps (a stream has no length to count epochs by)")
        if d.streaming and d.val_size:
            raise ValueError("streaming: true cannot hold out val_size; give eval_dataset instead")
        if d.streaming and self.method.stage in ("dpo", "kto", "rm"):
            raise ValueError(f"streaming: true is for sft/pt; stage {self.method.stage} reads its pairs up front")
        if self.data.mask_history and self.data.train_on_prompt:
            raise ValueError("mask_history and train_on_prompt cannot both be true")
        return self

    def flat(self) -> dict[str, Any]:
        """The resolved config as one flat dict, LLaMA-Factory style (what run_config.yaml holds)."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out.update(getattr(self, name).model_dump())
        return out


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, list(KNOWN_KEYS) + list(_REFUSED), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
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


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(read_text(path, error=ConfigError), Loader=_UniqueKeyLoader)  # noqa: S506 — a SafeLoader
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
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
    if flat.get("do_predict") and "do_train" not in flat:  # LLaMA-Factory's predict YAMLs omit do_train
        flat["do_train"] = False
    chosen = learning_defaults(flat)
    if chosen:
        notes.append(defaults_note(chosen, flat))
        flat = {**flat, **chosen}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in flat.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r} is not a string")
        if key in _REFUSED:
            raise ConfigError(f"{source}: '{key}': {_REFUSED[key]}")
        if isinstance(value, str) and (key, value) in _REFUSED_VALUES:
            raise ConfigError(f"{source}: '{key}: {value}': {_REFUSED_VALUES[key, value]}")
        if key in _FALSE_ONLY and value:
            raise ConfigError(f"{source}: '{key}': {_FALSE_ONLY[key]}")
        if key == "mix_strategy" and value not in (None, "concat"):
            raise ConfigError(f"{source}: 'mix_strategy': only concat is built; mix by ratios with `instill data mix`")
        if key in _ACCEPTED_AND_IGNORED:
            if _ACCEPTED_AND_IGNORED[key]:
                notes.append(f"'{key}' ignored: {_ACCEPTED_AND_IGNORED[key]}")
            continue
        if key not in KNOWN_KEYS:
            raise ConfigError(f"{source}: unknown key '{key}'{_suggest(key)}")
        sections[KNOWN_KEYS[key]][key] = value

    if "model_name_or_path" not in sections["model"]:
        raise ConfigError(f"{source}: 'model_name_or_path' is required")

    try:
        built = {name: SECTIONS[name](**values) for name, values in sections.items()}
        return RunConfig(**built, notes=notes)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err, flat)}") from None


def _describe(err: ValidationError, flat: dict[str, Any]) -> str:
    first = err.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if not isinstance(part, int)]
    key = next((part for part in reversed(loc) if part in KNOWN_KEYS), None)
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if key is None:
        return msg
    return f"invalid value for '{key}': {flat.get(key)!r} ({msg})"


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML file, apply key=value overrides, validate. Raises ConfigError naming the key."""
    return build_config(load_yaml(path), overrides, source=str(path))


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
