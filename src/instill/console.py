"""What instill prints: `[instill] ...` lines, length percentiles, and progress fit for a log file."""

from __future__ import annotations

import io
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import numpy as np
from tqdm.auto import tqdm


def say(message: str, every_rank: bool = False) -> None:
    """One line of instill's own output on stdout (flushed). Open progress bars are cleared first and
    redrawn after, so the line never lands in the middle of a bar. Under torchrun only rank 0 speaks,
    unless `every_rank` (then other ranks prefix their rank)."""
    rank = int(os.environ.get("RANK", "0"))
    if rank and not every_rank:
        return
    tqdm.write(f"[instill] rank {rank}: {message}" if rank else f"[instill] {message}", file=sys.stdout)
    sys.stdout.flush()


def percentiles(values: Sequence[int], ps: Sequence[int] = (50, 90, 99, 100)) -> dict[str, int]:
    """{"p50": .., "p90": .., ...} of a list of lengths (empty dict for no values)."""
    if not len(values):
        return {}
    return {f"p{p}": int(v) for p, v in zip(ps, np.percentile(np.asarray(values), ps))}


def percentile_line(values: Sequence[int]) -> str:
    """'p50 12 · p90 40 · p99 77 · max 80', or '-' for no values."""
    p = percentiles(values)
    return " · ".join(f"{k} {v}" for k, v in p.items()).replace("p100", "max") if p else "-"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# tqdm's default bar: "{desc}: {percentage}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}]"
_BAR = re.compile(r"^(?P<desc>.*?):?\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>[\d.]+\w?)/(?P<total>[\d.]+\w?)\s*(?P<rest>.*)$")


class ProgressLines(io.TextIOBase):
    """Wraps the stream progress bars go to when it is not a terminal (CI, nohup, a pipe).

    tqdm redraws a bar in place with carriage returns (and moves the cursor for nested bars,
    such as evaluation inside training); in a log file that is one endless line with escape
    codes. Here every redraw is parsed instead, and a bar is written as a plain line at most
    once per `interval` seconds, plus a last line when a bar that took longer than that ends.
    Bars that finish within `interval` print nothing (the command's summary line says what
    they did). Everything else passes through unchanged.
    """

    def __init__(self, stream: TextIO, interval: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream, self._interval, self._clock = stream, interval, clock
        self._bars: dict[str, list[float]] = {}  # bar key -> [first seen, last written]
        self._after_bar = False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str):  # buffer, errors, ...: those of the wrapped stream
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        if "\r" not in text and "\x1b[" not in text:
            if self._after_bar and not text.strip("\n"):
                return len(text)  # tqdm moving to the next line after a redraw (nested bars, leave=True)
            self._after_bar = False
            return self._stream.write(text)
        self._after_bar = True
        for piece in re.split(r"[\r\n]", _ANSI.sub("", text)):
            if piece.strip():
                self._bar(piece.strip())
        return len(text)

    def _bar(self, line: str) -> None:
        match = _BAR.match(line)
        if match:
            key = f"{match['desc']}/{match['total']}"
            finished = match["n"] == match["total"]
            line = f"{match['desc'] or 'progress'}: {match['n']}/{match['total']} ({match['pct']}%) {match['rest']}"
        else:  # a bar without a total ("Map: 120 examples [00:02, 55 examples/s]")
            key, finished = re.sub(r"\d.*", "", line), False
        now = self._clock()
        first, last = self._bars.setdefault(key, [now, now])
        if finished:
            del self._bars[key]
            if now - first < self._interval:
                return
        elif now - last < self._interval:
            return
        else:
            self._bars[key][1] = now
        sys.stdout.flush()  # keep instill's stdout lines in order with these when both go to one file
        self._stream.write(line.rstrip() + "\n")
        self._stream.flush()
