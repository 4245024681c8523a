"""`instill board`'s JSON API: the form from the schema, YAML that `instill train` runs, the CLI's refusals,
runs listed from files (a CLI-made run too), the sample preview with its mask, the doctor, and the token."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from instill.board.app import build_app
from instill.config import SECTIONS, build_config, load_config
from instill.errors import ConfigError
from instill.stage_facts import STAGE_NAMES
from tests.board.conftest import form


def test_form_schema_has_every_key_with_its_help_and_default(board):
    fields = {f["key"]: f for f in board.get("/api/schema").json()["fields"]}
    assert set(fields) == {k for cls in SECTIONS.values() for k in cls.model_fields}
    trust = fields["trust_remote_code"]
    assert (trust["kind"], trust["default"], trust["section"]) == ("check", False, "model")
    assert trust["help"] == SECTIONS["model"].model_fields["trust_remote_code"].description
    assert fields["stage"]["choices"] == list(STAGE_NAMES) and fields["stage"]["main"]
    assert fields["finetuning_type"]["kind"] == "select" and "lora" in fields["finetuning_type"]["choices"]
    assert fields["model_name_or_path"]["required"] and fields["learning_rate"]["kind"] == "number"


def test_saved_yaml_is_what_train_reads(board, workspace, tiny_qwen2):
    values = form(workspace, tiny_qwen2, finetuning_type="lora", lora_rank="4", packing=True)
    saved = board.post("/api/save", json={"values": values, "name": "rivers-lora"}).json()
    path = workspace / "configs" / "rivers-lora.yaml"
    assert saved == {"path": str(path), "command": "instill train configs/rivers-lora.yaml"}
    raw = yaml.safe_load(path.read_text())
    assert raw["lora_rank"] == 4 and raw["packing"] is True and raw["model_name_or_path"] == str(tiny_qwen2)
    assert "trust_remote_code" not in raw  # off unless the form asks
    from_form = build_config(yaml.safe_load(board.post("/api/yaml", json={"values": values}).json()["yaml"]))
    assert load_config(path).flat() == from_form.flat()
    assert load_config(path).method.lora_rank == 4


def _cli_message(raw: dict) -> str:
    try:
        build_config(raw, source="form")
    except ConfigError as err:
        return str(err)
    raise AssertionError("build_config accepted it")


def test_refusals_are_the_cli_messages(board, workspace, tiny_qwen2):
    for bad, raw in (({"lora_rank": "true"}, {"lora_rank": True}), ({"learning_rate": "fast"}, {"learning_rate": "fast"}),
                     ({"lora_rnak": "8"}, {"lora_rnak": 8})):
        values = form(workspace, tiny_qwen2, **bad)
        expected = _cli_message({**yaml.safe_load(board.post("/api/yaml", json={"values": form(workspace, tiny_qwen2)})
                                                  .json()["yaml"]), **raw})
        assert board.post("/api/yaml", json={"values": values}).json()["error"] == expected
        response = board.post("/api/save", json={"values": values, "name": "x"})
        assert response.status_code == 400 and response.json() == {"error": expected}
    assert "did you mean 'lora_rank'" in expected
    no_data = form(workspace, tiny_qwen2)
    del no_data["dataset"]
    assert board.post("/api/train", json={"values": no_data, "name": "x"}).json()["error"] == \
        "form: training needs 'dataset' (names from dataset_info.json in dataset_dir)"
    assert "use letters, digits" in board.post("/api/save", json={"values": form(workspace, tiny_qwen2),
                                                                   "name": "../escape"}).json()["error"]
    assert not (workspace.parent / "escape.yaml").exists()


def test_datasets_preview_and_doctor(board, workspace, tiny_qwen2):
    assert board.get("/api/datasets?dataset_dir=data").json() == {"datasets": ["rivers"]}
    samples = board.post("/api/preview", json={"values": form(workspace, tiny_qwen2), "n": 2}).json()["samples"]
    assert len(samples) == 2
    trained = "".join(text for text, on in samples[0]["segments"] if on)
    prompt = "".join(text for text, on in samples[0]["segments"] if not on)
    assert trained.strip() == "The Silverrun 0.<|im_end|>" and "Name river 0." in prompt and "<|im_start|>" in prompt
    assert 0 < samples[0]["trained"] < samples[0]["tokens"]
    report = board.post("/api/check", json={"values": form(workspace, tiny_qwen2)}).json()
    rows = {(r["area"], r["name"]): r["status"] for r in report["rows"]}
    assert rows[("template", "stop token")] == "PASS" and rows[("data", "rows rivers")] == "PASS"
    assert report["exit_code"] in (0, 1) and "⟦The Silverrun 0.<|im_end|>" in report["sample"]
    broken = board.post("/api/check", json={"values": form(workspace, tiny_qwen2, dataset="nope")}).json()
    assert any(r["status"] == "FAIL" and "nope" in r["detail"] for r in broken["rows"])


def test_a_cli_run_is_listed_from_its_files(board, cli_run):
    runs = board.get("/api/runs").json()["runs"]
    assert [r["id"] for r in runs] == ["saves/from-cli"]
    row = runs[0]
    assert (row["status"], row["stage"], row["method"], row["step"], row["total_steps"]) == \
        ("finished", "sft", "lora", 3, 3)
    assert row["train_loss"] > 0 and row["eval_loss"] > 0 and row["tokens_per_s"] > 0 and row["wall_s"] > 0
    assert row["report"]
    detail = board.get("/api/run", params={"id": "saves/from-cli"}).json()
    assert [p[0] for p in detail["curves"]["loss"]] == [1, 2, 3]
    assert len(detail["curves"]["learning_rate"]) == 3 and detail["curves"]["eval_loss"]
    page = board.get("/report", params={"id": "saves/from-cli"})
    assert page.status_code == 200 and "<html" in page.text[:200].lower()
    assert board.get("/report", params={"id": "../etc"}).status_code == 404
    assert board.get("/api/compare", params={"id": ["saves/from-cli"]}).json()["error"] == \
        "compare needs two or more runs"


def _finished(board: TestClient, job_id: str, seconds: float = 300) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = board.get("/api/job", params={"id": job_id}).json()
        if not job["alive"] and job["exit_code"] is not None:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still running: {job['log_tail'][-2000:]}")


@pytest.mark.slow  # three subprocesses (eval, export, serve) each import torch and load the model
def test_evaluate_export_and_chat_a_run(board, cli_run, workspace):
    import urllib.request

    ids = {kind: board.post(f"/api/run/{kind}", json={"id": "saves/from-cli"}).json()["id"]
           for kind in ("eval", "export", "chat")}
    evaluated = _finished(board, ids["eval"])
    assert evaluated["exit_code"] == 0, evaluated["log_tail"]
    assert evaluated["argv"][-2:] == ["--compare", "base"] and set(evaluated["comparison"]["metrics"])
    assert board.get("/api/run", params={"id": "saves/from-cli"}).json()["eval"] == evaluated["comparison"]["metrics"]
    exported = _finished(board, ids["export"])
    assert exported["exit_code"] == 0, exported["log_tail"]
    assert list((workspace / "exports" / "from-cli").glob("*.safetensors"))
    deadline = time.monotonic() + 300
    while not board.get("/api/job", params={"id": ids["chat"]}).json().get("ready"):
        assert time.monotonic() < deadline and board.get("/api/job", params={"id": ids["chat"]}).json()["alive"]
        time.sleep(0.5)
    url = board.get("/api/job", params={"id": ids["chat"]}).json()["url"]
    assert url.startswith("http://127.0.0.1:")
    assert "/v1/chat/completions" in urllib.request.urlopen(url).read().decode()  # the serve chat page
    model = json.loads(urllib.request.urlopen(url + "v1/models").read())["data"][-1]["id"]
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Name river 1."}],
                       "max_tokens": 4}).encode()
    request = urllib.request.Request(url + "v1/chat/completions", body, {"Content-Type": "application/json"})
    assert json.loads(urllib.request.urlopen(request).read())["choices"][0]["message"]["role"] == "assistant"
    board.post("/api/job/stop", json={"id": ids["chat"]})
    assert _finished(board, ids["chat"], 60)["alive"] is False


def test_token_when_bound_beyond_loopback(workspace):
    with TestClient(build_app(workspace, token="s3cret", host="0.0.0.0"), base_url="http://10.1.2.3:7860") as client:
        assert client.get("/api/runs").status_code == 401
        assert client.get("/").status_code == 401
        assert client.get("/api/runs", headers={"X-Board-Token": "wrong"}).status_code == 401
        assert client.get("/api/runs", headers={"X-Board-Token": "s3cret"}).status_code == 200
        login = client.get("/?token=s3cret", follow_redirects=False)
        assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
        assert client.get("/api/runs", cookies={"instill_board": "s3cret"}).status_code == 200
    with TestClient(build_app(workspace), base_url="http://evil.example:7860") as client:  # DNS rebinding
        assert client.get("/api/runs").status_code == 403


def test_board_verb_refuses_a_taken_port_and_webui_points_at_it(capsys):
    import socket

    import pytest

    from instill.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["board", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["webui"])
    assert "instill board" in capsys.readouterr().err
