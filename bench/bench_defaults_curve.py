"""Held-out accuracy against training time: instill's defaults and alternatives on two classification sets.

For each data set and each setting, one `instill train` of the set's classification config with its learning
keys (learning_rate, lora_rank/alpha, batch, accumulation, epochs, warmup) removed and the setting's own
written in, saving an adapter at about --points points of the run; then `instill eval` of each saved adapter
on the held-out rows in score mode. A point's time is the training time up to it: the sum over logging
intervals of the interval's tokens over its tokens/s, both from trainer_log.jsonl (logging_steps =
save_steps), so saving and evaluation never count. The base model is scored once per set.

Data sets:
- `fudan`: the 320-row, 4-class Fudan-news subset in ../shared/data, split 120 train / 200 held out
  (bench_fudan_tuned.split_fudan), with examples/fudan_news_lora.yaml's prompt and labels, cutoff_len 256;
- `thucnews`: THUCNews headlines, 10 classes (`--thucnews DIR` holding test.txt and class.txt from
  https://github.com/649453932/Chinese-Text-Classification-Pytorch, THUCNews/data/), --per-class rows of each
  class drawn from test.txt (seed 42), split 40% train / 60% held out, stratified, with a system prompt that
  names the ten labels.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_defaults_curve.py --thucnews DIR bf16=false     # idle machine
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_defaults_curve.py --sets fudan --settings defaults,"lr 1e-3"

Training runs need the machine to themselves (their seconds are the x axis); the evaluations only count
answers. Prints one table per set (accuracy and training seconds at each point), writes curve.json and,
with --plot PNG, the curves as one figure.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
from pathlib import Path

import yaml
from bench_defaults import LEARNING_KEYS
from bench_fudan_tuned import CONFIG, instill, split_fudan

from instill.defaults import learning_defaults

SETTINGS = {
    "defaults": {},  # nothing set: src/instill/defaults.py decides
    "lr 1e-3": {"learning_rate": 1e-3},
    "lr 2e-3": {"learning_rate": 2e-3},
    "rank 16": {"lora_rank": 16},
    "batch 4 x 1": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1},
    "neftune 5": {"neftune_noise_alpha": 5},
    "share_prefix false": {"share_prefix": False},
}
SAME_AS_DEFAULTS = {"share_prefix false"}  # exact without dropout (tested): evaluated at its last point only
THUC_SYSTEM = "你是中文新闻标题分类器。可选类别只有：{labels}。只输出一个类别，不要解释。"


def thucnews(source: Path, work: Path, per_class: int) -> tuple[Path, list[str]]:
    """THUCNews headlines as chat rows with a `label` column, split 40/60 and registered as thuc_train/_val;
    the directory and the labels."""
    labels = (source / "class.txt").read_text(encoding="utf-8").split()
    by_label: dict[str, list[str]] = {}
    for line in (source / "test.txt").read_text(encoding="utf-8").splitlines():
        title, _, index = line.rpartition("\t")
        by_label.setdefault(labels[int(index)], []).append(title)
    rng = random.Random(42)
    system = THUC_SYSTEM.format(labels="、".join(labels))
    rows = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": title},
                          {"role": "assistant", "content": label}], "label": label}
            for label in labels for title in rng.sample(by_label[label], per_class)]
    data = work / "data" / "thucnews"
    data.mkdir(parents=True, exist_ok=True)
    whole = data / "thucnews.jsonl"
    whole.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    instill("data", "split", str(whole), "--ratios", "0.4,0.6", "--out-dir", str(data), "--stratify", "label",
            "--register", str(data / "dataset_info.json"), "--name", "thuc", "--seed", "42")
    return data, labels


def _base_config(name: str, work: Path, args: argparse.Namespace) -> tuple[dict, int]:
    """The set's config without learning keys, and its number of training rows."""
    base = {k: v for k, v in yaml.safe_load(CONFIG.read_text(encoding="utf-8")).items() if k not in LEARNING_KEYS}
    if name == "fudan":
        return base | {"dataset_dir": str(split_fudan(work)), "cutoff_len": 256}, 120
    data, labels = thucnews(args.thucnews, work, args.per_class)
    return base | {"dataset_dir": str(data), "dataset": "thuc_train",
                   "eval_dataset": "thuc_val", "labels": ",".join(labels), "cutoff_len": 192}, 4 * args.per_class


def _every(setting: dict, rows: int, points: int) -> tuple[int, int]:
    """(save_steps, total steps): a divisor of the run's updates near 1/points of them, so the last step is a point."""
    keys = learning_defaults(setting) | setting  # the batch instill's defaults choose, else the setting's own
    batch, accum = keys.get("per_device_train_batch_size", 8), keys.get("gradient_accumulation_steps", 1)
    total = math.ceil(rows / batch / accum) * 3
    return min((d for d in range(1, total + 1) if total % d == 0), key=lambda d: abs(d - total / points)), total


