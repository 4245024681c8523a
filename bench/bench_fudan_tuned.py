"""Base vs LoRA-tuned on Chinese news classification, through the commands a user types.

Runs, one after another (each printed before it runs):

    instill data split fudan_news_4class__val.jsonl --ratios 0.375,0.625 ...   # 120 train / 200 held out, stratified
    instill train examples/fudan_news_lora.yaml ...                              # LoRA on SmolLM2-135M-Instruct
    instill eval  examples/fudan_news_lora.yaml ... --compare base               # score mode, raw likelihoods
    instill eval  examples/fudan_news_lora.yaml ... --compare base eval_calibration=batch

and prints one table: accuracy and macro-F1 of base and tuned, with and without batch calibration,
and the wall time of each command. Data: the 320-row, 4-class Fudan-news subset in ../shared/data.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_fudan_tuned.py            # ~23 min on 2 idle vCPUs
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cls_fudan_derived_msswiftlearn" / "fudan_news_4class__val.jsonl"
CONFIG = ROOT / "examples" / "fudan_news_lora.yaml"


def instill(*args: str) -> float:
    """Run `instill ARGS` as a user would; its output streams through. Returns the wall time."""
    print(f"\n$ instill {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "instill.cli", *args], check=True)
    return time.perf_counter() - started


def _timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def split_fudan(work: Path) -> Path:
    """`instill data split` of the Fudan-news subset into work/data/fudan: 120 train / 200 held out, stratified,
    registered as fudan_train / fudan_val. Returns the directory."""
    data = work / "data" / "fudan"
    instill("data", "split", str(DATA), "--ratios", "0.375,0.625", "--out-dir", str(data),
            "--register", str(data / "dataset_info.json"), "--name", "fudan", "--seed", "42")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--epochs", type=float, default=2)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fudan-"))
    data, out = work / "data" / "fudan", work / "saves" / "fudan-lora"
    keys = [f"dataset_dir={data}", f"output_dir={out}", f"num_train_epochs={args.epochs}"]

    seconds = {
        "split": _timed(split_fudan, work),
        "train": instill("train", str(CONFIG), *keys),
        "eval": instill("eval", str(CONFIG), *keys, "--compare", "base"),
    }
    raw = json.loads((out / "eval" / "comparison.json").read_text(encoding="utf-8"))
    seconds["eval (calibrated)"] = instill("eval", str(CONFIG), *keys, "--compare", "base",
                                           "--output", str(work / "eval-calibrated"), "eval_calibration=batch")
    calibrated = json.loads((work / "eval-calibrated" / "comparison.json").read_text(encoding="utf-8"))
    train = json.loads((out / "all_results.json").read_text(encoding="utf-8"))

    print(f"\nSmolLM2-135M-Instruct, LoRA r=16 all-linear, {args.epochs:g} epochs on 120 rows (cutoff_len 512), "
          f"score mode on {raw['samples']} held-out rows; train loss {train.get('train_loss', float('nan')):.3f}\n")
    print("| model | accuracy | macro-F1 | accuracy, batch-calibrated | macro-F1, batch-calibrated |")
    print("|---|---:|---:|---:|---:|")
    for name in ("base", "tuned"):
        m, c = raw["metrics"], calibrated["metrics"]
        print(f"| {name} | {m['accuracy'][name]:.3f} | {m['macro_f1'][name]:.3f} | {c['accuracy'][name]:.3f} | "
              f"{c['macro_f1'][name]:.3f} |")
    print("\n" + " · ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    print(f"outputs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
