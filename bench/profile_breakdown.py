"""Where one optimizer step's time goes, side by side: torch.profiler traces of instill and LLaMA-Factory.

Reads the Chrome trace each run wrote with `enable_torch_profiler` (bench_throughput.py --profile sets the
same keys in both tools: the second optimizer step, CPU ops only), adds up each op's self time (its time
less the ops it called) into a few kinds, and prints them per 1,000 trained tokens of that step (the step's
tokens from trainer_state.json), so runs whose steps hold different rows compare. "not in an op" is the
step's wall time less every op's self time: Python, the data loader, the trainer's own bookkeeping.

    .venv/bin/python bench/profile_breakdown.py instill=WORK/instill-cls-fp32 llamafactory=WORK/llamafactory-cls-fp32

torch's key_averages would do the adding in the process that profiled; LLaMA-Factory's run leaves only the
trace file, so both are read from the file the same way.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path

KINDS = (  # first match wins; names are torch's aten ops
    ("matrix multiplies", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul")),
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "aten::softmax",
                   "aten::_softmax")),
    ("head: log-softmax, loss", ("log_softmax", "nll_loss", "cross_entropy")),
    ("dropout masks", ("bernoulli", "aten::random_", "native_dropout", "aten::dropout", "aten::ge", "FusedDropoutA")),
    ("optimizer", ("_foreach", "addcdiv", "addcmul", "aten::lerp", "aten::sqrt", "clip_grad", "aten::norm",
                   "linalg_vector_norm")),
    ("copies, cat, index", ("aten::copy_", "aten::cat", "aten::index", "aten::gather", "aten::scatter",
                            "aten::to", "aten::clone", "aten::contiguous", "aten::embedding", "aten::where",
                            "aten::masked", "aten::fill_", "aten::zero_", "aten::pad", "aten::stack")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::silu", "aten::pow",
                     "aten::rsqrt", "aten::mean", "aten::neg", "aten::sum", "aten::exp", "aten::sigmoid",
                     "aten::cos", "aten::sin", "backward", "Backward")),
)


def kind(name: str) -> str:
    return next((k for k, keys in KINDS if any(key in name for key in keys)), "other ops")


def self_times(trace: dict) -> tuple[dict[str, float], float, dict[str, float]]:
    """(seconds of self time per kind, the profiled step's wall seconds, seconds per op name) from a Chrome
    trace."""
    by_thread: dict[object, list[dict]] = defaultdict(list)
    step = 0.0
    for event in trace["traceEvents"]:
        if event.get("ph") != "X":
            continue
        if event.get("cat") == "cpu_op":
            by_thread[event["tid"]].append(event)
        elif event.get("name", "").startswith("ProfilerStep#"):
            step = max(step, event["dur"] / 1e6)
    names: dict[str, float] = defaultdict(float)
    for events in by_thread.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[list] = []  # [end, event, child time]
        for event in events:
            while stack and stack[-1][0] <= event["ts"]:
                _, done, children = stack.pop()
                names[done["name"]] += (done["dur"] - children) / 1e6
            if stack:
                stack[-1][2] += event["dur"]
            stack.append([event["ts"] + event["dur"], event, 0.0])
        for _, done, children in stack:
            names[done["name"]] += (done["dur"] - children) / 1e6
    totals: dict[str, float] = defaultdict(float)
    for name, seconds in names.items():
        totals[kind(name)] += seconds
    return totals, step, names


def read_trace(run: Path) -> dict:
    files = sorted(run.glob("profiler/**/*.json*"))
    if not files:
        raise SystemExit(f"{run}: no profiler trace (run bench_throughput.py with --profile)")
    raw = files[-1].read_bytes()
    return json.loads(gzip.decompress(raw) if files[-1].suffix == ".gz" else raw)


def step_tokens(run: Path, step: int = 2) -> int:
    """Tokens trained in optimizer step `step` (logging_steps 1: the difference of two log lines)."""
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    seen = {h["step"]: h["num_input_tokens_seen"] for h in history if "num_input_tokens_seen" in h and "loss" in h}
    return seen[step] - seen.get(step - 1, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=OUTPUT_DIR")
    parser.add_argument("--top", type=int, default=0, help="also list each run's N slowest ops by self time")
    a = parser.parse_args()
    columns = {}
    for spec in a.runs:
        name, _, folder = spec.partition("=")
        totals, step, ops = self_times(read_trace(Path(folder)))
        tokens = step_tokens(Path(folder))
        for op, seconds in sorted(ops.items(), key=lambda kv: -kv[1])[:a.top]:
            print(f"{name}: {op} ({kind(op)}) {1e6 * seconds / tokens:.0f} ms per 1,000 tokens")
        totals["not in an op"] = max(step - sum(totals.values()), 0.0)
        columns[name] = (totals, step, tokens)
    names = list(columns)
    print("| ms per 1,000 tokens of the profiled step | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for k in [*(k for k, _ in KINDS), "other ops", "not in an op"]:
        cells = [f"{1000 * columns[n][0].get(k, 0.0) / columns[n][2] * 1000:.0f}" for n in names]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print("| **whole step** | " + " | ".join(f"**{1e6 * columns[n][1] / columns[n][2]:.0f}**" for n in names) + " |")
    print("| step seconds, tokens | " + " | ".join(f"{columns[n][1]:.1f} s, {columns[n][2]}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