def seconds_at(out: Path) -> dict[int, float]:
    """Training seconds at each logged step, from a run's trainer_log.jsonl."""
    seconds, clock, seen = {}, 0.0, 0
    for line in (out / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record and record.get("tokens_per_s"):
            clock += (record["tokens_seen"] - seen) / record["tokens_per_s"]
            seen = record["tokens_seen"]
            seconds[record["step"]] = clock
    return seconds


def _save(path: Path, results: dict) -> None:
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="for every run, e.g. bf16=false")
    parser.add_argument("--sets", default="fudan,thucnews")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of: {', '.join(SETTINGS)}")
    parser.add_argument("--thucnews", type=Path, help="a directory with THUCNews test.txt and class.txt")
    parser.add_argument("--per-class", type=int, default=50, help="THUCNews rows drawn per class (40%% train)")
    parser.add_argument("--points", type=int, default=5, help="adapters saved (and evaluated) per run")
    parser.add_argument("--plot", type=Path, help="write the curves to this PNG")
    parser.add_argument("--few", default="", metavar="SETTINGS",
                        help="comma-separated settings evaluated at their 2nd and 5th points only (evaluation time)")
    parser.add_argument("--phase", choices=("train", "eval", "both"), default="both",
                        help="train: the training runs only (they need an idle machine); eval: evaluate the runs of "
                             "--workdir's curve.json (accuracy only: the machine may be busy)")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    args = parser.parse_args()
    if "thucnews" in args.sets.split(",") and not args.thucnews and args.phase != "eval":
        parser.error("--thucnews DIR is needed for the thucnews set")
    if args.phase == "eval" and not args.workdir:
        parser.error("--phase eval needs the --workdir of a --phase train run")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-defaults-curve-"))
    saved = work / "curve.json"  # runs of earlier invocations in this --workdir (another set, other --points) stay
    results: dict[str, dict] = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
    for set_name in args.sets.split(",") if args.phase != "eval" else ():
        base, rows = _base_config(set_name, work / set_name, args)
        results.setdefault(set_name, {"rows": rows, "runs": {}})
        for name in args.settings.split(","):
            every, total = _every(SETTINGS[name], rows, args.points)
            out = work / set_name / "saves" / name.replace(" ", "_")
            keys = base | SETTINGS[name] | {"output_dir": str(out), "logging_steps": every, "save_strategy": "steps",
                                           "save_steps": every, "plot_loss": False}
            config = out.with_suffix(".yaml")
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(yaml.safe_dump(keys, allow_unicode=True), encoding="utf-8")
            if not (out / "all_results.json").is_file():  # a run finished in this --workdir before is kept
                instill("train", str(config), *args.overrides)
            resolved = yaml.safe_load((out / "run_config.yaml").read_text(encoding="utf-8"))
            results[set_name]["runs"][name] = {
                "steps": total, "every": every, "config": str(config),
                "seconds": {str(k): v for k, v in seconds_at(out).items()},  # JSON keys
                "resolved": {k: resolved.get(k) for k in ("learning_rate", "lora_rank", "per_device_train_batch_size",
                                                          "gradient_accumulation_steps", "num_train_epochs")}}
            _save(saved, results)
    if args.phase == "train":
        print(f"outputs: {work} (curve.json); evaluate with --phase eval --workdir {work}")
        return 0
    few = set(filter(None, args.few.split(",")))
    for set_name, result in results.items():  # evaluation after every training run: it only counts answers
        for name, run in result["runs"].items():
            config = Path(run["config"])
            if "base" not in result:
                base_out = config.parent / "base"
                if not (base_out / "metrics.json").is_file():  # evaluated by an earlier invocation
                    instill("eval", str(config), *args.overrides, "--model", "base", "--output", str(base_out))
                result["base"] = json.loads((base_out / "metrics.json").read_text(encoding="utf-8"))
            run["points"] = []
            # the same computation as the defaults, only its time differs: its last point checks that
            steps = range(run["every"], run["steps"] + 1, run["every"])
            steps = steps[-1:] if name in SAME_AS_DEFAULTS else steps[1::3] if name in few else steps
            for step in steps:
                adapter, where = config.with_suffix("") / f"checkpoint-{step}", config.with_suffix("") / f"eval-{step}"
                if not (where / "metrics.json").is_file():  # evaluated by an earlier invocation
                    instill("eval", str(config), *args.overrides, f"adapter_name_or_path={adapter}", "--model",
                            "tuned", "--output", str(where))
                metrics = json.loads((where / "metrics.json").read_text(encoding="utf-8"))
                run["points"].append({"step": step, "seconds": run["seconds"][str(step)],
                                      "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]})
            _save(saved, results)
    for set_name, result in results.items():
        _table(set_name, result)
    if args.plot:
        _plot(results, args.plot)
    print(f"outputs: {work} (curve.json)")
    return 0


def _table(set_name: str, result: dict) -> None:
    base = result["base"]
    print(f"\n{set_name}: {result['rows']} training rows, score mode on {base['samples']} held-out rows; base model "
          f"accuracy {base['accuracy']:.3f}. Each cell: held-out accuracy @ training seconds (3 epochs)\n")
    width = max(len(r["points"]) for r in result["runs"].values())
    print("| setting | lr | rank | batch × accum | " + " | ".join(f"point {i + 1}" for i in range(width)) + " |")
    print("|---|---:|---:|---:|" + "---:|" * width)
    for name, run in result["runs"].items():
        r = run["resolved"]
        cells = [f"{p['accuracy']:.3f} @ {p['seconds']:.0f} s" for p in run["points"]]
        print(f"| {name} | {r['learning_rate']:g} | {r['lora_rank']} | {r['per_device_train_batch_size']} × "
              f"{r['gradient_accumulation_steps']} | " + " | ".join(cells + [""] * (width - len(cells))) + " |")


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, (set_name, result) in zip(axes[0], results.items(), strict=True):
        for name, run in result["runs"].items():
            xs = [0.0] + [p["seconds"] for p in run["points"]]
            ys = [result["base"]["accuracy"]] + [p["accuracy"] for p in run["points"]]
            ax.plot(xs, ys, marker="o", linewidth=2.2 if name == "defaults" else 1.2, label=name)
        ax.set(title=f"{set_name} ({result['rows']} training rows)", xlabel="training seconds (2 CPU threads, fp32)",
               ylabel="held-out accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
