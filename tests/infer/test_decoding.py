"""LLaMA-Factory's generating arguments: top_k, num_beams, eval_num_beams, max_length, repetition_penalty,
length_penalty, skip_special_tokens — in eval / predict (Generator), chat and serve (per-row decoding)."""

from __future__ import annotations

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from instill.config import build_config
from instill.errors import ConfigError
from instill.evaluate.tasks import settings_from
from instill.infer.engine import Decoding, check_streamable, load_generator
from instill.infer.serve.rows import IncrementalDecoder, Row, RowSampler, generate_rows

BASE = {"model_name_or_path": "m"}
PROMPTS = [[{"role": "user", "content": "Tell me a long story about rivers."}],
           [{"role": "user", "content": "Hi"}]]


@pytest.fixture(scope="module")
def generator(tiny_qwen2):
    return load_generator(build_config({"model_name_or_path": str(tiny_qwen2)}).model, "qwen")


def direct(generator, prompt_ids, **kwargs):
    """transformers' generate on one unpadded prompt, cut at the first stop token, decoded."""
    out = generator.model.generate(input_ids=torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                                   dtype=torch.long), eos_token_id=generator.stop_ids, pad_token_id=generator.pad_id,
                                   **kwargs)[0, len(prompt_ids):].tolist()
    end = next((n for n, t in enumerate(out) if t in generator.stop_ids), len(out))
    return generator.tokenizer.decode(out[:end], skip_special_tokens=True).strip()


def test_settings_carry_the_generation_keys_and_their_aliases():
    s = settings_from(build_config({**BASE, "top_k": 5, "do_sample": True, "repetition_penalty": 1.3,
                                    "num_beams": 2, "generation_num_beams": 4, "generation_max_length": 300}))
    assert s.decoding == Decoding(top_k=5, num_beams=4, repetition_penalty=1.3, max_length=300)
    assert s.max_new_tokens is None  # max_length bounds prompt + answer; max_new_tokens wins when given
    assert settings_from(build_config(BASE)).max_new_tokens == 512
    assert settings_from(build_config({**BASE, "max_length": 300, "max_new_tokens": 7})).max_new_tokens == 7
    # defaults: greedy, and nothing passed that the model's own generation_config would not give
    assert settings_from(build_config(BASE)).decoding.generate_kwargs(sampling=False) == {}


@pytest.mark.parametrize("bad, message", [
    ({"top_k": 5}, "'top_k' applies only when sampling"),
    ({"length_penalty": 0.5}, "length_penalty applies to beam search only"),
    ({"num_beams": 0}, "invalid value for 'num_beams'"),
    ({"eval_num_beams": 2, "generation_num_beams": 3}, "'generation_num_beams' and 'eval_num_beams' are the same key"),
])
def test_generation_key_mistakes_are_one_line(bad, message):
    with pytest.raises(ConfigError, match=message):
        build_config({**BASE, **bad})


def test_top_k_at_llamafactory_default_is_accepted_greedy():
    assert build_config({**BASE, "top_k": 50}).eval.top_k == 50


def test_generate_ids_does_beam_search_and_repetition_penalty_as_transformers(generator):
    prompts, _ = generator.encode_prompts(PROMPTS)
    greedy = generator.generate_ids(prompts, 12, batch_size=1)
    for kwargs in ({"repetition_penalty": 3.0}, {"num_beams": 3, "length_penalty": 0.2}):
        decoding = Decoding(**kwargs)
        got = generator.generate_ids(prompts, 12, batch_size=1, decoding=decoding)
        assert got == [direct(generator, p, max_new_tokens=12, do_sample=False, **kwargs) for p in prompts]
        assert got != greedy, kwargs
    # max_length: prompt + answer, when max_new_tokens is not given
    short = generator.generate_ids(prompts[1:], None, decoding=Decoding(max_length=len(prompts[1]) + 3))
    assert short == [direct(generator, prompts[1], max_new_tokens=3, do_sample=False)]


