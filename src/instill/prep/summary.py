"""What every `instill data` command prints: a progress bar while it works and one summary line at the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "row") -> Iterator[T]:
    """A tqdm bar on stderr that disappears when done (the summary line stays)."""
    return iter(tqdm(items, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True))


def bar(total: int, desc: str, unit: str = "row") -> tqdm:
    """A tqdm bar advanced by hand (``.update(n)``, ``.close()``)."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


class Tally:
    """Rows in, rows out, and why the others were dropped."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.rows_in = 0
        self.rows_out = 0
        self.dropped: Counter[str] = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def line(self, tail: str = "") -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in self.dropped.most_common())
        text = (f"{self.command}: {self.rows_in} rows in, {self.rows_out} out, "
                f"{self.n_dropped} dropped{f' ({why})' if why else ''}")
        return f"{text}{'; ' + tail if tail else ''}"
