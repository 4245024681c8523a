from math import exp

import pytest

from instill.errors import DataError
from instill.evaluate.textgen import bleu_scores, generation_metrics, rouge_scores

SCORE_KEYS = ["bleu-1", "bleu-2", "bleu-3", "bleu-4", "rouge-1", "rouge-2", "rouge-l"]


def test_identical_strings_score_100():
    refs = ["今天天气很好，我们去公园散步。", "体育", "Hello world, 你好世界！"]
    m = generation_metrics(refs, list(refs))
    assert m["n"] == 3
    for key in SCORE_KEYS:
        assert m[key] == pytest.approx(100.0), key
    assert m["exact_match"] == 1.0 and m["empty"] == 0


def test_disjoint_strings_score_0():
    m = generation_metrics(["今天天气很好", "北京上海"], ["明日有雨", "广州深圳"])
    for key in SCORE_KEYS:
        assert m[key] == 0.0, key
    assert m["exact_match"] == 0.0


def test_bleu_by_hand_character_level():
    # ref 今天天气很好 (6 chars), hyp 今天天气 (4 chars): every 1..4-gram of the hypothesis
    # is in the reference, so all precisions are 1 and BLEU-n = brevity penalty
    # = exp(1 - 6/4) = exp(-0.5) = 60.6531 for n = 1..4.
    scores = bleu_scores(["今天天气很好"], ["今天天气"])
    for n in range(1, 5):
        assert scores[f"bleu-{n}"] == pytest.approx(100 * exp(-0.5), abs=1e-3)


def test_bleu_is_corpus_level():
    # Counts are pooled: hyp1 "甲乙" matches 2/2 unigrams, hyp2 "丙丁" 0/2 -> p1 = 2/4,
    # lengths 4 = 4 so BP = 1: BLEU-1 = 50. (The mean of sentence BLEU-1 would also be 50 here,
    # but BLEU-2 differs: pooled bigram precision 1/2 -> sqrt(1/2 * 1/2) = 50, while the second
    # sentence alone would be 0.)
    scores = bleu_scores(["甲乙", "戊己"], ["甲乙", "丙丁"])
    assert scores["bleu-1"] == pytest.approx(50.0)
    assert scores["bleu-2"] == pytest.approx(50.0)


def test_rouge_by_hand_on_words():
    # jieba keeps these as words: ref [北京, 上海, 广州], hyp [北京, 上海]
    # ROUGE-1: P = 2/2, R = 2/3, F = 0.8; ROUGE-2: P = 1/1, R = 1/2, F = 2/3; ROUGE-L: LCS 2 -> 0.8
    scores = rouge_scores(["北京 上海 广州"], ["北京 上海"])
    assert scores["rouge-1"] == pytest.approx(80.0)
    assert scores["rouge-2"] == pytest.approx(200 / 3, abs=1e-3)
    assert scores["rouge-l"] == pytest.approx(80.0)


def test_rouge_averages_over_samples():
    # sample 1 identical (100), sample 2 disjoint (0) -> 50
    scores = rouge_scores(["北京 上海", "苹果 香蕉"], ["北京 上海", "广州 深圳"])
    assert scores["rouge-1"] == pytest.approx(50.0)


def test_empty_and_none_predictions_do_not_crash():
    m = generation_metrics(["今天天气很好", "你好"], ["", None])
    for key in SCORE_KEYS:
        assert m[key] == 0.0, key
    assert m["empty"] == 2 and m["exact_match"] == 0.0


def test_whitespace_prediction_and_partial_empty():
    # sample 1 identical, sample 2 empty: ROUGE averages 100 and 0
    m = generation_metrics(["北京 上海", "你好"], ["北京 上海", "   "])
    assert m["rouge-1"] == pytest.approx(50.0)
    assert m["empty"] == 1 and m["exact_match"] == 0.5


def test_both_empty_is_an_exact_match():
    m = generation_metrics(["", "北京"], ["", "北京"])
    assert m["exact_match"] == 1.0
    assert m["rouge-1"] == pytest.approx(100.0)


def test_exact_match_strips_whitespace():
    m = generation_metrics(["体育", "财经"], [" 体育\n", "体育"])
    assert m["exact_match"] == 0.5


def test_errors():
    with pytest.raises(DataError, match="2 references but 1 predictions"):
        generation_metrics(["a", "b"], ["a"])
    with pytest.raises(DataError):
        generation_metrics([], [])
    with pytest.raises(DataError, match="reference 0"):
        generation_metrics([None], ["a"])