def test_skip_special_tokens_false_keeps_control_tokens_and_drops_the_stop(generator, monkeypatch):
    tok = generator.tokenizer
    text = tok("Ans", add_special_tokens=False)["input_ids"]
    middle = tok.convert_tokens_to_ids("<|im_start|>")
    stop = tok.convert_tokens_to_ids("<|im_end|>")

    def fake_generate(input_ids, **kwargs):  # the answer: text, a control token, text, the stop, padding
        tail = torch.tensor([[*text, middle, *text, stop, generator.pad_id, generator.pad_id]])
        return torch.cat([input_ids, tail], dim=1)

    monkeypatch.setattr(generator.model, "generate", fake_generate)
    prompts, _ = generator.encode_prompts(PROMPTS[1:])
    assert generator.generate_ids(prompts, 8) == ["AnsAns"]
    assert generator.generate_ids(prompts, 8, decoding=Decoding(skip_special_tokens=False)) == ["Ans<|im_start|>Ans"]


def test_incremental_decoder_keeps_special_tokens_when_asked(qwen2_tokenizer):
    ids = qwen2_tokenizer("a<|im_start|>b", add_special_tokens=False)["input_ids"]
    for skip, expected in ((True, "ab"), (False, "a<|im_start|>b")):
        decoder = IncrementalDecoder(qwen2_tokenizer, skip)
        assert "".join(decoder.push(i) for i in ids) == expected


def test_row_sampler_penalises_each_row_as_transformers_does(qwen2_tokenizer):
    """Two rows of different prompt lengths (left padding) and penalties; each matches transformers' processor
    on that row alone, padding left out."""
    torch.manual_seed(0)
    rows = [Row([5, 6, 7], qwen2_tokenizer, frozenset(), 4, lambda *a: None, repetition_penalty=1.5),
            Row([8], qwen2_tokenizer, frozenset(), 4, lambda *a: None, repetition_penalty=2.0)]
    width = 3
    input_ids = torch.tensor([[5, 6, 7, 9], [0, 0, 8, 9]])  # the padded prompts and one generated token each
    scores = torch.randn(2, 20)
    got = RowSampler(rows, width, [1.5, 2.0])(input_ids, scores.clone())
    for i, (row_ids, p) in enumerate((([5, 6, 7, 9], 1.5), ([8, 9], 2.0))):
        want = RepetitionPenaltyLogitsProcessor(p)(torch.tensor([row_ids]), scores[i:i + 1].clone())
        torch.testing.assert_close(got[i:i + 1], want)


def test_row_top_k_one_samples_the_greedy_answer(generator):
    prompt = generator.encode_prompts(PROMPTS[:1])[0][0]
    answers = []
    for temperature, top_k in ((0.0, None), (1.5, 1)):
        events: list = []
        row = Row(prompt, generator.tokenizer, frozenset(generator.stop_ids), 10,
                  lambda k, v, events=events: events.append((k, v)), temperature=temperature, top_k=top_k, seed=3)
        generate_rows(generator.model, [row], generator.pad_id)
        answers.append("".join(v for k, v in events if k == "text"))
    assert answers[0] and answers[1] == answers[0]


def test_chat_and_serve_refuse_beam_search():
    check_streamable(build_config(BASE).eval, "instill chat")
    with pytest.raises(ConfigError, match="num_beams: 3: instill serve streams each token"):
        check_streamable(build_config({**BASE, "num_beams": 3}).eval, "instill serve")


def test_chat_answers_as_eval_does_with_repetition_penalty_and_max_length(tiny_qwen2, generator, tmp_path):
    import io

    from instill.infer.chat import run_chat

    question = PROMPTS[0][0]["content"]
    prompt = generator.encode_prompts(PROMPTS[:1])[0][0]
    config = build_config({"model_name_or_path": str(tiny_qwen2), "template": "qwen", "repetition_penalty": 3.0,
                           "max_length": len(prompt) + 10, "output_dir": str(tmp_path / "none")})
    lines = iter([question])

    def read(_: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    run_chat(config, "base", read, out)
    shown = out.getvalue().split("assistant> ", 1)[1].split("\n", 1)[0].removesuffix(" [max tokens]")
    want = generator.generate_ids([prompt], None, decoding=Decoding(repetition_penalty=3.0, max_length=len(prompt) + 10))
    assert shown.strip() == want[0] != generator.generate_ids([prompt], 10)[0]
