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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from instill.config import ModelArgs
from instill.console import say
from instill.errors import ConfigError, ModelError
from instill.hub import check_json
from instill.model.processor import auto_model_class
from instill.model.vocab import add_new_tokens, resize_embeddings
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
    pure_bf16: bool = False  # weights in bf16 throughout: no fp32 master copy, no autocast (LLaMA-Factory's pure_bf16)
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
        return torch.bfloat16 if self.bf16 or self.pure_bf16 else torch.float16 if self.fp16 else torch.float32


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
    if (precision.bf16 or precision.pure_bf16) and precision.fp16:
        raise ConfigError("bf16 and fp16 are both set; choose one")
    if precision.pure_bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError("pure_bf16: true but this GPU does not support bfloat16; use fp16: true instead")
    if precision.fp16 and device_type() == "cpu":
        raise ConfigError("fp16: true needs a GPU or NPU; on the CPU use bf16: true (autocast) or neither")
    if precision.bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError("bf16: true but this GPU does not support bfloat16; use fp16: true instead")
    if precision.fell_back:
        _say_once("bf16: true, but this CPU has no bf16 instructions (no AMX or AVX512-BF16): running in fp32, "
                  "as emulated bf16 is ~30-70x slower here (bf16: force insists on bf16)")
    elif precision.pure_bf16 and device_type() == "cpu" and not native_bf16():
        _say_once("pure_bf16: true, but this CPU has no bf16 instructions (no AMX or AVX512-BF16): bf16 is emulated "
                  "and runs ~30-70x slower than fp32 here")
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


def quantization_kwargs(bits: int, args: ModelArgs, precision: Precision, key: str = "quantization_bit",
                        auto_device_map: bool = False) -> dict[str, Any]:
    """from_pretrained kwargs for a bitsandbytes 4/8-bit model (QLoRA's base, a DPO reference); `key` names the
    setting in errors. `auto_device_map`: device_map auto (quantization_device_map: auto, inference)."""
    import importlib.util

    if device_type() == "npu":
        raise ConfigError(f"{key} (bitsandbytes) does not run on Ascend NPUs; remove {key}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{key} needs bitsandbytes (pip install 'bitsandbytes>=0.45')")
    from transformers import BitsAndBytesConfig

    if bits == 4:
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
    return {"quantization_config": config, "device_map": "auto" if auto_device_map else {"": this_device()}}


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


def tokenizer_dir(model_dir: str | Path, adapters: Sequence[str | Path] = (), subfolder: str | None = None) -> Path:
    """Where the tokenizer and its chat template come from: the last adapter directory holding one, else the model.

    Training saves the tokenizer beside the adapter, with the chat template it trained with written into it,
    so prompts at inference time render exactly as in training even when the base has another template.
    """
    for path in reversed(list(adapters)):
        for folder in ((Path(path) / subfolder, Path(path)) if subfolder else (Path(path),)):
            if (folder / "tokenizer_config.json").is_file():
                return folder
    return Path(model_dir)


def load_tokenizer(args: ModelArgs, model_dir: Path) -> Any:
    """The fast tokenizer in `model_dir` (resolved once per run by `hub.resolve_model`), with a pad token and the
    tokens add_tokens / add_special_tokens / new_special_tokens_config add (`model/vocab.py`)."""
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
    add_new_tokens(tokenizer, args)
    return tokenizer


# LLaMA-Factory's `model_utils/moe.py`: the MoE architectures whose router loss it weighs, by config attribute.
MOE_AUX_LOSS = {
    **dict.fromkeys(("ernie4_5_moe", "granitemoe", "jamba", "llama4", "mixtral", "olmoe", "phimoe", "qwen2_moe",
                     "qwen3_moe"), "router_aux_loss_coef"),
    "deepseek": "aux_loss_alpha", "jetmoe": "aux_loss_coef", "dbrx": None,
}


def moe_overrides(args: ModelArgs, model_dir: Path) -> dict[str, Any]:
    """Config overrides for moe_aux_loss_coef (training): the router's loss weight, and router logits output so the
    model adds that loss; a model without routed experts is refused by name."""
    if args.moe_aux_loss_coef is None:
        return {}
    path = Path(model_dir) / "config.json"
    kind = check_json(path).get("model_type") if path.is_file() else None
    if kind not in MOE_AUX_LOSS:
        raise ConfigError(f"moe_aux_loss_coef: model_type '{kind}' has no mixture-of-experts router loss "
                          f"(LLaMA-Factory weighs it for {', '.join(sorted(MOE_AUX_LOSS))}); remove moe_aux_loss_coef")
    overrides: dict[str, Any] = {"output_router_logits": True}
    if MOE_AUX_LOSS[kind]:
        overrides[MOE_AUX_LOSS[kind]] = args.moe_aux_loss_coef
    return overrides


def _upcast_layernorm(model: Any) -> None:
    """Norm weights in fp32 (LLaMA-Factory: 1-D parameters whose name holds "norm" or "ln")."""
    for name, param in model.named_parameters():
        if param.ndim == 1 and ("norm" in name or "ln" in name):
            param.data = param.data.to(torch.float32)


