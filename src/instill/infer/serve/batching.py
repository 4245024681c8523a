"""Dynamic batching: requests that wait together are generated together.

One worker thread owns the model. Requests queue up; whenever the model is free the worker takes up
to `max_batch` of them (waiting `window_s` after the first, so near-simultaneous arrivals share a
batch) and runs them as one left-padded batch (`rows.generate_rows`); requests that arrive while a
batch runs join the next one. Beyond `max_queue` waiting requests, `submit` refuses with `QueueFull`
(the server's 429). A cancelled request leaves the queue at once, or stops at the next step of its
batch; a batch whose rows are all cancelled ends.

Batching is static (a batch runs until its last row ends) rather than continuous: transformers'
continuous batching needs one adapter per batch and explicit cache sizing, and on this CPU a static
left-padded batch was as fast (see the issue's measurements).
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
    """What the batcher has done, for /metrics and the log."""

    requests: int = 0
    rejected: int = 0
    cancelled: int = 0
    failed_batches: int = 0
    batches: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "rejected": self.rejected, "cancelled": self.cancelled,
                "batches": self.batches, "failed_batches": self.failed_batches, "generated_tokens": self.tokens,
                "busy_seconds": round(self.busy_s, 3), "max_batch_size": max(self.batch_sizes, default=0),
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}


class Batcher:
    """Queues rows and runs them in batches on one worker thread; see the module doc."""

    def __init__(self, run: Callable[[Sequence[Row]], None], max_batch: int = 8, max_queue: int = 64,
                 window_s: float = 0.01) -> None:
        self.run, self.max_batch, self.max_queue, self.window_s = run, max_batch, max_queue, window_s
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
        per_batch = self.stats.busy_s / self.stats.batches if self.stats.batches else 1.0
        return max(1, math.ceil(per_batch * (len(self._pending) / self.max_batch + 1)))

    def _take(self) -> list[Row] | None:
        with self._lock:
            while not self._pending and not self._stopped:
                self._lock.wait()
            if self._stopped:
                return None
            deadline = time.monotonic() + self.window_s
            while len(self._pending) < self.max_batch and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            self._running = batch
            if batch:  # counted before any row is answered, so a client that got its answer sees its batch
                self.stats.batches += 1
                self.stats.batch_sizes[len(batch)] += 1
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
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
                self.stats.tokens += sum(row.tokens for row in batch)
            log.info("batch of %d: %d tokens in %.2f s (%d waiting)", len(batch), sum(r.tokens for r in batch),
                     seconds, len(self._pending))
