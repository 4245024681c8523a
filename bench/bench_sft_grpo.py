"""SFT then GRPO vs SFT alone, the same wall clock: Fudan-news classification, through the user's commands.

The question users ask of online RL: given the time an SFT run takes, is it better spent on more SFT, or on
less SFT followed by GRPO with the labels as reward? Runs, one after another (each printed before it runs):

    instill data split fudan_news_4class__val.jsonl --ratios 0.375,0.625 ...   # 120 train / 200 held out
    # A: SFT alone, --sft-epochs epochs (2: the example's); its wall time is the budget
    instill train examples/fudan_news_lora.yaml num_train_epochs=2 ...
    # B: SFT for --b-sft-epochs (1), then GRPO from that adapter for the rest of A's wall time; at the budget
    #    the GRPO run gets SIGTERM, instill's safe stop: it saves a checkpoint after the current step
    instill train examples/fudan_news_lora.yaml num_train_epochs=1 ...
    instill train examples/fudan_news_lora.yaml stage=grpo adapter_name_or_path=<B's SFT> reward_funcs=label_match ...
    # A, B and B's SFT adapter before GRPO, on the 200 held-out rows: score mode (the labels ranked by
    # likelihood) and generate mode (greedy answers, the label read from them)
    instill eval examples/fudan_news_lora.yaml adapter_name_or_path=... eval_mode=score|generate

and prints one table: each recipe's training wall time, accuracy and macro-F1 in both modes. GRPO: 4 answers
of at most 16 tokens per news item (batch 4 = one item a step), temperature 1, beta 0, loss dapo, lr 5e-5
constant, label_match on the row's `label` column. Data: the 320-row, 4-class Fudan-news subset in ../shared/data.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_sft_grpo.py bf16=false          # ~35 min on 2 idle vCPUs
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_sft_grpo.py --smoke bf16=false  # a few steps, 8 eval rows
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_fudan_tuned import CONFIG, instill, split_fudan  # the same data, example config and command runner

GRPO_KEYS = ["stage=grpo", "reward_funcs=label_match", "num_generations=4", "max_completion_length=16",
             "temperature=1.0", "beta=0.0", "loss_type=dapo", "learning_rate=5.0e-5", "lr_scheduler_type=constant",
             "warmup_ratio=0.0", "per_device_train_batch_size=4", "gradient_accumulation_steps=1", "save_steps=1000",
             "logging_steps=1"]


def instill_until(budget: float, *args: str) -> float:
    """`instill train ARGS`, sent SIGTERM once `budget` seconds have passed (instill saves and stops after the
    step it is in). Returns the wall time."""
    print(f"\n$ instill {shlex.join(args)}   # SIGTERM after {budget:.0f} s", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "instill.cli", *args])
    try:
        proc.wait(timeout=max(budget, 1.0))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    if proc.returncode not in (0, 130):
        raise SystemExit(f"instill train exited with {proc.returncode}")
    return time.perf_counter() - started


def last_checkpoint(out: Path) -> Path:
    """The adapter GRPO left: its final save, or the checkpoint the safe stop wrote."""
    if (out / "adapter_config.json").is_file():
        return out
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not checkpoints:
        raise SystemExit(f"no adapter in {out}: the GRPO run saved nothing (budget too short?)")
    return checkpoints[-1]


def evaluate(adapter: Path, name: str, work: Path, keys: list[str], mode: str) -> dict:
    out = work / "eval" / f"{name}-{mode}"
    instill("eval", str(CONFIG), *keys, f"adapter_name_or_path={adapter}", f"eval_mode={mode}", "--output", str(out))
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="for every run, e.g. bf16=false")
    parser.add_argument("--sft-epochs", type=float, default=2)
    parser.add_argument("--b-sft-epochs", type=float, default=1)
    parser.add_argument("--smoke", action="store_true", help="2 SFT steps, GRPO for 90 s, 8 held-out rows")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sft-grpo-"))
    data = split_fudan(work)
    common = [f"dataset_dir={data}", "save_strategy=steps", *args.overrides]
    evals = ["max_new_tokens=32", *(["eval_max_samples=8"] if args.smoke else [])]
    smoke = ["max_steps=2"] if args.smoke else []

    a_out, b_sft, b_rl = work / "saves" / "A-sft", work / "saves" / "B-sft", work / "saves" / "B-grpo"
    a_time = instill("train", str(CONFIG), *common, f"output_dir={a_out}", f"num_train_epochs={args.sft_epochs}",
                     *smoke)
    b_sft_time = instill("train", str(CONFIG), *common, f"output_dir={b_sft}",
                         f"num_train_epochs={args.b_sft_epochs}", *smoke)
    budget = 90.0 if args.smoke else a_time - b_sft_time
    b_rl_time = instill_until(budget, "train", str(CONFIG), *common, *GRPO_KEYS, f"output_dir={b_rl}",
                              f"adapter_name_or_path={b_sft}", "max_steps=10000", "label_column=label")
    b_adapter = last_checkpoint(b_rl)
    grpo_steps = json.loads((b_adapter / "trainer_state.json").read_text())["global_step"] \
        if (b_adapter / "trainer_state.json").is_file() else json.loads((b_rl / "trainer_state.json").read_text())[
            "global_step"]

    rows = []
    recipes = (("A: SFT alone", "A", a_out, a_time), ("B: SFT, then GRPO", "B", b_adapter, b_sft_time + b_rl_time),
               ("B's SFT before GRPO (for reference)", "B-sft", b_sft, b_sft_time))
    for name, short, adapter, seconds in recipes:
        scores = {mode: evaluate(adapter, short, work, [*common, *evals], mode) for mode in ("score", "generate")}
        rows.append((name, seconds, scores))

    print(f"\nSmolLM2-135M-Instruct, LoRA r=16 (examples/fudan_news_lora.yaml), 120 training rows, 200 held out; "
          f"A: SFT {args.sft_epochs:g} epochs; B: SFT {args.b_sft_epochs:g} epoch(s) ({b_sft_time:.0f} s), then "
          f"GRPO for {grpo_steps} steps ({b_rl_time:.0f} s)\n")
    print("| recipe | training wall time s | accuracy (score) | macro-F1 (score) | accuracy (generate) | "
          "macro-F1 (generate) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, s in rows:
        print(f"| {name} | {seconds:.0f} | {s['score']['accuracy']:.3f} | {s['score']['macro_f1']:.3f} | "
              f"{s['generate']['accuracy']:.3f} | {s['generate']['macro_f1']:.3f} |")
    print(f"\noutputs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
