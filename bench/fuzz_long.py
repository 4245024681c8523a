"""The fuzz tests (tests/fuzz) at length: hypothesis's "long" profile, 25x the examples of `make test`, random
seeds. A failure prints the smallest input it shrank to; fix instill, then add that input to the test as an
`@example`.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz_long.py            # every door
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz_long.py -k config   # one door (pytest -k)

Extra arguments go to pytest. INSTILL_FUZZ_PROFILE=long is what it sets; the same works on a plain pytest line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    env = {**os.environ, "INSTILL_FUZZ_PROFILE": "long", "HF_HUB_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
               "--hypothesis-show-statistics", str(ROOT / "tests" / "fuzz"), *argv]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
