"""GRPO step time side by side: instill's `stage: grpo` vs trl's own `GRPOTrainer`, the same settings.

Both train SmolLM2-135M-Instruct (the packaged GGUF, converted once to safetensors) with LoRA r=16, alpha 32
on all linear layers, on the demo headlines (examples/data/demo_headlines.json, prompts through the model's
own chat template): 4 answers a headline of at most 16 tokens, temperature 1, beta 0 (no reference model),
loss_type dapo, lr 5e-5 constant, batch 4 (one headline a step), fp32, the same threads, seed 42. The reward
is the same function in both: 1 when the answer names the row's label (instill's `label_match`; the trl
worker calls the same matcher, `instill.evaluate.classify.match_label`). Each tool runs alone in its own
process, one after the other:

- instill: `instill train examples/grpo_lora.yaml max_steps=N ...` (what a user types);
- trl: a plain `GRPOTrainer` with a peft `LoraConfig`, as trl's documentation writes it.

Columns: s/step (train_runtime / steps; the model load is outside), answer tokens/s (mean answer length x
answers / s/step), mean answer length and mean reward over the steps (trl's own logged metrics in both), peak
RSS of the tool's process.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_grpo.py --steps 12 --threads 2
    .venv/bin/python bench/bench_grpo.py --steps 2                     # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_throughput import MODEL, _run  # the same model path and measured subprocess runner

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "grpo_lora.yaml"
DATA = ROOT / "examples" / "data" / "demo_headlines.json"
LABELS = "sports, business, science, politics"


def worker_trl(a: argparse.Namespace, out: Path) -> None:
    """trl's GRPOTrainer with the example's settings (written as trl's docs write it)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from instill.evaluate.classify import match_label, parse_label_set

    labels = parse_label_set(LABELS)
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["instruction"] + "\n" + r["input"]}],
                               "output": r["output"]} for r in rows])

    def label_match(completions, output, **kwargs):
        return [float(match_label(c[-1]["content"], labels) == match_label(gold, labels))
                for c, gold in zip(completions, output)]

    config = GRPOConfig(output_dir=str(out.parent / "trl-grpo"), num_generations=4, max_completion_length=16,
                        temperature=1.0, beta=0.0, loss_type="dapo", per_device_train_batch_size=4,
                        gradient_accumulation_steps=1, learning_rate=5e-5, lr_scheduler_type="constant",
                        max_steps=a.steps, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                        bf16=False, seed=42, log_completions=False)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=label_match, args=config, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(a.model), peft_config=lora)
    result = trainer.train()
    out.write_text(json.dumps({"runtime": result.metrics["train_runtime"], "steps": trainer.state.global_step,
                               "log": trainer.state.log_history}))


def run_instill(a: argparse.Namespace, work: Path, env: dict) -> dict | None:
    out = work / "instill-grpo"
    keys = [f"model_name_or_path={a.model}", f"max_steps={a.steps}", f"output_dir={out}", "logging_steps=1",
            "save_strategy=\"no\"", "report_to=none", "bf16=false", f"torch_num_threads={a.threads}", "plot_loss=false"]
    status, rss = _run([sys.executable, "-m", "instill.cli", "train", str(CONFIG), *keys], env)
    if status != 0:
        return None
    results = json.loads((out / "all_results.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    return {"runtime": results["train_runtime"], "steps": state["global_step"], "log": state["log_history"],
            "rss_mb": rss}


def run_trl(a: argparse.Namespace, work: Path, env: dict) -> dict | None:
    result = work / "trl-grpo.json"
    status, rss = _run([sys.executable, __file__, "--worker", str(result), "--model", a.model,
                        "--steps", str(a.steps), "--threads", str(a.threads)], env)
    if status != 0:
        return None
    return {**json.loads(result.read_text()), "rss_mb": rss}


def row(name: str, r: dict | None) -> str:
    if r is None:
        return f"| {name} | failed | | | | | |"
    steps = [e for e in r["log"] if "completions/mean_length" in e]
    length = statistics.mean(e["completions/mean_length"] for e in steps)
    reward = statistics.mean(e["reward"] for e in steps)
    per_step = r["runtime"] / r["steps"]
    return (f"| {name} | {r['steps']} | {per_step:.2f} | {4 * length / per_step:.1f} | {length:.1f} | "
            f"{reward:.3f} | {r['rss_mb'] / 1024:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="a model directory, .gguf or pkg: path (default SmolLM2-135M)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tools", default="instill,trl")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        worker_trl(a, a.worker)
        return 0

    from instill.hub import resolve_model

    a.model = str(resolve_model(a.model))  # once: both tools read the same safetensors directory
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runners = {"instill": run_instill, "trl": run_trl}
    started = time.perf_counter()
    results = {tool: runners[tool](a, work, env) for tool in a.tools.split(",")}
    print(f"\n# {' '.join(sys.orig_argv)}  ({time.perf_counter() - started:.0f} s; work dir {work})\n")
    print("| GRPO, LoRA r=16, 4 answers ≤ 16 tokens, fp32 | steps | s/step | answer tokens/s | mean answer length "
          "| mean reward | peak RSS GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    names = {"instill": "instill `stage: grpo`", "trl": "trl `GRPOTrainer`"}
    for tool, r in results.items():
        print(row(names[tool], r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
