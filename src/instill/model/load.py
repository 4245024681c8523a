"""Tokenizer and model: dtype, device, attention kernel, gradient checkpointing.

Precision policy (one place, so it is easy to reason about):
- fp16 needs a GPU or NPU; bf16 needs a GPU that supports it, or runs on the CPU with
  autocast (2-3x faster than fp32 on AMX CPUs). On a CPU without bf16 instructions torch emulates
  bf16 (~30-70x slower than fp32), so `bf16: true` there runs in fp32 and says so once; `bf16: force`
  insists on bf16, `bf16: auto` picks bf16 only where the hardware runs it.
- lora / freeze: frozen base weights are stored in the compute dtype (bf16/fp16) to save
  memory; trainable parameters are upcast to fp32 (see adapters.py).
- full: weights stay fp32 (the optimizer's master copy); autocast does the bf16/fp16 math.

Device: the accelerator accelerate would pick (CUDA, Ascend NPU, MPS, XPU, else CPU); under torchrun each
rank's own (LOCAL_RANK). Under ZeRO-3 DeepSpeed places the shards; a 4/8-bit base is placed at load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from instill.config import ModelArgs
from instill.console import say
from instill.errors import ConfigError, ModelError
from instill.model.processor import auto_model_class
from instill.ranks import accelerator_type, local_rank

log = logging.getLogger(__name__)


@dataclass
class Precision:
    """The configured bf16 / fp16, resolved for this machine: `bf16` is a bool after construction.

    bf16 "auto": bf16 where native_bf16() says the hardware runs it; true: the same on a CPU (fp32 where
    bf16 would be emulated; `fell_back` records it), bf16 elsewhere; "force": bf16 whatever the hardware.
    """

    bf16: bool | str = False
    fp16: bool = False
    forced: bool = field(default=False, init=False)  # bf16: force
    fell_back: bool = field(default=False, init=False)  # bf16: true became fp32 on a CPU without bf16 instructions

    def __post_init__(self) -> None:
        if self.bf16 == "auto":
            self.bf16 = not self.fp16 and native_bf16()
        elif self.bf16 == "force":
            self.bf16 = self.forced = True
        elif self.bf16 and device_type() == "cpu" and not native_bf16():
            self.bf16, self.fell_back = False, True

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32


def device_type() -> str:
    """cuda, npu, mps, xpu or cpu: the accelerator accelerate would pick here."""
    return accelerator_type()


def this_device() -> torch.device:
    """This process's device: under torchrun / accelerate launch the accelerator numbered LOCAL_RANK (so N ranks
    use N devices, not all device 0); mps and cpu have no index."""
    kind = device_type()
    return torch.device(kind, local_rank()) if kind in ("cuda", "npu", "xpu") else torch.device(kind)


def native_bf16() -> bool:
    """Whether bf16 math runs in hardware here: a CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16.

    On other CPUs (AVX2 only) torch emulates bf16, measured ~30x slower than fp32 matmuls.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's own CPU feature probes
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def check_precision(precision: Precision) -> None:
    """Fail in one line when the configured precision needs hardware that is absent; say once when bf16: true
    fell back to fp32, or when bf16: force runs emulated (it works, slowly)."""
    if precision.bf16 and precision.fp16:
        raise ConfigError("bf16 and fp16 are both set; choose one")
    if precision.fp16 and device_type() == "cpu":
        raise ConfigError("fp16: true needs a GPU or NPU; on the CPU use bf16: true (autocast) or neither")
    if precision.bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError("bf16: true but this GPU does not support bfloat16; use fp16: true instead")
    if precision.fell_back:
        _say_once("bf16: true, but this CPU has no bf16 instructions (no AMX or AVX512-BF16): running in fp32, "
                  "as emulated bf16 is ~30-70x slower here (bf16: force insists on bf16)")
    elif precision.bf16 and device_type() == "cpu" and not native_bf16():
        _say_once("bf16: force, but this CPU has no bf16 instructions (no AMX or AVX512-BF16): bf16 is emulated "
                  "and runs ~30-70x slower than fp32 here; bf16: true (or false) trains in fp32")


def check_speed_flags(torch_compile: bool, liger_kernel: bool) -> None:
    """torch_compile and enable_liger_kernel are GPU levers: one line when they cannot work here."""
    import importlib.util

    if torch_compile and not torch.cuda.is_available():
        raise ConfigError("torch_compile: true needs a CUDA GPU in instill (on the CPU it compiles for minutes "
                          "for little gain); remove it")
    if liger_kernel and not torch.cuda.is_available():
        raise ConfigError("enable_liger_kernel: true needs a CUDA GPU (Liger's kernels are Triton); remove it")
    if liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError("enable_liger_kernel: true needs the liger-kernel package: pip install liger-kernel")


_said: set[str] = set()  # precision lines already printed by this process (train, then load_model, check twice)


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        say(line)


def _attn_implementation(choice: str) -> str | None:
    if choice == "auto":
        return None
    if choice == "fa2":
        if not torch.cuda.is_available():
            raise ConfigError("flash_attn: fa2 needs a CUDA GPU; use flash_attn: auto on the CPU")
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError("flash_attn: fa2 needs the flash-attn package (pip install flash-attn --no-build-isolation)")
        return "flash_attention_2"
    return {"sdpa": "sdpa", "disabled": "eager"}[choice]


