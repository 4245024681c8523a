"""Before/after for the demo: the base model and the LoRA-tuned model answer the same held-out prompts.

    python examples/demo_compare.py saves/demo-lora
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from instill.config import load_config
from instill.evaluate.classify import normalize
from instill.infer.engine import load_generator

HELD_OUT_IDENTITY = ["Who trained you?", "What's your name, assistant?", "请问你是谁？"]


def main(run_dir: str) -> int:
    run = Path(run_dir)
    config = load_config(run / "run_config.yaml")
    test_rows = json.loads(Path(config.data.dataset_dir, "demo_headlines_test.json").read_text(encoding="utf-8"))
    prompts = [[{"role": "user", "content": q}] for q in HELD_OUT_IDENTITY]
    prompts += [[{"role": "user", "content": f"{r['instruction']}\n{r['input']}"}] for r in test_rows]
    labels = [r["output"] for r in test_rows]

    generator = load_generator(config.model, config.data.template)
    started = time.perf_counter()
    before = generator.generate(prompts, max_new_tokens=40, batch_size=9)
    from peft import PeftModel

    generator.model = PeftModel.from_pretrained(generator.model, str(run))  # the trained adapter on the same base
    after = generator.generate(prompts, max_new_tokens=40, batch_size=9)
    seconds = time.perf_counter() - started

    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= 58 else text[:55] + "..."

    print(f"\n{'prompt':<40} | {'base model':<58} | tuned model")
    print("-" * 170)
    shown = len(HELD_OUT_IDENTITY) + 5
    for prompt, b, a in list(zip(prompts, before, after))[:shown]:
        text = prompt[0]["content"].split("\n")[-1]
        print(f"{short(text)[:40]:<40} | {short(b):<58} | {short(a)}")
    n = len(labels)
    exact_before = sum(normalize(p) == normalize(y) for p, y in zip(before[len(HELD_OUT_IDENTITY):], labels))
    exact_after = sum(normalize(p) == normalize(y) for p, y in zip(after[len(HELD_OUT_IDENTITY):], labels))
    print("-" * 170)
    print(f"held-out headlines answered with exactly the right label: base {exact_before}/{n}, tuned {exact_after}/{n}"
          f"  ({2 * len(prompts)} generations in {seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "saves/demo-lora"))
