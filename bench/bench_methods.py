"""Fine-tune the same model on the same data with each method; print one table of measured numbers.

    python bench/bench_methods.py                 # SmolLM2-135M-Instruct, the demo data, 30 steps each
    python bench/bench_methods.py --steps 10 --threads 1

Each method runs in its own process (so peak RSS is that method's alone), one after another.
Run it on an otherwise idle machine: on 2 cores a second busy process slows steps several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "lora": {"finetuning_type": "lora"},
    "dora": {"finetuning_type": "lora", "use_dora": True},
    "adalora": {"finetuning_type": "adalora", "adalora_init_r": 16, "adalora_target_r": 8,
                "adalora_tinit": 3, "adalora_tfinal": 3},
    # AdaLoRA's singular values start at zero, so at LoRA's learning rate it barely moves in a short run.
    "adalora lr 1e-2": {"finetuning_type": "adalora", "adalora_init_r": 16, "adalora_target_r": 8,
                        "adalora_tinit": 3, "adalora_tfinal": 3, "learning_rate": 1e-2},
    "qlora (4-bit)": {"finetuning_type": "lora", "quantization_bit": 4},
    "full": {"finetuning_type": "full", "learning_rate": 5e-5},
    # LLaMA-Factory's training extras (examples/extras/*), on the same data and steps
    "oft": {"finetuning_type": "oft", "oft_block_size": 32, "learning_rate": 1e-4},
    "lora+ (ratio 16)": {"finetuning_type": "lora", "loraplus_lr_ratio": 16.0, "learning_rate": 1e-4},
    "lora + dft loss": {"finetuning_type": "lora", "use_dft_loss": True},
    "full + galore (r 16)": {"finetuning_type": "full", "use_galore": True, "galore_rank": 16,
                             "galore_layerwise": False, "learning_rate": 5e-5},
    "full + apollo (r 16)": {"finetuning_type": "full", "use_apollo": True, "apollo_rank": 16,
                             "apollo_layerwise": False, "learning_rate": 5e-5},
    "full + badam (layer)": {"finetuning_type": "full", "use_badam": True, "badam_switch_interval": 5,
                             "learning_rate": 5e-5},
    "full + adam-mini": {"finetuning_type": "full", "use_adam_mini": True, "learning_rate": 5e-5},
    "full + muon": {"finetuning_type": "full", "use_muon": True, "learning_rate": 5e-5},
    # Muon on the LoRA matrices (2-D, as LLaMA-Factory splits them): its Newton-Schulz runs on r x d matrices,
    # cheap even where bf16 is emulated
    "lora + muon": {"finetuning_type": "lora", "use_muon": True},
}


def child(method: str, steps: int, out: str) -> None:
    from instill.config import build_config, load_yaml
    from instill.train.optimizers import state_bytes
    from instill.train.run import run_training

    raw = load_yaml(ROOT / "examples/demo_lora.yaml")
    raw.update(dataset_dir=str(ROOT / "examples/data"), output_dir=out, overwrite_output_dir=True, max_steps=steps,
               logging_steps=1, save_strategy="no", eval_strategy="no", plot_loss=False, learning_rate=1e-3)
    raw.update(METHODS[method])
    result = run_training(build_config(raw))
    trainer = result.trainer
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    # peft's AdaLoRA adds its orthogonality regulariser to every loss it returns (eval too); the
    # table compares cross-entropy, so switch it off for the measurements after training.
    for config in getattr(trainer.model, "peft_config", {}).values():
        if hasattr(config, "orth_reg_weight"):
            config.orth_reg_weight = 0.0
    timed = result.metrics["train_runtime"]  # all steps, the first one's warm-up included
    print("RESULT " + json.dumps({
        "method": method, "trainable": trainable, "steps": trainer.state.global_step,
        "s_per_step": timed / max(trainer.state.global_step, 1),
        "tokens_per_s": trainer.state.num_input_tokens_seen / timed,
        "train_loss": trainer.evaluate(trainer.train_dataset, metric_key_prefix="train")["train_loss"],
        "eval_loss": trainer.evaluate()["eval_loss"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "optimizer_state_mib": state_bytes(trainer.optimizer) / 2**20,
    }), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--child")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.out)
        return 0

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    rows = []
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", method, "--steps", str(args.steps), "--out", out],
                                  env=env, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{method}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(line[len("RESULT "):])
            row["wall_s"] = time.perf_counter() - started
            rows.append(row)
            print(f"  {method}: done in {row['wall_s']:.0f} s", file=sys.stderr)

    from instill.config import load_yaml

    precision = "bf16 autocast" if load_yaml(ROOT / "examples/demo_lora.yaml").get("bf16") else "fp32"
    print(f"\nSmolLM2-135M-Instruct, demo data (112 train / 12 eval samples), {precision}, batch 8, "
          f"{args.steps} steps, lr 1e-3 unless named (full: 5e-5), {args.threads} threads, {os.cpu_count()} CPUs\n")
    print("| method | trainable params | optimizer state (MiB) | peak RSS (MiB) | s/step | tokens/s | train loss | "
          "eval loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['trainable']:,} | {r['optimizer_state_mib']:,.1f} | {r['peak_rss_mib']:,.0f} | "
              f"{r['s_per_step']:.2f} | "
              f"{r['tokens_per_s']:.0f} | {r['train_loss']:.3f} | {r['eval_loss']:.3f} |")
    print("\ntrain / eval loss: cross-entropy of the final model on the 112 training / 12 held-out samples "
          "(AdaLoRA's orthogonality regulariser excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