def _quantization(args: ModelArgs, precision: Precision) -> dict[str, Any]:
    """from_pretrained kwargs for a bitsandbytes 4/8-bit base (QLoRA)."""
    import importlib.util

    if device_type() == "npu":
        raise ConfigError("quantization_bit (bitsandbytes) does not run on Ascend NPUs; remove quantization_bit")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantization_bit needs bitsandbytes (pip install 'bitsandbytes>=0.45')")
    from transformers import BitsAndBytesConfig

    if args.quantization_bit == 4:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=args.quantization_type,
            bnb_4bit_use_double_quant=args.double_quantization,
            bnb_4bit_compute_dtype=precision.compute_dtype,
            bnb_4bit_quant_storage=torch.uint8,
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    # bitsandbytes >= 0.45 also runs on the CPU; the quantized weights are placed at load time.
    return {"quantization_config": config, "device_map": {"": this_device()}}


# Any one of these makes a folder a tokenizer folder; without them transformers quietly builds an empty
# tokenizer and the failure shows up later, blamed on the chat template or cutoff_len.
TOKENIZER_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("vocab.txt",),
                   ("spiece.model",), ("sentencepiece.bpe.model",))


def check_tokenizer_files(model_dir: Path) -> None:
    """Raise ModelError naming the missing tokenizer files when `model_dir` holds none of TOKENIZER_FILES."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir() or any(model_dir.glob("*.tiktoken")):
        return
    if any(all((model_dir / name).is_file() for name in group) for group in TOKENIZER_FILES):
        return
    partial = [name for group in TOKENIZER_FILES for name in group if (model_dir / name).is_file()]
    wanted = " or ".join(" + ".join(group) for group in TOKENIZER_FILES[:4])
    have = f" (has only {', '.join(partial)})" if partial else ""
    raise ModelError(f"{model_dir}: no tokenizer files: missing {wanted}{have}; copy them from the base model")


def load_tokenizer(args: ModelArgs, model_dir: Path) -> Any:
    """The fast tokenizer in `model_dir` (resolved once per run by `hub.resolve_model`), with a pad token."""
    from transformers import AutoTokenizer

    if not args.trust_remote_code:
        check_tokenizer_files(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir, trust_remote_code=args.trust_remote_code, use_fast=args.use_fast_tokenizer
        )
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelError(f"{model_dir}: the tokenizer needs custom code; set trust_remote_code: true if you trust it") from None
        raise ModelError(f"{model_dir}: cannot load the tokenizer ({err})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{model_dir}: a fast (Rust) tokenizer is required for label masking; set use_fast_tokenizer: true")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        log.info("tokenizer has no pad token; using eos (%s) for padding", tokenizer.eos_token)
    return tokenizer


def load_model(args: ModelArgs, precision: Precision, finetuning_type: str, model_dir: Path,
               gradient_checkpointing: bool = False, head: str = "lm",
               checkpointing_kwargs: dict[str, Any] | None = None, rope: dict[str, Any] | None = None) -> Any:
    """The base causal LM (or vision-language model, `model/processor.py`; head "score": with a one-output
    value head, a reward model), ready for an adapter method to be applied. `checkpointing_kwargs` (default:
    `use_reentrant` from the config's use_reentrant_gc) go to the model's checkpointing switch; `rope`: RoPE
    scaling's config overrides (`model/rope.py`)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.integrations import is_deepspeed_zero3_enabled

    check_precision(precision)
    dtype = torch.float32 if finetuning_type == "full" else precision.compute_dtype
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": args.trust_remote_code, **(rope or {})}
    if args.quantization_bit:
        kwargs.update(_quantization(args, precision))
    attn = _attn_implementation(args.flash_attn)
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        if head == "score":
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, **kwargs)
        else:
            model = auto_model_class(model_dir).from_pretrained(model_dir, **kwargs)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelError(f"{model_dir}: the model needs custom code; set trust_remote_code: true if you trust it") from None
        raise ModelError(f"{model_dir}: cannot load the model ({err})") from None
    except OSError as err:
        raise ModelError(f"{model_dir}: cannot load the model ({str(err).splitlines()[0]})") from None
    if not (args.quantization_bit or is_deepspeed_zero3_enabled()):  # ZeRO-3 shards it; a 4/8-bit base is placed
        model.to(this_device())
    checkpointing_kwargs = checkpointing_kwargs or {"use_reentrant": args.use_reentrant_gc}
    if args.quantization_bit:
        from peft import prepare_model_for_kbit_training

        # Casts norms to fp32 and (with gradient checkpointing) enables input grads for the frozen 4/8-bit base.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs=checkpointing_kwargs)
    if gradient_checkpointing:
        # transformers 5.2x renamed gradient checkpointing to activation checkpointing.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
        model.enable_input_require_grads()  # so checkpointed blocks see a grad-requiring input under PEFT
        model.config.use_cache = False
    return model
