"""Score mode: exact log-likelihoods, invariant to batching and padding, agreeing with generation."""

from __future__ import annotations

import ast
import math

import pytest
import torch

from instill.config import ModelArgs, build_config
from instill.evaluate.classify import match_label
from instill.evaluate.runner import evaluate_samples, load_samples
from instill.infer.engine import Generator, load_generator
from instill.infer.score import LabelScore, answer_ids, batch_calibrate, continuation_logprobs, score_labels

CONVERSATIONS = [
    [{"role": "user", "content": "新闻：今天的足球比赛很精彩。"}],
    [{"role": "system", "content": "你是中文新闻分类器。"}, {"role": "user", "content": "新闻：" + "股市大涨，" * 6}],
    [{"role": "user", "content": "新闻：议会通过了新的法案"}],
    [{"role": "user", "content": "Headline: chip maker beats estimates " * 3}],
    [{"role": "user", "content": "短"}],
]
CANDIDATES = [["体育", "财经", "政治"], ["财经", "计算机"], ["体育", "体育新闻", "政治", "财经"], ["A", "B", "C", "D"], ["体育"]]


@pytest.fixture(scope="module")
def generator(tiny_qwen2) -> Generator:
    return load_generator(ModelArgs(model_name_or_path=str(tiny_qwen2)), "auto")


def naive_logprob(gen: Generator, conversation: list[dict], answer: str) -> float:
    """log p(answer tokens | prompt) from one plain forward over prompt + answer, no cache, no padding."""
    text = gen.render(conversation)
    prompt = gen.encode(text)
    ans = answer_ids(gen, conversation, answer, text, prompt)
    with torch.no_grad():
        logp = torch.log_softmax(gen.model(torch.tensor([prompt + ans])).logits.float(), -1)[0]
    return sum(logp[len(prompt) - 1 + j, tok].item() for j, tok in enumerate(ans))


def test_answer_tokens_are_the_trained_turn_through_end_of_turn(generator):
    conversation = CONVERSATIONS[0]
    text = generator.render(conversation)
    ids = answer_ids(generator, conversation, "\\boxed{体育}", text, generator.encode(text))
    assert generator.tokenizer.decode(ids) == "\\boxed{体育}<|im_end|>"


def test_scores_equal_a_plain_forward(generator):
    results = score_labels(generator, CONVERSATIONS, CANDIDATES, "\\boxed{{label}}", batch_size=3)
    for conversation, labels, result in zip(CONVERSATIONS, CANDIDATES, results):
        assert list(result.scores) == labels
        for label in labels:
            expected = naive_logprob(generator, conversation, f"\\boxed{{{label}}}")
            assert result.scores[label] == pytest.approx(expected, abs=1e-3)
        assert result.label == max(labels, key=result.scores.get)
        exp = torch.tensor(list(result.scores.values())).softmax(0)
        assert result.confidence == pytest.approx(exp.max().item(), rel=1e-5)


@pytest.mark.parametrize("batch_size, side", [(1, "left"), (2, "right"), (5, "left"), (5, "right")])
def test_invariant_to_batch_size_and_padding_side(generator, batch_size, side):
    reference = score_labels(generator, CONVERSATIONS, CANDIDATES, batch_size=3, padding_side="left")
    results = score_labels(generator, CONVERSATIONS, CANDIDATES, batch_size=batch_size, padding_side=side)
    for ref, got in zip(reference, results):
        assert got.label == ref.label
        assert list(got.scores.values()) == pytest.approx(list(ref.scores.values()), abs=1e-3)


def test_many_candidates_of_different_lengths_packed_in_one_row(generator):
    """Candidates of 1 to 9 tokens share one packed row; each sees only the prompt and itself."""
    labels = ["体育", "财经新闻与股票市场分析", "政治", "A", "计算机科学与技术", "Sports", "经济", "天气预报", "X Y Z"]
    results = score_labels(generator, CONVERSATIONS[:3], [labels] * 3, batch_size=3, padding_side="right")
    for conversation, result in zip(CONVERSATIONS, results):
        for label in labels:
            assert result.scores[label] == pytest.approx(naive_logprob(generator, conversation, label), abs=1e-3)


def test_single_token_continuations(generator):
    """With no end-of-turn to score, a one-token answer is scored from the prompt pass alone."""
    text = [generator.encode(generator.render(c)) for c in CONVERSATIONS[:2]]
    answers = [[[generator.encode(label)[0]] for label in ("A", "B")]] * 2
    got = continuation_logprobs(generator.model, text, answers, generator.pad_id, batch_size=2)
    for prompt, cands, values in zip(text, answers, got):
        with torch.no_grad():
            logp = torch.log_softmax(generator.model(torch.tensor([prompt])).logits[0, -1].float(), -1)
        assert values == pytest.approx([logp[c[0]].item() for c in cands], abs=1e-4)


