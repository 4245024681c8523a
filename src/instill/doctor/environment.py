"""Environment checks: library versions, the device and its dtypes, threads against cores.

`probe_device()` is the one place that asks the hardware what it can do; tests replace it to
simulate a GPU without bf16 or a CPU without bf16 instructions.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires, version

from instill.config import RunConfig
from instill.doctor.table import FAIL, PASS, WARN, Check

AREA = "environment"
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets")


def _requirements() -> dict[str, object]:
    """instill's own declared requirements (name -> packaging Requirement), when instill is installed."""
    from packaging.requirements import Requirement

    try:
        declared = requires("instill") or []
    except PackageNotFoundError:
        return {}
    out = {}
    for line in declared:
        req = Requirement(line)
        if req.marker is None:
            out[req.name.lower()] = req
    return out


def versions_check() -> Check:
    """Installed versions of the training stack, against the ranges instill declares."""
    from packaging.version import Version

    reqs = _requirements()
    parts, bad = [], []
    for name in LIBRARIES:
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        req = reqs.get(name)
        if installed is None:
            parts.append(f"{name} not installed")
            if req is not None:
                bad.append(f"{name} is required ({req})")
            continue
        parts.append(f"{name} {installed}")
        if req is not None and req.specifier and Version(installed) not in req.specifier:
            bad.append(f"{name} {installed} is outside instill's range {req.specifier}")
    detail = f"python {platform.python_version()} · " + " · ".join(parts)
    if bad:
        return Check(FAIL, AREA, "versions", f"{detail}; {'; '.join(bad)}",
                     "reinstall with the pinned versions: pip install -c constraints.txt -e .")
    return Check(PASS, AREA, "versions", detail)


@dataclass
class Device:
    """What the machine offers for training."""

    kind: str  # cuda | npu | mps | cpu
    name: str
    bf16: bool  # bf16 math runs natively (not emulated)
    fp16: bool
    detail: str
    memory_free: int | None = None  # bytes of free accelerator memory (None: the CPU, use RAM)


def _cpu_bf16() -> tuple[bool, str]:
    """Whether bf16 matmuls run natively here: the AMX / AVX512-BF16 flags, confirmed by timing a matmul."""
    import torch

    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    avx512_bf16 = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    flags = [name for name, on in (("AMX", amx), ("AVX512-BF16", avx512_bf16)) if on]

    def best(dtype: torch.dtype) -> float:
        a = torch.ones(256, 256, dtype=dtype)
        a @ a  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - start)
        return min(times)

    ratio = best(torch.bfloat16) / max(best(torch.float32), 1e-9)
    native = bool(flags) or ratio <= 2.0
    where = ", ".join(flags) if flags else f"no AMX or AVX512-BF16 ({torch.backends.cpu.get_cpu_capability()})"
    speed = f"bf16 matmul measured {ratio:.1f}× the time of fp32" if ratio >= 1.05 else "bf16 matmul faster than fp32"
    return native, f"{where}; {speed}"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_device() -> Device:
    """The device instill would train on, and what else is present."""
    import torch

    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        free, total = torch.cuda.mem_get_info(idx)
        return Device("cuda", torch.cuda.get_device_name(idx), torch.cuda.is_bf16_supported(), True,
                      f"compute capability {major}.{minor}, {total / 2**30:.0f} GiB, CUDA {torch.version.cuda}",
                      memory_free=free)
    if importlib.util.find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401  (registers torch.npu)

        if torch.npu.is_available():
            return Device("npu", torch.npu.get_device_name(0), True, True, "Ascend NPU")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Device("mps", "Apple GPU", False, False, "Metal (mps)")
    native, detail = _cpu_bf16()
    return Device("cpu", _cpu_name(), native, False, detail)


def device_check(device: Device) -> Check:
    if device.kind in ("npu", "mps"):
        return Check(WARN, AREA, "device", f"{device.name} ({device.detail}) found, but instill trains on CUDA or "
                     "the CPU only: this run would use the CPU", "expect CPU speed, or train on a CUDA machine")
    return Check(PASS, AREA, "device", f"{device.kind}: {device.name} ({device.detail})")


def precision_check(device: Device, bf16: bool | str, fp16: bool) -> Check:
    """bf16 / fp16 against the device (the rules of model.load.check_precision, on the probed device).

    bf16: auto is bf16 where the device has it natively; bf16: true or force on a CPU without bf16
    instructions fails (train falls back to fp32 for true, but the config says otherwise)."""
    on = "cpu" if device.kind in ("npu", "mps") else device.kind  # where the run will actually go
    if bf16 == "auto":
        bf16 = device.bf16 and not fp16
    said = f"bf16: {'force' if bf16 == 'force' else 'true'}"
    if fp16 and on != "cuda":
        return Check(FAIL, AREA, "precision", "fp16: true needs a CUDA GPU; this run would be on the CPU",
                     "on the CPU use bf16: true where the CPU has AMX, or neither (fp32)")
    if bf16 and on == "cuda" and not device.bf16:
        return Check(FAIL, AREA, "precision", f"bf16: true but {device.name} ({device.detail}) has no bfloat16",
                     "use fp16: true on this GPU (V100, T4 and older GPUs lack bf16)")
    if bf16 and on == "cpu" and not device.bf16:
        fix = ("remove bf16: force: emulated bf16 is ~30-70x slower than fp32 here" if bf16 == "force" else
               "remove bf16: true (instill trains in fp32 on this CPU anyway; bf16: force would insist on "
               "emulated bf16)")
        return Check(FAIL, AREA, "precision", f"{said} but this CPU has no bf16 instructions: {device.detail}",
                     f"{fix}; bf16 pays off on CPUs with AMX or AVX512-BF16")
    if bf16:
        return Check(PASS, AREA, "precision", f"bf16 on {on} ({'autocast; ' if on == 'cpu' else ''}{device.detail})")
    if fp16:
        return Check(PASS, AREA, "precision", f"fp16 on {device.name}")
    hint = " (bf16: true would be faster here)" if device.bf16 and on == "cpu" else ""
    return Check(PASS, AREA, "precision", f"fp32{hint}")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_check(config: RunConfig) -> Check:
    """Torch threads the run will use against the cores this process may run on."""
    import torch

    threads = config.model.torch_num_threads or torch.get_num_threads()
    source = "torch_num_threads" if config.model.torch_num_threads else "torch's default, or OMP_NUM_THREADS"
    cores = available_cores()
    detail = f"{threads} torch thread{'s' * (threads != 1)} ({source}) on {cores} available core{'s' * (cores != 1)}"
    if threads > cores:
        return Check(WARN, AREA, "threads", f"{detail}: more threads than cores makes every step wait on the others",
                     f"set torch_num_threads: {cores} (or OMP_NUM_THREADS={cores})")
    return Check(PASS, AREA, "threads", detail)
