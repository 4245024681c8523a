"""export_hub_model_id: `instill export` uploads export_dir to the hub (a local stand-in answers whoami)."""

from __future__ import annotations

from pathlib import Path

import pytest

from instill.config import build_config
from instill.errors import ConfigError, ModelError
from instill.model.export import export_model
from tests.conftest import HUB_TOKEN


def config(tiny_qwen2, out, **keys):
    return build_config({"model_name_or_path": str(tiny_qwen2), "export_dir": str(out),
                         "export_hub_model_id": "tester/merged", **keys})


def test_export_offline_stops_before_anything_is_written(tiny_qwen2, tmp_path):
    with pytest.raises(ConfigError, match="export_hub_model_id: the Hugging Face Hub is offline"):
        export_model(config(tiny_qwen2, tmp_path / "out", hf_hub_token=HUB_TOKEN))
    assert not (tmp_path / "out").exists()


def test_export_uploads_the_folder_with_hf_hub_token(tiny_qwen2, tmp_path, local_hub, monkeypatch):
    import huggingface_hub

    calls = []

    def create_repo(self, repo_id, exist_ok=False, **kwargs):
        calls.append(("create", repo_id, self.token, exist_ok))

    def upload_folder(self, repo_id, folder_path, commit_message, **kwargs):
        calls.append(("upload", repo_id, self.token, sorted(p.name for p in Path(folder_path).iterdir())))
        return type("Commit", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = export_model(config(tiny_qwen2, tmp_path / "out", hf_hub_token=HUB_TOKEN))
    assert calls[0] == ("create", "tester/merged", HUB_TOKEN, True)
    kind, repo, token, files = calls[1]
    assert (kind, repo, token) == ("upload", "tester/merged", HUB_TOKEN)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert not [p for p in out.rglob("*") if p.is_file() and HUB_TOKEN.encode() in p.read_bytes()]

    def refused(self, *args, **kwargs):
        raise RuntimeError("403 Forbidden: no write access")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refused)
    with pytest.raises(ModelError, match=r"export_hub_model_id: uploading .* failed .*hf upload tester/merged"):
        export_model(config(tiny_qwen2, tmp_path / "again", hf_hub_token=HUB_TOKEN))
    with pytest.raises(ConfigError, match="refused the token"):
        export_model(config(tiny_qwen2, tmp_path / "bad", hf_hub_token="hf_wrong"))
