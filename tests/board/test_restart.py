"""A run started from the board outlives the board: a restarted board finds it again through its output-dir
lock, its curve keeps growing, one run at a time is enforced, and stop (SIGINT) leaves a resumable checkpoint."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from instill.board.app import build_app
from tests.board.conftest import form


def wait_for(client: TestClient, run_id: str, test, seconds: float = 180) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.get("/api/run", params={"id": run_id})
        if response.status_code == 200 and test(response.json()):
            return response.json()
        time.sleep(0.3)
    raise AssertionError(f"timed out; last: {response.json()}")


@pytest.mark.slow  # two training processes start (imports, the model): 40-120 s on a busy 2-core machine
def test_restarted_board_finds_the_running_run_and_stops_it(workspace, tiny_qwen2):
    values = form(workspace, tiny_qwen2, max_steps="2000", output_dir="saves/long")
    first = TestClient(build_app(workspace), base_url="http://127.0.0.1:7860")
    job = first.post("/api/train", json={"values": values, "name": "long"}).json()
    assert job["argv"][-3:] == ["instill.cli", "train", str(workspace / "configs" / "long.yaml")]
    row = wait_for(first, "saves/long", lambda r: r["status"] == "running" and len(r["curves"]["loss"]) >= 2)
    assert row["pid"] == job["pid"] and row["total_steps"] == 2000
    refused = first.post("/api/train", json={"values": {**values, "output_dir": "saves/other"}, "name": "other"})
    assert refused.status_code == 400 and "a run is training in this workspace" in refused.json()["error"]
    first.close()
    del first  # the board restarts; the run goes on

    board = TestClient(build_app(workspace), base_url="http://127.0.0.1:7860")
    listed = {r["id"]: r for r in board.get("/api/runs").json()["runs"]}
    assert listed["saves/long"]["status"] == "running" and listed["saves/long"]["pid"] == job["pid"]
    seen = len(board.get("/api/run", params={"id": "saves/long"}).json()["curves"]["loss"])
    wait_for(board, "saves/long", lambda r: len(r["curves"]["loss"]) > seen + 1)  # the curve keeps updating
    assert board.post("/api/run/stop", json={"id": "saves/long"}).json() == {"signalled": job["pid"]}
    stopped = wait_for(board, "saves/long", lambda r: r["status"] == "stopped", 120)
    assert stopped["checkpoint"].startswith(str(workspace / "saves" / "long" / "checkpoint-"))
    log = board.get("/api/job", params={"id": job["id"]}).json()["log_tail"]
    assert "resume with: instill train" in log

    resumed = board.post("/api/run/resume", json={"id": "saves/long"}).json()
    assert resumed["argv"][-1] == "resume_from_checkpoint=true"
    step = stopped["step"]
    wait_for(board, "saves/long", lambda r: r["status"] == "running" and r["step"] > step)
    board.post("/api/run/stop", json={"id": "saves/long"})
    wait_for(board, "saves/long", lambda r: r["status"] == "stopped", 120)
