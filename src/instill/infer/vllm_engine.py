"""`infer_backend: vllm`: chat, predict and eval generation through vLLM's offline engine (`vllm.LLM`).

Prompts are rendered and tokenized by instill exactly as for the transformers engine (`Generator.encode_prompts`,
the training template, middle cuts) and handed to vLLM as token ids, so both backends see the same prompt. The
mapping follows LLaMA-Factory 0.9.5's `chat/vllm_engine.py`: vllm_maxlen -> max_model_len, vllm_gpu_util ->
gpu_memory_utilization, vllm_enforce_eager -> enforce_eager, vllm_max_lora_rank -> max_lora_rank (with
enable_lora when an adapter is served), vllm_config over all of them; the adapter as
`LoRARequest(<its folder name>, 1, <its path>)`. Generation: max_new_tokens -> max_tokens, temperature 0 (greedy)
or the sampling temperature and top_p, the template's stop ids -> stop_token_ids.

Refused in one line before anything loads: vllm not importable, no CUDA GPU, more than one adapter (vLLM applies
one LoRA per request; merge the others with instill export), rope scaling (not passed to vLLM), images.
vLLM is not installable on the machines instill is built on: the wiring is tested with a stand-in `vllm` module
that records its arguments (tests/infer/test_vllm_engine.py), not against vLLM itself.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instill.config import ModelArgs
from instill.data.templates import TemplateChoice, get_template
from instill.errors import ConfigError, DataError
from instill.hub import resolve_model_args
from instill.infer.engine import Decoding, Generator, tokenizer_dir
from instill.model.adapters import check_adapters
from instill.model.load import Precision, load_tokenizer
from instill.model.rope import inference_rope


def cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def check_vllm(adapters: Sequence[str | Path] = ()) -> None:
    """What `infer_backend: vllm` needs, checked before anything loads; a one-line ConfigError otherwise."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("infer_backend: vllm needs the vllm package, which is not installed (pip install vllm, "
                          "on a machine with a CUDA GPU); use infer_backend: huggingface")
    if not cuda_visible():
        raise ConfigError("infer_backend: vllm needs a CUDA GPU and none is visible; use infer_backend: huggingface")
    if len(adapters) > 1:
        raise ConfigError(f"infer_backend: vllm applies one LoRA adapter, {len(adapters)} are given; merge the others "
                          "into the base with instill export first")


class VllmGenerator(Generator):
    """A `Generator` whose replies come from a `vllm.LLM` (`self.model`), with the adapter as a LoRARequest."""

    def __init__(self, llm: Any, tokenizer: Any, template: Any, lora_request: Any = None) -> None:
        super().__init__(llm, tokenizer, template)
        self.lora_request = lora_request

    def generate(self, conversations: list[list[dict]], max_new_tokens: int = 64, batch_size: int = 8,
                 temperature: float = 0.0, top_p: float = 1.0, progress: bool = False,
                 images: Sequence[list[str]] | None = None) -> list[str]:
        prompts, _ = self.encode_prompts(conversations, images=images)
        return self.generate_ids(prompts, max_new_tokens, batch_size, temperature, top_p, progress, images=images)

    def generate_ids(self, prompts: list[list[int]], max_new_tokens: int | None = 64, batch_size: int = 8,
                     temperature: float = 0.0, top_p: float = 1.0, progress: bool = False,
                     desc: str = "Generating", images: Sequence[list[str]] | None = None,
                     decoding: Decoding = Decoding()) -> list[str]:
        """One reply per tokenized prompt; vLLM schedules the batches itself (`batch_size` is not used).
        `decoding`'s top_k / repetition_penalty / skip_special_tokens map onto SamplingParams; max_length (with no
        max_new_tokens) bounds each prompt + answer; beam search is refused (vLLM's is a separate API)."""
        from vllm import SamplingParams

        if images and any(images):
            raise DataError("infer_backend: vllm reads text prompts only here; use infer_backend: huggingface for "
                            "rows with images")
        if decoding.num_beams > 1:
            raise ConfigError(f"num_beams: {decoding.num_beams}: beam search is not built for infer_backend: vllm; "
                              "use infer_backend: huggingface")
        sampling = temperature > 0
        extra: dict[str, Any] = {}
        if sampling and decoding.top_k is not None:
            extra["top_k"] = decoding.top_k
        if decoding.repetition_penalty is not None:
            extra["repetition_penalty"] = decoding.repetition_penalty

        def params(ids: list[int]) -> Any:
            limit = max_new_tokens or max((decoding.max_length or 0) - len(ids), 1)
            return SamplingParams(max_tokens=limit, temperature=temperature, top_p=top_p if sampling else 1.0,
                                  stop_token_ids=list(self.stop_ids),
                                  skip_special_tokens=decoding.skip_special_tokens, **extra)

        outputs = self.model.generate([{"prompt_token_ids": list(ids)} for ids in prompts],
                                      [params(ids) for ids in prompts] if max_new_tokens is None else params([]),
                                      use_tqdm=progress, lora_request=self.lora_request)
        return [out.outputs[0].text.strip() for out in outputs]


def load_vllm_generator(model_args: ModelArgs, template_name: str | TemplateChoice = "auto",
                        adapter: str | Path | Sequence[str | Path] | None = None,
                        precision: Precision | None = None) -> VllmGenerator:
    """The base model (plus at most one LoRA adapter, served unmerged) in a vLLM engine, ready to generate."""
    adapters = [adapter] if isinstance(adapter, (str, Path)) else list(adapter or [])
    check_vllm(adapters)
    check_adapters([str(p) for p in adapters])
    model_dir = resolve_model_args(model_args)
    if inference_rope(model_args.rope_scaling, model_dir, adapters, model_args.trust_remote_code) is not None:
        raise ConfigError("infer_backend: vllm does not get instill's RoPE scaling (rope_scaling, or the adapter's "
                          "saved one); use infer_backend: huggingface")
    source = tokenizer_dir(model_dir, adapters)
    tokenizer = load_tokenizer(model_args, source)
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    precision = precision or Precision()
    dtype = "bfloat16" if precision.bf16 is True else "float16" if precision.fp16 else "auto"
    engine = {"model": str(model_dir), "tokenizer": str(source), "trust_remote_code": model_args.trust_remote_code,
              "download_dir": model_args.cache_dir, "dtype": dtype, "max_model_len": model_args.vllm_maxlen,
              "gpu_memory_utilization": model_args.vllm_gpu_util, "enforce_eager": model_args.vllm_enforce_eager,
              "enable_lora": bool(adapters), "max_lora_rank": model_args.vllm_max_lora_rank,
              **(model_args.vllm_config or {})}
    lora = LoRARequest(Path(adapters[0]).name, 1, str(adapters[0])) if adapters else None
    return VllmGenerator(LLM(**engine), tokenizer, get_template(template_name, tokenizer), lora)
