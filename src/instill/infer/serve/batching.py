"""Queues of requests in front of the model: static batches (`Batcher`) and the base both batchers share.

One worker thread owns the model. Requests queue up; beyond `max_queue` waiting requests, `submit`
refuses with `QueueFull` (the server's 429). A cancelled request leaves the queue at once, or stops at
the next step of its batch.

`Batcher` is static batching: whenever the model is free the worker takes up to `max_batch` requests
(waiting `window_s` after the first, so near-simultaneous arrivals share a batch) and runs them as one
left-padded batch (`rows.generate_rows`) until its last row ends; requests that arrive meanwhile join
the next batch. `continuous.ContinuousBatcher` instead adds rows to the running batch at every decode
step and retires them as they finish; the server uses it wherever the model's cache allows.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from instill.infer.serve.rows import Row

log = logging.getLogger("instill.serve")


class QueueFull(Exception):
    """More requests wait than the queue holds; `retry_after` is a guess in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"server busy: the request queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Stats:
    """What the batcher has done, for /metrics and the log.

    A "batch" is a group of requests started together: a whole static batch, or the rows a continuous
    batcher prefilled together and added to the running batch; `batch_sizes` counts, for each group, the
    rows generating once it started. `steps` and `row_steps` count decode steps and the rows in them.
    """

    requests: int = 0
    rejected: int = 0
    cancelled: int = 0
    failed_batches: int = 0
    batches: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    steps: int = 0
    row_steps: int = 0
    finished: int = 0
    row_s: float = 0.0  # seconds from start to end, summed over finished rows
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "rejected": self.rejected, "cancelled": self.cancelled,
                "batches": self.batches, "failed_batches": self.failed_batches, "generated_tokens": self.tokens,
                "busy_seconds": round(self.busy_s, 3), "max_batch_size": max(self.batch_sizes, default=0),
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "decode_steps": self.steps, "decode_row_steps": self.row_steps,
                "mean_rows_per_step": round(self.row_steps / self.steps, 3) if self.steps else 0.0}


class BaseBatcher:
    """The queue, cancel and shutdown both batchers share; `_loop` (the worker) is the subclass's."""

    kind = ""

    def __init__(self, max_batch: int = 8, max_queue: int = 64, window_s: float = 0.01) -> None:
        self.max_batch, self.max_queue, self.window_s = max_batch, max_queue, window_s
        self.stats = Stats()
        self._pending: collections.deque[Row] = collections.deque()
        self._running: list[Row] = []
        self._lock = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="instill-batcher", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return sum(not row.done for row in self._running)

    def submit(self, row: Row) -> None:
        """Queue a row, or raise QueueFull."""
        with self._lock:
            if len(self._pending) >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(self._retry_after())
            self.stats.requests += 1
            self._pending.append(row)
            self._lock.notify_all()

    def cancel(self, row: Row) -> None:
        """The client is gone: drop the row from the queue, or stop it at the next step."""
        with self._lock:
            if row.done:
                return
            row.cancel()
            self.stats.cancelled += 1
            try:
                self._pending.remove(row)
            except ValueError:
                pass

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            for row in self._pending:
                row.fail("server shutting down")
            self._pending.clear()
            for row in self._running:
                row.cancel()
            self._lock.notify_all()
        self._thread.join(timeout=30)

    def _retry_after(self) -> int:
        """Seconds until a slot is likely free: a request's mean time, once per round of `max_batch`."""
        stats = self.stats
        per_round = stats.row_s / stats.finished if stats.finished else 1.0
        return max(1, math.ceil(per_round * (len(self._pending) / self.max_batch + 1)))

    def _take(self, limit: int, wait: bool) -> list[Row] | None:
        """Up to `limit` queued rows; None once closed. With `wait`, block for the first row, then wait
        `window_s` for more; without, take what is queued now (possibly nothing)."""
        with self._lock:
            while wait and not self._pending and not self._stopped:
                self._lock.wait()
            if self._stopped:
                return None
            if wait:
                deadline = time.monotonic() + self.window_s
                while len(self._pending) < limit and not self._stopped:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._lock.wait(left)
            return [self._pending.popleft() for _ in range(min(limit, len(self._pending)))]

    def _finished(self, rows: Sequence[Row], seconds: float) -> None:
        """Count rows that ended, `seconds` after they started."""
        self.stats.tokens += sum(row.tokens for row in rows)
        self.stats.finished += len(rows)
        self.stats.row_s += seconds * len(rows)

    def _loop(self) -> None:
        raise NotImplementedError


class Batcher(BaseBatcher):
    """Static batching: runs queued rows in batches with `run`; see the module doc."""

    kind = "static"

    def __init__(self, run: Callable[[Sequence[Row]], None], max_batch: int = 8, max_queue: int = 64,
                 window_s: float = 0.01) -> None:
        self.run = run
        super().__init__(max_batch, max_queue, window_s)

    def _loop(self) -> None:
        while True:
            batch = self._take(self.max_batch, wait=True)
            if batch is None:
                return
            if not batch:
                continue
            with self._lock:  # counted before any row is answered, so a client that got its answer sees its batch
                self._running = batch
                self.stats.batches += 1
                self.stats.batch_sizes[len(batch)] += 1
            start = time.perf_counter()
            try:
                self.run(batch)
            except Exception:  # the rows already carry the error to their clients; keep serving
                self.stats.failed_batches += 1
                log.exception("generation failed for a batch of %d", len(batch))
            seconds = time.perf_counter() - start
            with self._lock:
                self._running = []
                self.stats.busy_s += seconds
                self._finished(batch, seconds)
            log.info("batch of %d: %d tokens in %.2f s (%d waiting)", len(batch), sum(r.tokens for r in batch),
                     seconds, len(self._pending))
