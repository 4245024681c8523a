"""Do instill's defaults learn? Fudan-news classification trained with the learning keys left unset,
against LLaMA-Factory's usual settings (and the README's), through the commands a user types.

One stratified split of the 320-row, 4-class Fudan-news subset in ../shared/data (120 train / 200
held out), then for each setting: `instill train` with examples/fudan_news_lora.yaml, its learning
keys (learning_rate, lora_rank/alpha, batch, accumulation, epochs, warmup) removed and the setting's
own written in, then `instill eval` in score mode on the held-out rows (the base model once).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_defaults.py --cutoff 256 bf16=false   # ~25 min, 2 idle vCPUs
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml
from bench_fudan_tuned import CONFIG, instill, split_fudan  # the same data, example config and command runner

LEARNING_KEYS = ("learning_rate", "lora_rank", "lora_alpha", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "num_train_epochs", "warmup_ratio", "warmup_steps")
SETTINGS = {
    # LLaMA-Factory's examples/train_lora/*_sft.yaml, with 1 epoch as users shorten it on a small set.
    "llamafactory": {"learning_rate": 1e-4, "lora_rank": 8, "per_device_train_batch_size": 4,
                     "gradient_accumulation_steps": 4, "num_train_epochs": 1, "warmup_ratio": 0.1},
    "defaults": {},  # nothing: instill chooses (src/instill/defaults.py) and says what
    "readme": {"learning_rate": 1e-3, "lora_rank": 16, "lora_alpha": 32, "per_device_train_batch_size": 8,
               "gradient_accumulation_steps": 1, "num_train_epochs": 2, "warmup_ratio": 0.1},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="for every run, e.g. bf16=false")
    parser.add_argument("--settings", default="llamafactory,defaults,readme")
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-defaults-"))
    data = split_fudan(work)
    base = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    common = {"dataset_dir": str(data), "cutoff_len": args.cutoff}
    rows, base_scores = [], None
    for name in args.settings.split(","):
        keys = {k: v for k, v in base.items() if k not in LEARNING_KEYS} | common | SETTINGS[name]
        keys["output_dir"] = str(work / "saves" / name)
        config = work / f"{name}.yaml"
        config.write_text(yaml.safe_dump(keys, allow_unicode=True), encoding="utf-8")
        train_s = instill("train", str(config), *args.overrides)
        eval_args = ["eval", str(config), *args.overrides, "--output", str(work / "eval" / name)]
        first = base_scores is None
        instill(*eval_args, *(["--compare", "base"] if first else []))
        out = work / "eval" / name
        tuned = json.loads(((out / "tuned") if first else out).joinpath("metrics.json").read_text(encoding="utf-8"))
        if first:
            base_scores = json.loads((out / "base" / "metrics.json").read_text(encoding="utf-8"))
        resolved = yaml.safe_load((work / "saves" / name / "run_config.yaml").read_text(encoding="utf-8"))
        results = json.loads((work / "saves" / name / "all_results.json").read_text(encoding="utf-8"))
        state = json.loads((work / "saves" / name / "trainer_state.json").read_text(encoding="utf-8"))
        rows.append((name, resolved, state["global_step"], train_s, results.get("train_loss", float("nan")),
                     tuned["accuracy"], tuned["macro_f1"]))

    print(f"\nSmolLM2-135M-Instruct, LoRA all-linear, 120 Fudan-news rows (cutoff_len {args.cutoff}), "
          f"score mode on {tuned['samples']} held-out rows; overrides: {' '.join(args.overrides) or 'none'}\n")
    print("| settings | lr | rank | batch × accum | epochs | steps | train s | train loss | accuracy | macro-F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| base model (no training) | | | | | | | | {base_scores['accuracy']:.3f} | {base_scores['macro_f1']:.3f} |")
    for name, r, steps, train_s, loss, accuracy, f1 in rows:
        print(f"| {name} | {r['learning_rate']:g} | {r['lora_rank']} | {r['per_device_train_batch_size']} × "
              f"{r['gradient_accumulation_steps']} | {r['num_train_epochs']:g} | {steps} | {train_s:.0f} | "
              f"{loss:.3f} | {accuracy:.3f} | {f1:.3f} |")
    print(f"outputs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