def _fp32_output(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output.to(torch.float32)


def _upcast_lmhead_output(model: Any) -> None:
    """The LM head's output (the logits) cast to fp32 by a forward hook, when the head is not fp32 already."""
    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and head.weight.dtype != torch.float32:
        head.register_forward_hook(_fp32_output)


def load_model(args: ModelArgs, precision: Precision, finetuning_type: str, model_dir: Path,
               gradient_checkpointing: bool = False, head: str = "lm",
               checkpointing_kwargs: dict[str, Any] | None = None, rope: dict[str, Any] | None = None,
               tokenizer: Any = None, inference: bool = False) -> Any:
    """The base causal LM (or vision-language model, `model/processor.py`; head "score": with a one-output
    value head, a reward model), ready for an adapter method to be applied. `checkpointing_kwargs` (default:
    `use_reentrant` from the config's use_reentrant_gc) go to the model's checkpointing switch; `rope`: RoPE
    scaling's config overrides (`model/rope.py`). With `tokenizer`, embeddings grow to fit its new tokens
    (`model/vocab.py`). `inference`: loaded for chat / predict / serve / eval (infer_dtype, quantization_device_map;
    no training-only settings)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.integrations import is_deepspeed_zero3_enabled

    check_precision(precision)
    dtype = torch.float32 if finetuning_type == "full" and not precision.pure_bf16 else precision.compute_dtype
    if inference and args.infer_dtype != "auto":
        dtype = getattr(torch, args.infer_dtype)
    overrides = {**(rope or {}), **({} if inference else moe_overrides(args, model_dir))}
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": args.trust_remote_code, **overrides}
    if args.quantization_bit:
        kwargs.update(quantization_kwargs(args.quantization_bit, args, precision,
                                          auto_device_map=inference and args.quantization_device_map == "auto"))
    attn = _attn_implementation(args.flash_attn)
    if attn:
        kwargs["attn_implementation"] = attn
    model_class = AutoModelForSequenceClassification if head == "score" else auto_model_class(model_dir)
    if head == "score":
        kwargs["num_labels"] = 1
    try:
        if args.train_from_scratch and not inference:
            config = AutoConfig.from_pretrained(model_dir, trust_remote_code=args.trust_remote_code,
                                                **{k: v for k, v in kwargs.items() if k not in ("dtype", "trust_remote_code")})
            model = model_class.from_config(config, dtype=dtype, trust_remote_code=args.trust_remote_code)
        else:
            model = model_class.from_pretrained(model_dir, **kwargs)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelError(f"{model_dir}: the model needs custom code; set trust_remote_code: true if you trust it") from None
        raise ModelError(f"{model_dir}: cannot load the model ({err})") from None
    except OSError as err:
        raise ModelError(f"{model_dir}: cannot load the model ({str(err).splitlines()[0]})") from None
    if not (args.quantization_bit or is_deepspeed_zero3_enabled()):  # ZeRO-3 shards it; a 4/8-bit base is placed
        model.to(this_device())
    if tokenizer is not None:
        resize_embeddings(model, tokenizer, None if inference else args)
    checkpointing_kwargs = checkpointing_kwargs or {"use_reentrant": args.use_reentrant_gc}
    if args.quantization_bit:
        from peft import prepare_model_for_kbit_training

        # Casts norms to fp32 and (with gradient checkpointing) enables input grads for the frozen 4/8-bit base.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs=checkpointing_kwargs)
    if inference:  # LLaMA-Factory upcasts norms and logits for training only
        return model
    if args.upcast_layernorm:
        _upcast_layernorm(model)
    if gradient_checkpointing:
        # transformers 5.2x renamed gradient checkpointing to activation checkpointing.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
        model.enable_input_require_grads()  # so checkpointed blocks see a grad-requiring input under PEFT
        model.config.use_cache = False
    if args.upcast_lmhead_output:
        _upcast_lmhead_output(model)
    return model


def load_reference(ref_model: str, adapters: list[str] | None, bits: int | None, model_args: ModelArgs,
                   precision: Precision, dtype: torch.dtype) -> Any:
    """A frozen reference model (DPO / KTO / ASFT's ref_model): `adapters` (ref_model_adapters) merged into it in
    order, or, on a 4/8-bit base (`bits`, ref_model_quantization_bit), one adapter applied unmerged, as
    LLaMA-Factory does (merging into quantized weights is lossy)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from instill.hub import resolve_model

    if bits and adapters and len(adapters) > 1:
        raise ConfigError("ref_model_quantization_bit takes one ref_model_adapters adapter (merging into 4/8-bit "
                          "weights is lossy); merge them with instill export first")
    for path in adapters or []:
        folder = Path(path)
        if not (folder / "adapter_config.json").is_file():
            raise ModelError(f"ref_model_adapters: '{path}' is not a folder holding a peft adapter_config.json")
    kwargs: dict[str, Any] = {"dtype": dtype}
    if bits:
        kwargs.update(quantization_kwargs(bits, model_args, precision, key="ref_model_quantization_bit"))
    ref = AutoModelForCausalLM.from_pretrained(resolve_model(ref_model), **kwargs)
    if not bits:
        ref.to(this_device())
    for path in adapters or []:
        ref = PeftModel.from_pretrained(ref, path)
        if not bits:
            ref = ref.merge_and_unload()
    return ref.requires_grad_(False).eval()
