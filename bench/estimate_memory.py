"""Training memory of Qwen2.5-7B / 14B per GPU, from accelerate's own estimator (the numbers in README's
"Many GPUs, many machines" table). Estimates, not measurements: activations, the CUDA context and
fragmentation come on top.

    .venv/bin/python bench/estimate_memory.py [--gpus 8]

The hub is not needed: the models are built on the meta device from their published config.json
numbers, then sized by `accelerate.utils.calculate_maximum_sizes` (what `accelerate estimate-memory`
runs) and `accelerate.commands.estimate.estimate_training_usage` (bf16 mixed precision, Adam).
LoRA keeps the frozen base in bf16 (its trained parameters are a rounding error); ZeRO-3 / FSDP
divide what they shard by the number of GPUs.
"""

from __future__ import annotations

import argparse

from accelerate import init_empty_weights
from accelerate.commands.estimate import estimate_training_usage
from accelerate.utils import calculate_maximum_sizes
from transformers import AutoModelForCausalLM, Qwen2Config

# From config.json of Qwen/Qwen2.5-7B-Instruct and Qwen/Qwen2.5-14B-Instruct.
MODELS = {
    "Qwen2.5-7B": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "tie_word_embeddings": False},
    "Qwen2.5-14B": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 48,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
                    "tie_word_embeddings": False},
}
GIB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    n = parser.parse_args().gpus
    print(f"| | {' | '.join(MODELS)} |\n|---|{'---|' * len(MODELS)}")
    rows: dict[str, list[str]] = {}
    for name, numbers in MODELS.items():
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(Qwen2Config(**numbers))
        fp32, _ = calculate_maximum_sizes(model)
        bf16 = fp32 / 2
        usage = estimate_training_usage(fp32, "bfloat16")
        full = usage["model"] + usage["gradients"] + usage["optimizer"]
        params = sum(p.numel() for p in model.parameters()) / 1e9
        for label, value in [
            ("parameters (B)", f"{params:.2f}"),
            ("LoRA, DDP or ZeRO-2: bf16 base per GPU (GiB)", f"{bf16 / GIB:.1f}"),
            (f"LoRA, ZeRO-3 / FSDP on {n} GPUs: per GPU (GiB)", f"{bf16 / n / GIB:.1f}"),
            ("full fine-tune, bf16 mixed + Adam, in all (GiB)", f"{full / GIB:.0f}"),
            (f"full fine-tune, ZeRO-3 / FSDP on {n} GPUs: per GPU (GiB)", f"{full / n / GIB:.1f}"),
        ]:
            rows.setdefault(label, []).append(value)
    for label, values in rows.items():
        print(f"| {label} | {' | '.join(values)} |")


if __name__ == "__main__":
    main()
