"""Which predictions to show: a fixed number, right and wrong ones both, in a stable order."""

from __future__ import annotations


def pick_samples(rows: list[dict], n: int = 20) -> list[dict]:
    """Up to n rows: half wrong and half correct when both exist (the rest from the other kind),
    then rows with no verdict; each kind in file order, so the same predictions give the same pick."""
    wrong = [r for r in rows if r.get("correct") is False]
    right = [r for r in rows if r.get("correct") is True]
    other = [r for r in rows if r.get("correct") is None]
    take_wrong = min(len(wrong), max(n // 2, n - len(right)))
    take_right = min(len(right), n - take_wrong)
    picked = wrong[:take_wrong] + right[:take_right]
    picked += other[: n - len(picked)]
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(picked, key=lambda r: order[id(r)])
