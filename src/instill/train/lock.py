"""One run per output_dir: a lock file holding the owner's pid, host and start time.

Taken with O_CREAT|O_EXCL before any model loads and removed when the run ends (however it ends, short
of kill -9). A second run into the same output_dir refuses in one line naming the owner. A lock left by a
process that is gone (kill -9, a crash, a reboot) is stale: it is replaced with a note. A lock from
another host cannot be checked (shared file systems) and is honoured; the message says how to remove it.
Limit: a recycled pid that now belongs to an unrelated process reads as alive (the user removes the file).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from instill.console import say
from instill.errors import ConfigError

LOCK_NAME = ".instill.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _create(path: Path) -> bool:
    """Write our lock file; False if one exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
    return True


def acquire(output_dir: str | Path) -> Path:
    """Take the lock of `output_dir` (created if missing); ConfigError if a live run holds it."""
    out = Path(output_dir)
    path = out / LOCK_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        created = _create(path)
    except OSError as err:  # read-only, permission denied, a file in the way: before any model loads
        raise ConfigError(f"output_dir {out} is not writable ({err.strerror or err})") from None
    for _ in range(3):  # a stale lock removed by a racing run: try again
        if created or _create(path):
            return path
        owner = _owner(path)
        pid, host = owner.get("pid"), owner.get("host")
        if host not in (None, socket.gethostname()):
            raise ConfigError(f"output_dir {out} is in use by a run on host {host} (pid {pid}, started "
                              f"{owner.get('started')}); if that run is over, delete {path}")
        if isinstance(pid, int) and _alive(pid):
            raise ConfigError(f"output_dir {out} is in use by another run (pid {pid}, started {owner.get('started')}); "
                              "wait for it to finish or choose another output_dir")
        say(f"removed a stale lock in {out} (pid {pid} is gone)")
        path.unlink(missing_ok=True)
        created = False
    raise ConfigError(f"output_dir {out}: cannot take the lock {path}; another run keeps taking it")


def holder(output_dir: str | Path) -> dict | None:
    """The owner record ({pid, host, started}) of a live run holding `output_dir`'s lock on this host, else None
    (no lock, a stale one, or one from another host, which cannot be checked)."""
    owner = _owner(Path(output_dir) / LOCK_NAME)
    pid = owner.get("pid")
    if owner.get("host") == socket.gethostname() and isinstance(pid, int) and _alive(pid):
        return owner
    return None


def release(path: Path) -> None:
    """Remove our lock file (only if it is still ours)."""
    if _owner(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextmanager
def output_lock(output_dir: str | Path) -> Iterator[Path]:
    """Hold the lock of `output_dir` for the block."""
    path = acquire(output_dir)
    try:
        yield path
    finally:
        release(path)
