"""Run every one of LLaMA-Factory 0.9.5's v0 example YAMLs with instill, with small offline stand-ins.

Each YAML (the copies in tests/fixtures/llamafactory_examples/, unchanged) goes to the verb LLaMA-Factory
uses for it: `inference/*` → `instill chat` (one question, then /exit), `merge_lora/*` → `instill export`,
the rest → `instill train`. Only these are swapped: `model_name_or_path` (a tiny random Qwen2 with the real
Qwen2 tokenizer; a tiny Qwen2-VL for `template: qwen2_vl`), `dataset_dir` (LLaMA-Factory's demo data from
../shared, under its own entry names; `media_dir` where its demo images are) and the run size (4 samples, 1 step, cutoff 128); a
YAML naming `adapter_name_or_path` gets a LoRA adapter trained first with `train_lora/qwen3_lora_sft.yaml`.
Each runs in its own process, from a folder where `examples/` is instill's own (so the DeepSpeed config paths
LLaMA-Factory's YAMLs name resolve, as they do from LLaMA-Factory's root); the table says for each: ran
(exit 0), refused (exit 2 with one `instill: error:` line, shown) or failed (anything else).

    .venv/bin/python bench/lf_examples_run.py              # ~10-15 min on 2 CPUs
    .venv/bin/python bench/lf_examples_run.py --only inference/qwen3.yaml,merge_lora/qwen3_lora_sft.yaml

The tests run a chosen few of these (tests/test_llamafactory_examples.py); this script runs all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLES = ROOT / "tests/fixtures/llamafactory_examples"
SMALL_RUN = ["max_samples=4", "max_steps=1", "cutoff_len=128", "dataloader_num_workers=0",
             "preprocessing_num_workers=1"]


def verb_of(name: str) -> str:
    return "chat" if name.startswith("inference/") else "export" if name.startswith("merge_lora/") else "train"


def instill(args: list[str], cwd: Path, timeout: float, stdin: str = "") -> tuple[int | str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        run = subprocess.run([sys.executable, "-m", "instill.cli", *args], cwd=cwd, input=stdin, text=True,
                             capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    return run.returncode, run.stdout + run.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated example names (default: all)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    from tests.conftest import SHARED_DATA, write_lf_demo_data
    from tests.fixtures.qwen2 import build_tiny_qwen2
    from tests.fixtures.qwen2_vl import build_tiny_qwen2_vl

    names = args.only.split(",") if args.only else sorted(p.relative_to(EXAMPLES).as_posix()
                                                           for p in EXAMPLES.rglob("*.yaml"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_qwen2(root / "tiny-qwen2")
        vl_model = build_tiny_qwen2_vl(root / "tiny-qwen2-vl")
        data = write_lf_demo_data(root / "data")
        media = SHARED_DATA / "llamafactory_mllm_demo"
        base = [f"model_name_or_path={model}"]
        small = [f"dataset_dir={data}", *SMALL_RUN]
        adapter = root / "adapter"
        code, out = instill(["train", str(EXAMPLES / "train_lora/qwen3_lora_sft.yaml"), *base, *small,
                             f"output_dir={adapter}"], root, args.timeout)
        if code != 0:
            raise SystemExit(f"training the stand-in adapter failed:\n{out[-3000:]}")
        for name in names:
            verb = verb_of(name)
            work = root / "runs" / name.replace("/", "__")
            work.mkdir(parents=True)
            (work / "examples").symlink_to(ROOT / "examples")
            text = (EXAMPLES / name).read_text()
            vl = any(line.split("#")[0].split(":", 1)[-1].strip() == "qwen2_vl"
                     for line in text.splitlines() if line.startswith("template:"))
            # LLaMA-Factory's demo images, found where ../shared keeps them (media_dir)
            overrides = [f"model_name_or_path={vl_model}", f"media_dir={media}"] if vl else list(base)
            overrides += small if verb == "train" else []
            if "adapter_name_or_path" in text:
                overrides.append(f"adapter_name_or_path={adapter}")
            started = time.perf_counter()
            code, out = instill([verb, str(EXAMPLES / name), *overrides], work, args.timeout, stdin="Hello\n/exit\n")
            errors = [line for line in out.splitlines() if line.startswith("instill: error:")]
            if code == 0:
                outcome, why = "ran", ""
            elif code == 2 and len(errors) == 1 and "Traceback" not in out:
                outcome, why = "refused", errors[0].removeprefix("instill: error: ")
            else:
                outcome, why = "failed", f"exit {code}: " + (out.strip().splitlines() or [""])[-1]
            rows.append({"example": name, "verb": verb, "outcome": outcome, "why": why,
                         "seconds": round(time.perf_counter() - started, 1)})
            print(f"{outcome:8} {verb:6} {name}  {why[:150]}", flush=True)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("ran", "refused", "failed")}
    print(f"\n{len(rows)} examples: {counts['ran']} ran, {counts['refused']} refused with their reason, "
          f"{counts['failed']} failed")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "rows": rows}, indent=2, ensure_ascii=False) + "\n")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
