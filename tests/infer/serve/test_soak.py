"""The server soak (bench/soak_serve.py), short: the tiny model, two adapters, every kind of request."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_a_short_soak_passes(tiny_qwen2, adapters, tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench/soak_serve.py"), "--model", str(tiny_qwen2),
         "--adapters", f"{adapters['alpha']},{adapters['beta']}", "--clients", "24", "--duration", "20",
         "--max-concurrency", "4", "--max-queue", "4", "--max-tokens", "16", "--threads", "1",
         "--timeout", "120", "--json", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    summary = json.loads(out.read_text())
    kinds = summary["by_kind_and_status"]
    # every kind of request was sent and answered as it should be, and the queue bound was reached
    for kind in ("plain 200", "stream 200", "malformed 400", "oversize 400", "n2 400", "unknown_model 404"):
        assert kinds.get(kind, 0) > 0, kinds
    assert any(k.endswith(" 429") for k in kinds), kinds
    assert any(k.startswith("disconnect ") for k in kinds), kinds
    assert summary["completed_answers"] > 0 and summary["mismatched_answers"] == 0
    assert summary["failures"] == []
