"""`instill serve` on a real pretrained chat model: SmolLM2-135M-Instruct answers and stops at <|im_end|>."""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.conftest import SMOLLM2
from tests.infer.conftest import AppServer, write_yaml

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France? Answer in one word.", "Say hello in one word.",
             "Name a colour of the sky.", "What is 2 + 2? Answer with a number."]


def test_smollm2_answers_stop_at_end_of_turn_alone_or_batched(smollm2_dir, tmp_path):
    from instill.config import load_config
    from instill.infer.serve.served import load_served

    config = write_yaml(tmp_path / "smol.yaml", model_name_or_path=SMOLLM2, template="auto",
                        output_dir=str(tmp_path / "out"))
    served = load_served(load_config(config))
    [name] = served.models
    model = served.models[name]
    assert model.tokenizer.eos_token == "<|im_end|>" and model.chat_stop_ids == frozenset({2})
    one_at_a_time = AppServer(served, max_batch=1, batching="static", max_tokens=64)  # the server before
    try:
        before = [one_at_a_time.client().chat.completions.create(
            model=name, messages=[{"role": "user", "content": q}], max_tokens=64, temperature=0
        ).choices[0].message.content for q in QUESTIONS]
    finally:
        one_at_a_time.stop()
    app = AppServer(served, window_s=0.3, max_tokens=64)  # continuous batching
    try:
        client = app.client()

        def ask(question: str):
            answer = client.chat.completions.create(model=name, messages=[{"role": "user", "content": question}],
                                                    max_tokens=64, temperature=0)
            return answer.choices[0], answer.usage

        alone = [ask(q) for q in QUESTIONS]
        choice, usage = alone[0]
        assert "Paris" in choice.message.content, choice.message.content
        for choice, usage in alone:
            assert choice.finish_reason == "stop" and usage.completion_tokens < 64, choice
            assert "<|im_end|>" not in choice.message.content and choice.message.content.strip()
        with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
            batched = list(pool.map(ask, QUESTIONS))
        assert [c.message.content for c, _ in batched] == [c.message.content for c, _ in alone] == before
        assert max(app.batcher.stats.batch_sizes) > 1  # they did share a batch
    finally:
        app.stop()
