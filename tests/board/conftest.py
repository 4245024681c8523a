"""A board workspace: the tiny Qwen2, a small alpaca dataset, and a TestClient on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.conftest import write_dataset

ROWS = [{"instruction": f"Name river {i}.", "input": "", "output": f"The Silverrun {i}."} for i in range(8)]


def form(workspace, tiny_qwen2, **extra) -> dict:
    """Form values for a short LoRA SFT run into workspace/saves/<name> (relative paths, as a user types)."""
    values = {"model_name_or_path": str(tiny_qwen2), "dataset_dir": "data", "dataset": "rivers",
              "cutoff_len": "64", "output_dir": "saves/first", "max_steps": "3", "logging_steps": "1",
              "per_device_train_batch_size": "2", "gradient_accumulation_steps": "1", "save_steps": "100",
              "learning_rate": "1.0e-3", "lora_target": "all", "report_to": "none"}
    return {**values, **extra}


@pytest.fixture()
def workspace(tmp_path):
    ws = tmp_path / "ws"
    write_dataset(ws / "data", "rivers", ROWS)
    return ws


@pytest.fixture()
def board(workspace):
    from fastapi.testclient import TestClient

    from instill.board.app import build_app

    app = build_app(workspace)
    with TestClient(app, base_url="http://127.0.0.1:7860") as client:
        try:
            yield client
        finally:  # as `instill board` does when it stops: no chat server outlives a test
            app.state.jobs.stop_servers()


@pytest.fixture()
def cli_run(workspace, tiny_qwen2):
    """A finished 3-step run made by `instill train` (not the board) into workspace/saves/from-cli."""
    import yaml

    from instill.cli import main

    path = workspace / "cli.yaml"
    values = form(workspace, tiny_qwen2, output_dir=str(workspace / "saves" / "from-cli"), eval_dataset="rivers",
                  dataset_dir=str(workspace / "data"), max_new_tokens=4, eval_steps=3, eval_strategy="steps",
                  per_device_eval_batch_size=8)
    path.write_text(yaml.safe_dump({k: yaml.safe_load(v) if isinstance(v, str) and k not in
                                    ("model_name_or_path", "dataset_dir", "output_dir") else v
                                    for k, v in values.items()}))
    assert main(["train", str(path)]) == 0
    return workspace / "saves" / "from-cli"
