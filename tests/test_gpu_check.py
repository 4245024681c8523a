"""bench/gpu_check.sh without a GPU: its syntax, its --dry-run step list, and its table when steps cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
STEPS = ["environment", "models", "SmolLM2 sdpa", "tiny Qwen2 sdpa", "SmolLM2 fa2 packing", "SmolLM2 torch_compile",
         "SmolLM2 liger", "tiny Qwen2 fa2 packing", "tiny Qwen2 torch_compile", "tiny Qwen2 liger",
         "SmolLM2 QLoRA 4-bit", "SmolLM2 torchrun DDP 1 GPU", "instill serve, 16 clients",
         "instill eval, infer_backend vllm", "GPTQ 4-bit export"]
OPTIONAL = {"fa2 packing": "flash_attn", "liger": "liger_kernel", "QLoRA": "bitsandbytes", "serve": "openai",
            "vllm": "vllm", "GPTQ": "gptqmodel"}


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_the_script_parses_and_a_dry_run_lists_every_step_and_runs_none(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    work = tmp_path / "work"
    done = _run("--dry-run", GPU_CHECK_DIR=str(work))
    assert done.returncode == 0, done.stderr
    shown = [line.split(":")[0].removeprefix("== ") for line in done.stdout.splitlines() if line.startswith("== ")]
    assert shown == STEPS
    assert "--device cuda" in done.stdout and "--set quantization_bit=4" in done.stdout
    assert "FORCE_TORCHRUN=1 NPROC_PER_NODE=1" in done.stdout and "--concurrency 16" in done.stdout
    assert not work.exists()  # nothing ran, nothing written
    assert _run("--bogus").returncode == 2


def test_steps_left_no_time_are_failed_rows_of_one_table(tmp_path):
    """A budget too short for any step: every step is a FAILED row, the table still prints, copied to OUT."""
    out = tmp_path / "out"
    out.mkdir()
    done = _run(GPU_CHECK_DIR=str(tmp_path / "work"), BUDGET="5", OUT=str(out))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == STEPS
    for r in rows:
        module = next((m for key, m in OPTIONAL.items() if key in r["row"]), None)
        want = "skipped: out of time" if module is None or _has(module) else f"skipped: {module} not installed"
        assert r["failed"] == want, r
    table = (out / "table.md").read_text()
    assert table.startswith("| row | model | tokens/s |") and table.count("FAILED") == len(rows)
    assert table in done.stdout and (out / "gpu_check_logs.tar.gz").is_file()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