def test_long_prompts_are_cut_in_the_middle(generator):
    results = score_labels(generator, CONVERSATIONS, CANDIDATES, max_prompt_tokens=30)
    lengths = [len(generator.encode(generator.render(c))) for c in CONVERSATIONS]
    assert [r.truncated for r in results] == [n > 30 for n in lengths]
    assert any(r.truncated for r in results) and not all(r.truncated for r in results)


def test_scores_through_a_lora_adapter(tiny_qwen2, tmp_path, generator):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    torch.manual_seed(0)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    tuned = load_generator(ModelArgs(model_name_or_path=str(tiny_qwen2)), "auto", adapter=tmp_path / "adapter")
    results = score_labels(tuned, CONVERSATIONS[:2], CANDIDATES[:2], batch_size=2)
    base = score_labels(generator, CONVERSATIONS[:2], CANDIDATES[:2], batch_size=2)
    for conversation, result, before in zip(CONVERSATIONS, results, base):
        for label, value in result.scores.items():
            assert value == pytest.approx(naive_logprob(tuned, conversation, label), abs=1e-3)
            assert value != pytest.approx(before.scores[label], abs=1e-2)


def test_score_and_generate_agree_on_a_trained_model(trained_toy):
    """On a model that learned the task, ranking the labels picks what greedy decoding writes."""
    raw = {**trained_toy["config"], "model_name_or_path": str(trained_toy["model"])}
    tuned = load_generator(ModelArgs(model_name_or_path=str(trained_toy["model"])), "empty")
    outcomes = {}
    for mode in ("generate", "score"):
        config = build_config({**raw, "eval_mode": mode})
        samples = load_samples(config)
        rows, report = evaluate_samples(tuned, samples, config, progress=False)
        outcomes[mode] = ([r["label"] for r in rows], report)
    labels_generated, generated = outcomes["generate"]
    labels_scored, scored = outcomes["score"]
    assert labels_scored == labels_generated
    assert generated["accuracy"] == scored["accuracy"] >= 0.9
    assert generated["invalid"] == scored["invalid"] == 0
    assert scored["label_template"] == "{label}"
    # and what was generated is literally the label, as trained
    replies = tuned.generate([s.prompt for s in samples[:4]], max_new_tokens=8)
    assert [match_label(r, s.extras["category"]) for r, s in zip(replies, samples)] == labels_generated[:4]
    assert all(r in ast.literal_eval(s.extras["category"]) for r, s in zip(replies, samples))


def _row(**probs: float) -> LabelScore:
    scores = {k: math.log(p) for k, p in probs.items()}
    best = max(scores, key=scores.get)
    return LabelScore(best, probs[best], scores)


def test_batch_calibration_by_hand():
    """p(A) = .9 .8 .6 .5: raw picks A four times; prior A = .7, B = .3, so rows 3 and 4 become B."""
    rows = [_row(A=0.9, B=0.1), _row(A=0.8, B=0.2), _row(A=0.6, B=0.4), _row(A=0.5, B=0.5)]
    calibrated, prior = batch_calibrate(rows)
    assert prior == pytest.approx({"A": 0.7, "B": 0.3})
    assert [r.label for r in rows] == ["A", "A", "A", "A"]
    assert [r.label for r in calibrated] == ["A", "A", "B", "B"]
    # row 3: .6/.7 vs .4/.3 -> B with (.4/.3) / (.6/.7 + .4/.3)
    assert calibrated[2].confidence == pytest.approx((0.4 / 0.3) / (0.6 / 0.7 + 0.4 / 0.3))
    assert calibrated[2].calibrated["B"] == pytest.approx(math.log(0.4) - math.log(0.3))
    assert calibrated[2].scores == rows[2].scores  # raw scores kept


def test_batch_calibration_with_row_specific_candidates():
    """A label's prior averages only the rows that offer it; probabilities are per row's candidates."""
    rows = [_row(A=0.7, B=0.3), _row(A=0.5, C=0.5), _row(B=0.2, C=0.8)]
    calibrated, prior = batch_calibrate(rows)
    assert prior == pytest.approx({"A": 0.6, "B": 0.25, "C": 0.65})
    assert [set(r.calibrated) for r in calibrated] == [{"A", "B"}, {"A", "C"}, {"B", "C"}]
    # .3/.25 > .7/.6 flips row 1 to B; .5/.6 > .5/.65 breaks row 2's tie for A; .8/.65 > .2/.25
    assert [r.label for r in calibrated] == ["B", "A", "C"]


def test_batch_calibration_of_an_unbiased_model_changes_nothing():
    rows = [_row(A=0.9, B=0.1), _row(A=0.1, B=0.9), _row(A=0.7, B=0.3), _row(A=0.3, B=0.7)]
    calibrated, prior = batch_calibrate(rows)
    assert prior == pytest.approx({"A": 0.5, "B": 0.5})
    assert [r.label for r in calibrated] == [r.label for r in rows]
