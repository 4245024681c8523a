"""Runs read from their files alone (no model, no training): a run held by a live process on this host is
running and keeps its place across a board restart, its curve grows as its log does, a half-written log line
is skipped, progress comes from max_steps or from data_summary.json, and stop sends SIGINT to the lock's pid."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

from fastapi.testclient import TestClient

from instill.board.app import build_app
from instill.board.runs import total_steps
from instill.train.lock import LOCK_NAME


def _log(out, *records, tail: str = "") -> None:
    with (out / "trainer_log.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_a_locked_run_survives_a_board_restart_and_stops_on_sigint(workspace):
    out = workspace / "saves" / "cli-run"
    out.mkdir(parents=True)
    (out / "run_config.yaml").write_text("stage: sft\nfinetuning_type: lora\nmax_steps: 10\noutput_dir: saves/cli-run\n")
    # a stand-in for `instill train` that stops on SIGINT as training does
    # (it sets its own SIGINT handler, as training does: one started in the background inherits SIGINT ignored)
    holder = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                               "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                               "while True: time.sleep(0.05)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        _log(out, {"step": 1, "loss": 2.0, "learning_rate": 1e-3, "tokens_per_s": 100.0},
             tail='{"step": 2, "lo')  # the run is writing this line right now
        with TestClient(build_app(workspace), base_url="http://127.0.0.1") as board:
            row = board.get("/api/run", params={"id": "saves/cli-run"}).json()
            assert (row["status"], row["pid"], row["step"], row["total_steps"]) == ("running", holder.pid, 1, 10)
            assert row["curves"]["loss"] == [[1, 2.0]] and row["eta_s"] is not None
            refused = board.post("/api/train", json={"values": {"model_name_or_path": "m", "dataset": "rivers"},
                                                     "name": "second"})
            assert refused.json() == {"error": f"a run is training in this workspace ({out}, pid {holder.pid}); "
                                               "stop it or wait for it to finish"}
        with (out / "trainer_log.jsonl").open("a", encoding="utf-8") as fh:
            fh.write('ss": 1.8}\n')  # the line is finished, then one more
        _log(out, {"step": 3, "loss": 1.5})
        with TestClient(build_app(workspace), base_url="http://127.0.0.1") as board:  # restarted
            row = board.get("/api/run", params={"id": "saves/cli-run"}).json()
            assert row["status"] == "running" and [p[0] for p in row["curves"]["loss"]] == [1, 2, 3]
            assert board.post("/api/run/stop", json={"id": "saves/cli-run"}).json() == {"signalled": holder.pid}
            assert holder.wait(timeout=10) == -signal.SIGINT or holder.returncode == 1  # KeyboardInterrupt
            (out / "checkpoint-3").mkdir()
            (out / "checkpoint-3" / "trainer_state.json").write_text("{}")
            row = board.get("/api/run", params={"id": "saves/cli-run"}).json()
            assert row["status"] == "stopped" and row["checkpoint"] == str(out / "checkpoint-3")
            assert board.post("/api/run/stop", json={"id": "saves/cli-run"}).json() == \
                {"error": f"{out} is not running"}
    finally:
        holder.kill()
        holder.wait()


def test_total_steps_from_max_steps_or_the_data_summary(tmp_path):
    assert total_steps({"max_steps": 7}, tmp_path) == 7
    assert total_steps({"max_steps": -1}, tmp_path) is None  # no data summary yet
    (tmp_path / "data_summary.json").write_text(json.dumps({"sets": {"train": {"kept": 10}}}))
    assert total_steps({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                        "num_train_epochs": 3.0}, tmp_path) == 9  # ceil(10 / 4) = 3 steps an epoch


def test_a_stopping_board_stops_the_chat_servers_it_opened_and_nothing_else(workspace):
    from instill.board.jobs import Jobs

    jobs = Jobs(workspace)
    procs = {kind: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for kind in ("serve", "train")}
    try:
        for kind, proc in procs.items():  # records as `Jobs.start` writes them, for stand-in processes
            jobs._write({"id": f"x-{kind}", "kind": kind, "argv": [], "pid": proc.pid, "log": "", "output_dir": None,
                         "started": time.time(), "exit_code": None})
        assert jobs.stop_servers() == [procs["serve"].pid]
        assert procs["serve"].wait(timeout=10) == -signal.SIGTERM
        assert procs["train"].poll() is None  # training goes on without the board
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
