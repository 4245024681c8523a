"""Does one dropout mask for every row's shared prefix change what LoRA learns? Classification and NER.

`share_prefix` runs a batch's common prefix (system prompt and instruction) once; under dropout that gives
every row the prefix's one dropout mask instead of its own, so instill turns sharing off under dropout
unless `share_prefix_with_dropout: true`. This measures the difference, through the commands a user types:

    instill data split fudan_news_4class__val.jsonl --ratios 0.375,0.625 ...   # 120 train / 200 held out
    for seed in 1 2 3, for masks in per-row (share_prefix_with_dropout=false), shared (=true):
        instill train examples/fudan_news_lora.yaml seed=S lora_dropout=P share_prefix_with_dropout=...
        instill eval  examples/fudan_news_lora.yaml ...                         # score mode, held-out accuracy

and prints the loss curve (mean over seeds at each logged step), then one row per run and the mean ± sd per
masks: final train loss, held-out accuracy and macro-F1, the share of tokens the shared prefix ran once,
and train wall time. Data: the 320-row, 4-class Fudan-news subset in ../shared/data.

`--task ner` measures the same on a generation task: entity extraction from CCF-BDCI news sentences
(../shared/data/ner_ccfbdci), the answer one JSON line per entity, written by `instill data convert --preset
ner` from the first 260 rows, split 160 train / 100 held out; the same example config with
`eval_task: ner` (generated answers, entity-level micro-F1 and exact match in place of accuracy / macro-F1).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_prefix_dropout.py                # 6 runs, idle machine
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_prefix_dropout.py --task ner     # 6 runs, generation
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_prefix_dropout.py --smoke         # 2 steps, 8 eval rows
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml
from bench_fudan_tuned import CONFIG, ROOT, instill, split_fudan  # the same data, example config, command runner

MASKS = {"per-row": False, "shared": True}  # -> share_prefix_with_dropout
NER = ROOT.parent / "shared" / "data" / "ner_ccfbdci" / "ccfbdci.jsonl"
NER_LABELS = "GPE=地理实体,PER=人名,ORG=组织,LOC=地点"


def ner_task(work: Path, rows: int = 260) -> tuple[Path, Path]:
    """The first `rows` CCF-BDCI sentences converted and split (instill data convert / split) into
    work/data/ner (ner_train, ner_val), and a config for them: the example's keys with eval_task ner.
    Returns (dataset_dir, config)."""
    data = work / "data" / "ner"
    data.mkdir(parents=True, exist_ok=True)
    with NER.open(encoding="utf-8") as fh:
        (data / "raw.jsonl").write_text("".join(line for _, line in zip(range(rows), fh)), encoding="utf-8")
    instill("data", "convert", "--input", str(data / "raw.jsonl"), "--preset", "ner", "--label-map", NER_LABELS,
            "--out", str(data / "ner.jsonl"))
    instill("data", "split", str(data / "ner.jsonl"), "--ratios", f"{160 / rows},{1 - 160 / rows}", "--no-stratify",
            "--out-dir", str(data), "--register", str(data / "dataset_info.json"), "--name", "ner", "--seed", "42")
    keys = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    for key in ("eval_mode", "label_column", "labels"):
        keys.pop(key, None)
    keys.update(dataset="ner_train", eval_dataset="ner_val", eval_task="ner", max_new_tokens=96)
    config = work / "ner_lora.yaml"
    config.write_text(yaml.safe_dump(keys, allow_unicode=True), encoding="utf-8")
    return data, config


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="for every run, e.g. bf16=false")
    parser.add_argument("--task", choices=("classification", "ner"), default="classification")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--lora-dropout", type=float, default=0.1)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--smoke", action="store_true", help="2 optimizer steps, 8 held-out rows, one seed")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-prefix-dropout-"))
    data, config = ner_task(work) if args.task == "ner" else (split_fudan(work), CONFIG)
    seeds = [int(s) for s in args.seeds.split(",")][:1 if args.smoke else None]
    smoke = ["max_steps=2", "eval_max_samples=8"] if args.smoke else []

    runs = []
    for seed in seeds:
        for masks, shared in MASKS.items():
            out = work / "saves" / f"{masks}-{seed}"
            keys = [f"dataset_dir={data}", f"output_dir={out}", f"num_train_epochs={args.epochs}", f"seed={seed}",
                    f"lora_dropout={args.lora_dropout}", f"share_prefix_with_dropout={str(shared).lower()}",
                    "logging_steps=1", *smoke, *args.overrides]
            seconds = instill("train", str(config), *keys)
            instill("eval", str(config), *keys, "--output", str(work / "eval" / f"{masks}-{seed}"))
            metrics = json.loads((work / "eval" / f"{masks}-{seed}" / "metrics.json").read_text(encoding="utf-8"))
            if args.task == "ner":  # the two columns: entity-level micro-F1 and the share of rows exactly right
                metrics = {"accuracy": metrics["f1"], "macro_f1": metrics["exact_match"]}
            results = json.loads((out / "all_results.json").read_text(encoding="utf-8"))
            state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
            runs.append({"masks": masks, "seed": seed, "seconds": seconds, "accuracy": metrics["accuracy"],
                         "macro_f1": metrics["macro_f1"], "train_loss": results.get("train_loss", float("nan")),
                         "shared": results.get("shared_prefix_ratio", 0.0),
                         "curve": {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}})

    print(f"\nSmolLM2-135M-Instruct, LoRA ({config.name}, {args.task}), lora_dropout {args.lora_dropout}, "
          f"{'2 steps (smoke)' if args.smoke else f'{args.epochs:g} epochs'}, seeds {','.join(map(str, seeds))}\n")
    steps = sorted({s for r in runs for s in r["curve"]})
    print("| step | " + " | ".join(f"loss, {m} masks" for m in MASKS) + " |")
    print("|---:|" + "---:|" * len(MASKS))
    for step in steps:
        cells = [[r["curve"][step] for r in runs if r["masks"] == m and step in r["curve"]] for m in MASKS]
        print(f"| {step} | " + " | ".join(f"{statistics.mean(c):.4f}" if c else "" for c in cells) + " |")
    scores = "entity F1 | exact match" if args.task == "ner" else "held-out accuracy | macro-F1"
    print(f"\n| masks | seed | final train loss | {scores} | prefix run once | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['masks']} | {r['seed']} | {r['train_loss']:.4f} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
              f"{100 * r['shared']:.1f}% | {r['seconds']:.0f} |")
    for m in MASKS:
        mine = [r for r in runs if r["masks"] == m]
        print(f"| {m}, mean ± sd | | {_mean_sd([r['train_loss'] for r in mine])} | "
              f"{_mean_sd([r['accuracy'] for r in mine])} | {_mean_sd([r['macro_f1'] for r in mine])} | | "
              f"{statistics.mean(r['seconds'] for r in mine):.0f} |")
    print(f"\noutputs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
