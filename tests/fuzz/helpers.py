"""Shared by the fuzz tests (issue 30): hypothesis profiles, the property every door must keep, the CLI in-process.

Why hypothesis rather than atheris: every door here is Python code that parses structured input (YAML keys
with types, dataset_info.json entries, CSV records, OpenAI bodies), and hypothesis generates that structure
directly, shrinks a failure to a minimal input that reads as a regression `@example`, runs as plain pytest
tests inside `make test` with a fixed seed, and needs no native build. atheris (coverage-guided, libFuzzer) is
best at byte-level parsers in C extensions and needs its own run loop and instrumented interpreter setup.

Profiles (INSTILL_FUZZ_PROFILE): ``ci`` (the default; the `examples(n)` each door asks for, derandomized so a
CI run is reproducible, no deadline) and ``long`` (25x the examples, random seeds; `bench/fuzz_long.py`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

from instill.errors import InstillError

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=False,
                          suppress_health_check=_SLOW)
settings.register_profile("long", deadline=None, derandomize=False, database=None, print_blob=True,
                          suppress_health_check=_SLOW)
PROFILE = os.environ.get("INSTILL_FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)
_FACTOR = {"ci": 1, "long": 25}.get(PROFILE, 1)
# One input that runs longer than this is a hang (the CPU is shared: generous).
HANG_S = int(os.environ.get("INSTILL_FUZZ_HANG_S", "20"))

T = TypeVar("T")


def examples(n: int) -> settings:
    """Settings for one door: `n` examples under the ci profile, 25x as many under long."""
    return settings(max_examples=n * _FACTOR)


@contextlib.contextmanager
def time_limit(seconds: int = HANG_S) -> Iterator[None]:
    """Fail (not wait forever) when the body runs longer than `seconds`: a hang is a bug like a traceback."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line_error(message: str, *names: str) -> None:
    """The property of every refusal: one line, naming one of `names` (the file, or the key or field)."""
    assert message.strip(), "an empty error message"
    assert not re.search(r"[\r\n]", message.strip()), f"error of several lines: {message!r}"
    assert "Traceback" not in message, message
    if names:
        assert any(name in message for name in names), f"{message!r} names none of {names}"


def accepted_or_refused(call: Callable[[], T], *names: str, error: type[InstillError] = InstillError) -> T | None:
    """`call()`'s result, or None when it raised `error` as one line naming one of `names`. Anything else
    (another exception, a hang) fails the test with its traceback."""
    with time_limit():
        try:
            return call()
        except error as err:
            one_line_error(str(err), *names)
            return None


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`instill ARGV` in this process: (exit code, stdout, stderr)."""
    from instill.cli import main

    out, err = io.StringIO(), io.StringIO()
    with time_limit(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse
            code = stop.code if isinstance(stop.code, int) else 2
    return code, out.getvalue(), err.getvalue()


_ERROR = re.compile(r"^instill(?: [a-z-]+)*: error: ")


def cli_ok_or_one_line(argv: list[str], *names: str) -> tuple[int, str, str]:
    """Run the CLI; exit 0, or exit 2 with one stderr line `instill: error: ...` naming one of `names`."""
    code, out, err = run_cli(argv)
    assert "Traceback" not in out + err, err
    if code == 0:
        return code, out, err
    lines = [line for line in re.split(r"\r\n|\r|\n", err) if line.strip()]
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert len(lines) == 1, f"{len(lines)} stderr lines: {err[-2000:]}"
    assert _ERROR.match(lines[0]), lines[0]
    one_line_error(lines[0], *names)
    return code, out, err
