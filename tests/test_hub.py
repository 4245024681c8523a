"""Where models come from: errors are one line, offline is explained."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from instill.config import ModelArgs
from instill.errors import ModelError
from instill.hub import resolve_model, resolve_model_args


def test_offline_hub_id_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct-not-cached")
    msg = str(err.value)
    assert "offline (HF_HUB_OFFLINE=1)" in msg and "set model_name_or_path to that directory" in msg and "\n" not in msg


def test_modelscope_without_package(monkeypatch):
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    monkeypatch.setitem(sys.modules, "modelscope", None)  # as if not installed
    with pytest.raises(ModelError, match="'modelscope' package is not installed"):
        resolve_model("qwen/Qwen2.5-0.5B-Instruct")


def test_openmind_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("USE_OPENMIND_HUB", "1")
    monkeypatch.setitem(sys.modules, "openmind_hub", None)  # as if not installed
    with pytest.raises(ModelError, match="'openmind_hub' package is not installed"):
        resolve_model("Baichuan/Baichuan2_7b_chat_pt")
    calls = []
    client = types.ModuleType("openmind_hub")
    client.snapshot_download = lambda repo_id, **kw: calls.append((repo_id, kw)) or str(tmp_path)
    monkeypatch.setitem(sys.modules, "openmind_hub", client)
    assert resolve_model("Baichuan/Baichuan2_7b_chat_pt", str(tmp_path), "v1") == tmp_path
    assert calls == [("Baichuan/Baichuan2_7b_chat_pt", {"revision": "v1", "cache_dir": str(tmp_path), "token": None})]
    # a config's model section passes its cache_dir, revision and token the same way
    args = ModelArgs(model_name_or_path="Baichuan/Baichuan2_7b_chat_pt", cache_dir=str(tmp_path), model_revision="v2",
                     hf_hub_token="t")
    assert resolve_model_args(args) == tmp_path
    assert calls[-1] == ("Baichuan/Baichuan2_7b_chat_pt", {"revision": "v2", "cache_dir": str(tmp_path), "token": "t"})


def test_local_paths(tmp_path, tiny_qwen2):
    assert resolve_model(str(tiny_qwen2)) == tiny_qwen2
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .gguf"):
        resolve_model(str(tmp_path / "w.bin"))
    with pytest.raises(ModelError, match="not found: not a local path"):
        resolve_model("./missing/model")
    with pytest.raises(ModelError, match="package 'no_such_pkg' is not installed"):
        resolve_model("pkg:no_such_pkg/x.gguf")


def test_cli_reports_missing_model_in_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_name_or_path: Qwen/Not-A-Cached-Model\ndataset: x\noutput_dir: " + str(tmp_path / "o") + "\n")
    proc = subprocess.run([sys.executable, "-m", "instill.cli", "train", str(cfg)], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Qwen/Not-A-Cached-Model" in proc.stderr
