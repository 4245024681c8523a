"""How much compute this process has: usable CPU cores, torch threads, and peak FLOP/s for MFU.

- `available_cpus()`: the cores this process may run on: its CPU affinity, capped by a cgroup
  CPU quota (containers), never more than `os.cpu_count()`. torch's default thread count is the
  machine's core count, which oversubscribes a container or a pinned process. A smaller
  OMP_NUM_THREADS (or torch_num_threads) is honoured.
- `peak_flops(dtype)`: on CPU a short matmul probe (fp32 / bf16, the threads in use); the best probe
  seen is cached under ~/.cache/instill (a busy machine probes low: measured 22 vs 65 GFLOP/s per
  thread on the same AVX2 core); on CUDA the device's dense spec figure from a small table
  (None for a device not in it, and then no MFU is reported).
- `train_flops_per_token(...)`: the stated formula MFU uses (see its docstring).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import torch

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2 cpu.max or v1 cfs), None when unlimited or unknown."""
    try:
        if _CGROUP_V2.is_file():
            quota, period = _CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = _CGROUP_V1
        if quota_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota <= 0 else quota / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def available_cpus() -> tuple[int, str]:
    """(cores this process may use, where the number comes from)."""
    total = os.cpu_count() or 1
    try:
        n, why = len(os.sched_getaffinity(0)), "CPU affinity"
    except AttributeError:  # not Linux
        n, why = total, "cores"
    quota = _cgroup_quota()
    if quota is not None and math.ceil(quota) < n:
        n, why = max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g}"
    return min(n, total), why


def set_torch_threads(requested: int | None) -> str:
    """Set torch's threads: `requested` (torch_num_threads) or the available cores; one line saying which."""
    n, why = available_cpus()
    if requested:
        torch.set_num_threads(requested)
        more = f" (more than the {n} available by {why})" if requested > n else ""
        return f"threads: {requested} torch threads (torch_num_threads){more}"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and 0 < int(env) < n:
        n, why = int(env), f"OMP_NUM_THREADS; {why} allows {n}"
    torch.set_num_threads(n)
    return f"threads: {n} torch threads ({why}; of {os.cpu_count()} cores on the machine)"


# Dense (no sparsity) peak TFLOP/s per GPU, from the vendors' spec sheets: (bf16/fp16, tf32 as fp32).
_GPU_TFLOPS = {
    "H200": (989.0, 494.0), "H100 SXM": (989.0, 494.0), "H100 PCIe": (756.0, 378.0), "H100": (756.0, 378.0),
    "A100": (312.0, 156.0), "A10G": (70.0, 35.0), "A10": (125.0, 62.5), "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0), "V100": (125.0, 15.7), "T4": (65.0, 8.1), "RTX 4090": (165.0, 82.6),
    "RTX 3090": (71.0, 35.6),
}


def _gpu_peak(dtype: torch.dtype) -> float | None:
    name = torch.cuda.get_device_name()
    for key, (half, single) in _GPU_TFLOPS.items():  # longest names first where they overlap (dict order)
        if key in name:
            return (half if dtype in (torch.bfloat16, torch.float16) else single) * 1e12
    return None


def _cache_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "instill" / "peak_flops.json"


def probe_matmul_flops(dtype: torch.dtype, seconds: float = 0.3) -> float:
    """Best FLOP/s of square matmuls over about `seconds` (after one warm-up), at torch's current threads."""
    n = 1024 if dtype == torch.float32 else 512  # emulated bf16 is ~30x slower: keep the probe short
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best, spent = 0.0, 0.0
    while spent < seconds:
        start = time.perf_counter()
        torch.mm(a, b)
        took = time.perf_counter() - start
        spent += took
        best = max(best, 2 * n**3 / took)
    return best


def peak_flops(dtype: torch.dtype) -> float | None:
    """Peak dense matmul FLOP/s for `dtype` on the training device (CPU: probed at each call, ~0.3 s, and the
    best probe seen for this CPU, threads and dtype is kept in the cache and used)."""
    if torch.cuda.is_available():
        return _gpu_peak(dtype)
    key = f"{platform.processor() or platform.machine()}|{torch.get_num_threads()}|{dtype}|torch {torch.__version__}"
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    fresh = probe_matmul_flops(dtype)
    if fresh > cache.get(key, 0.0):  # a busy machine probes low: keep the best seen, which only nears the peak
        cache[key] = fresh
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cache, indent=1))
        except OSError:
            pass  # an unwritable cache only means probing again next run
    return float(cache[key])


def train_flops_per_token(body_params: int, head_params: int, labelled_fraction: float, full: bool) -> float:
    """Training FLOPs per input token: k × (body parameters + head parameters × labelled fraction).

    k = 6 for full fine-tuning (2 forward + 2 input-gradient + 2 weight-gradient per parameter),
    k = 4 for adapters (the frozen weights get no weight gradient; the adapters' own FLOPs are
    negligible). The output head only runs where labels are trained (train/trainer.py), hence its
    labelled fraction. Attention's sequence-length term is left out (small at these lengths)."""
    k = 6 if full else 4
    return k * (body_params + head_params * labelled_fraction)
