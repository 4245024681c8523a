"""Commands the board starts: `instill train / eval / export / serve` as subprocesses (an argument list,
never a shell string), each with a record in <workspace>/.board/jobs/ (argv, pid, log file, output_dir) and
its output in <workspace>/.board/logs/. Children run in their own session, so a board that stops or
restarts leaves training, eval and export running; the new board finds a training run again through its
output-dir lock. Chat servers belong to the board that opened them: it stops them when it stops.

Training runs one at a time per workspace: a start is refused while any run the board knows of holds its
output-dir lock (train/lock.py) or a training job it started has not taken it yet.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from instill.errors import ConfigError
from instill.train.lock import holder

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{what} {name!r}: use letters, digits, '_', '-' and '.' (at most 80, no '/')")
    return name


def alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True  # a child of this board is reaped by its job's thread as soon as it ends


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Jobs:
    """The board's subprocesses and their records."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.dir = workspace / ".board" / "jobs"
        self.logs = workspace / ".board" / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}

    def records(self) -> list[dict]:
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            proc = self._procs.get(record.get("id"))
            if proc is not None and proc.poll() is not None and record.get("exit_code") is None:
                record["exit_code"] = proc.returncode
                self._write(record)
            record["alive"] = record.get("exit_code") is None and alive(record.get("pid"))
            out.append(record)
        return out

    def get(self, job_id: str) -> dict:
        record = next((r for r in self.records() if r["id"] == job_id), None)
        if record is None:
            raise ConfigError(f"no job {job_id!r} in this workspace")
        return record

    def log_tail(self, job_id: str, chars: int = 6000) -> str:
        path = Path(self.get(job_id)["log"])
        try:
            with path.open("rb") as fh:
                fh.seek(max(path.stat().st_size - chars, 0))
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _write(self, record: dict) -> None:
        saved = {k: v for k, v in record.items() if k != "alive"}
        (self.dir / f"{record['id']}.json").write_text(json.dumps(saved, indent=1), encoding="utf-8")

    def train_job(self, output_dir: Path) -> dict | None:
        """The record of the last training process into `output_dir` (None: the board started none)."""
        mine = [r for r in self.records() if r["kind"] == "train" and r.get("output_dir") == str(output_dir)]
        return mine[-1] if mine else None

    def start(self, kind: str, args: list[str], output_dir: Path | None = None, **extra: Any) -> dict:
        """Run `instill <kind> <args...>` in the workspace; train refuses while another run trains."""
        with self._lock:
            if kind == "train":
                self._check_one_at_a_time()
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{len(list(self.dir.glob('*.json'))) + 1}"
            log = self.logs / f"{job_id}.log"
            argv = [sys.executable, "-m", "instill.cli", kind, *args]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with log.open("wb") as fh:
                proc = subprocess.Popen(argv, cwd=self.workspace, stdin=subprocess.DEVNULL, stdout=fh,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self._procs[job_id] = proc
            record = {"id": job_id, "kind": kind, "argv": argv, "pid": proc.pid, "log": str(log),
                      "output_dir": str(output_dir) if output_dir else None, "started": time.time(),
                      "exit_code": None, **extra}
            self._write(record)
            threading.Thread(target=self._reap, args=(job_id, proc), daemon=True).start()
            return {**record, "alive": True}

    def _reap(self, job_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        path = self.dir / f"{job_id}.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        record["exit_code"] = code
        self._write(record)

    def _check_one_at_a_time(self) -> None:
        for record in self.records():
            if record["kind"] != "train" or not record.get("output_dir"):
                continue
            owner = holder(record["output_dir"])
            if owner is not None:
                raise ConfigError(f"a run is training in this workspace ({record['output_dir']}, pid {owner['pid']}); "
                                  "stop it or wait for it to finish")
            if record["alive"]:
                raise ConfigError(f"a run is starting in this workspace ({record['output_dir']}, pid "
                                  f"{record['pid']}); wait for it")

    def busy(self, runs: list[Path]) -> None:
        """Refuse while any run of the workspace (CLI-started ones too) holds its lock."""
        for out in runs:
            owner = holder(out)
            if owner is not None:
                raise ConfigError(f"a run is training in this workspace ({out}, pid {owner['pid']}); stop it or wait "
                                  "for it to finish")

    def stop_run(self, output_dir: Path) -> int:
        """SIGINT to the process holding the run's lock: the Ctrl-C stop (checkpoint saved, resumable)."""
        owner = holder(output_dir) or self.train_job(output_dir) or {}
        if owner.get("alive") is False or not alive(owner.get("pid")):
            raise ConfigError(f"{output_dir} is not running")
        os.kill(owner["pid"], signal.SIGINT)
        return owner["pid"]

    def stop_servers(self) -> list[int]:
        """SIGTERM to every chat server this workspace's board started that still runs (a server belongs to the
        board that opened it; training runs go on). Their pids."""
        pids = [r["pid"] for r in self.records() if r["kind"] == "serve" and r["alive"]]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return pids

    def stop_job(self, job_id: str) -> None:
        record = self.get(job_id)
        if record["alive"]:
            os.kill(record["pid"], signal.SIGINT if record["kind"] != "serve" else signal.SIGTERM)
