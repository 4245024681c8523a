"""`instill serve` with a vision-language model: OpenAI's image_url content part (a base64 data URL)."""

from __future__ import annotations

import base64

import pytest

from instill.config import build_config
from instill.infer.serve.served import load_served
from instill.infer.serve.server import build_app, build_batcher
from tests.fixtures.qwen2_vl import IMAGE_PAD
from tests.multimodal.conftest import MLLM_DEMO

DATA_URL = "data:image/jpeg;base64," + base64.b64encode((MLLM_DEMO / "mllm_demo_data" / "2.jpg").read_bytes()).decode()


@pytest.fixture(scope="module")
def client(tiny_qwen2_vl, tmp_path_factory):
    from fastapi.testclient import TestClient

    config = build_config({"model_name_or_path": str(tiny_qwen2_vl), "do_train": False, "image_max_pixels": 12544,
                           "output_dir": str(tmp_path_factory.mktemp("none") / "run")})
    served = load_served(config)
    batcher, reason = build_batcher(served)  # continuous asked for: a vision-language model gets static batches
    assert batcher.kind == "static" and "vision-language" in reason
    with TestClient(build_app(served, batcher)) as test_client:
        yield test_client, served
    batcher.close()


def chat(test_client, content, **kwargs):
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3, **kwargs}
    return test_client.post("/v1/chat/completions", json=body)


def test_image_url_part_reaches_the_model(client):
    test_client, served = client
    [name] = served.models
    text = [{"type": "text", "text": "Who is he?"}]
    image = [{"type": "image_url", "image_url": {"url": DATA_URL}}, *text]
    with_image = chat(test_client, image, model=name)
    assert with_image.status_code == 200, with_image.text
    prompt = served.models[name].chat_prompt([{"role": "user", "content": "<image>Who is he?"}], images=[DATA_URL])
    image_tokens = prompt.count(IMAGE_PAD)
    assert 4 <= image_tokens <= 16  # 112x112 pixels at most: 16 tokens of 28x28
    plain = chat(test_client, text, model=name).json()["usage"]["prompt_tokens"]
    # the image block (<|vision_start|>, the pads, <|vision_end|>) sits in front of the same text
    assert with_image.json()["usage"]["prompt_tokens"] == len(prompt) == plain + image_tokens + 2


def test_bad_images_are_400s(client):
    test_client, served = client
    [name] = served.models
    fetch = chat(test_client, [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}], model=name)
    assert fetch.status_code == 400 and "base64 data URL" in fetch.text
    broken = chat(test_client, [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
                  model=name)
    assert broken.status_code == 400 and "not a readable image" in broken.text, broken.text
