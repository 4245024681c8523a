"""Hardware samples for every logging step: CPU %, resident memory, and GPU memory/utilisation.

One sampler per process (`sampler()`), read once per step (`sample(step)` caches by step), so
the JSON-lines log and every tracker see the same numbers for a step. Keys:

- ``cpu_percent``: this process's CPU use since the previous sample; 100 = one core busy.
- ``rss_mb``: resident memory now; ``peak_rss_mb``: the most the process has held (ru_maxrss).
- ``gpu_mem_mb`` / ``gpu_peak_mem_mb``: memory torch has allocated on the current CUDA device,
  now and at its peak (only when CUDA is available); ``gpu_util``: the device's utilisation %
  (only when NVML answers).

The environment block of a report (`environment()`) lives here too: versions, device, threads.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import psutil

_MB = 1024 * 1024


def _peak_rss_mb() -> float | None:
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    # Linux reports KiB, macOS bytes.
    return maxrss / 1024 if sys.platform != "darwin" else maxrss / _MB


class HardwareSampler:
    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first reading is a baseline
        self._step: int | None = None
        self._last: dict[str, float] = {}
        self.peak: dict[str, float] = {}

    def sample(self, step: int | None = None) -> dict[str, float]:
        """A fresh sample, or the one already taken for `step`."""
        if step is not None and step == self._step:
            return dict(self._last)
        out: dict[str, float] = {"cpu_percent": round(self._process.cpu_percent(None), 1)}
        rss = self._process.memory_info().rss / _MB
        out["rss_mb"] = round(rss, 1)
        peak = _peak_rss_mb()
        out["peak_rss_mb"] = round(max(peak or 0.0, rss), 1)
        out.update(_gpu())
        for key, value in out.items():
            if key != "cpu_percent":
                self.peak[key] = max(self.peak.get(key, 0.0), value)
        self._step, self._last = step, out
        return dict(out)


def _gpu() -> dict[str, float]:
    try:
        import torch

        if not torch.cuda.is_available():
            return {}
        out = {
            "gpu_mem_mb": round(torch.cuda.memory_allocated() / _MB, 1),
            "gpu_peak_mem_mb": round(torch.cuda.max_memory_allocated() / _MB, 1),
        }
        try:
            out["gpu_util"] = float(torch.cuda.utilization())
        except Exception:  # noqa: BLE001, S110 - NVML missing or refused: memory only
            pass
        return out
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not stop logging
        return {}


_SAMPLERS: dict[int, HardwareSampler] = {}


def sampler() -> HardwareSampler:
    """This process's sampler (a forked worker gets its own)."""
    pid = os.getpid()
    if pid not in _SAMPLERS:
        _SAMPLERS[pid] = HardwareSampler()
    return _SAMPLERS[pid]


def sample(step: int | None = None) -> dict[str, float]:
    return sampler().sample(step)


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, device and threads of this process, for run reports."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
    }
    if torch.cuda.is_available():
        env["device"] = "cuda"
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cuda"] = torch.version.cuda
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        env["device"] = "mps"
    else:
        env["device"] = "cpu"
    env["packages"] = {
        name: v for name in ("instill", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers",
                             "swanlab", "tensorboard", "matplotlib")
        if (v := _version(name)) is not None
    }
    return env


sampler()  # at import, so the first step's cpu_percent covers the time since, not nothing
