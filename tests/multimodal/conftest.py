"""Fixtures for image SFT: a tiny random-init Qwen2-VL (tests/fixtures/qwen2_vl.py) and LLaMA-Factory's demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

MLLM_DEMO = SHARED_DATA / "llamafactory_mllm_demo"


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tmp_path_factory) -> Path:
    from tests.fixtures.qwen2_vl import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"))
