"""Fixtures for chat and serve: two LoRA adapters on the tiny Qwen2, configs, servers on 127.0.0.1.

`serve_app` runs the real application under uvicorn in a thread of the test process (so tests can read
its batcher or break its model); `tests/infer/test_cli.py` starts `instill serve` as its own process.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from instill.data.templates import NAMED_JINJA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_yaml(path: Path, **keys) -> Path:
    path.write_text(yaml.safe_dump(keys, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def adapters(tiny_qwen2, tmp_path_factory) -> dict[str, Path]:
    """Two random (non-zero) LoRA adapters on the tiny Qwen2, as training leaves them in output_dir.

    `alpha` has no tokenizer of its own (the base's Qwen2.5 template applies); `beta` was "trained" with
    template: chatml, so its directory holds the tokenizer with that template (no default system prompt).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for seed, name in enumerate(["alpha", "beta"], start=1):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules="all-linear",
                                                init_lora_weights=False))
        model.save_pretrained(root / name)
        out[name] = root / name
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2)
    tokenizer.chat_template = NAMED_JINJA["chatml"][0]
    tokenizer.save_pretrained(out["beta"])
    return out


@pytest.fixture(scope="session")
def serve_yaml(tiny_qwen2, adapters, tmp_path_factory) -> Path:
    """A config serving the tiny base and both adapters (answers at most 16 tokens unless asked)."""
    root = tmp_path_factory.mktemp("serve-config")
    (root / "tiny").symlink_to(tiny_qwen2)  # served under its directory's name: "tiny"
    return write_yaml(root / "serve.yaml", model_name_or_path=str(root / "tiny"), template="auto",
                      adapter_name_or_path=f"{adapters['alpha']},{adapters['beta']}",
                      output_dir=str(root / "out"), max_new_tokens=16)


@pytest.fixture(scope="session")
def served(serve_yaml):
    from instill.config import load_config
    from instill.infer.serve.served import load_served

    return load_served(load_config(serve_yaml), max_model_len=512)


class AppServer:
    """The application under uvicorn in a thread: `url`, `batcher`, `stop()`."""

    def __init__(self, served, api_key=None, max_batch=8, max_queue=64, window_s=0.01, max_tokens=1024,
                 batching="continuous") -> None:
        import uvicorn

        from instill.infer.serve.server import Limits, build_app, build_batcher

        self.batcher, reason = build_batcher(served, batching, max_batch, max_queue, window_s)
        assert reason is None, reason
        app = build_app(served, self.batcher, api_key, Limits(max_tokens=max_tokens))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def client(self, api_key="none", **kwargs):
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.batcher.close()


@pytest.fixture()
def serve_app(served):
    """Start servers on the shared tiny models: `serve_app(**options)`; all stop after the test."""
    started: list[AppServer] = []

    def start(**options) -> AppServer:
        started.append(AppServer(served, **options))
        return started[-1]

    yield start
    for server in started:
        with contextlib.suppress(Exception):
            server.stop()
