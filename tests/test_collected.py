"""Every `test_*.py` under tests/ is collected by pytest.

pytest silently skips folders it treats as build output (`build`, `dist`, ...): 49 tests once sat
under tests/data/build and never ran. This runs pytest's own collection and compares.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_file_is_collected() -> None:
    on_disk = {p.relative_to(TESTS.parent).as_posix() for p in TESTS.rglob("test_*.py")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(TESTS)],
        cwd=TESTS.parent, capture_output=True, text=True, timeout=600,
    )
    collected = {line.split("::")[0] for line in run.stdout.splitlines() if "::" in line}
    missing = sorted(on_disk - collected)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert not missing, f"test files pytest never collects: {missing}"
    assert len(collected) == len(on_disk)
