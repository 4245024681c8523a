"""`instill data augment`, and the template-fill / rule-variant library (seed 001 §3.3.1.2, §3.3.2.1)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from instill.errors import DataError
from instill.evaluate.ner import parse_entities
from instill.prep.augment import VARIANTS, fill_templates, rule_variants
from tests.prep.conftest import CCFBDCI, read_jsonl, run


@pytest.fixture()
def news_cls(tmp_path, fudan_raw):
    out = tmp_path / "news_cls.jsonl"
    assert run("convert", "--input", fudan_raw, "--preset", "classification", "--limit", 40,
               "--label-field", "output", "--choices-field", "category", "--out", out) == 0
    return out


def test_classification_variants_shuffle_choices_and_keep_the_label(tmp_path, news_cls, capsys):
    variants = tmp_path / "variants.txt"
    variants.write_text("请判断新闻类别。\n\n这条新闻属于哪一类？\n从选项中选出新闻的类别。\n", encoding="utf-8")
    out = tmp_path / "aug.jsonl"
    assert run("augment", news_cls, "--instruction-variants", variants, "--per-row", 2, "--out", out) == 0
    assert "40 rows in, 120 out, 0 dropped" in capsys.readouterr().out
    original, rows = read_jsonl(news_cls), read_jsonl(out)
    new = [r for r in rows if r["instruction"] != original[0]["instruction"]]
    assert len(new) == 80
    assert set(Counter(r["instruction"] for r in new)) <= {"请判断新闻类别。", "这条新闻属于哪一类？", "从选项中选出新闻的类别。"}
    by_text = {r["input"].split(",类型选项：")[0]: r for r in original}
    reordered = 0
    for row in new:
        text, _, choices = row["input"].partition(",类型选项：")
        source = by_text[text]
        assert row["output"] == row["label"] == source["label"]
        assert choices.split(", ") == row["choices"] and sorted(row["choices"]) == sorted(source["choices"])
        reordered += row["choices"] != source["choices"]
    assert reordered == 80  # with 4 labels a different order is always found
    per_source = Counter(r["input"].split(",类型选项：")[0] for r in new)
    assert set(per_source.values()) == {2}
    with_instr = Counter((r["input"].split(",类型选项：")[0], r["instruction"]) for r in new)
    assert set(with_instr.values()) == {1}  # the two variants of a row differ


def test_builtin_classification_variants_and_no_original(tmp_path, news_cls):
    out = tmp_path / "aug.jsonl"
    assert run("augment", news_cls, "--preset", "classification", "--per-row", 3, "--no-original",
               "--no-shuffle-choices", "--out", out) == 0
    rows = read_jsonl(out)
    assert len(rows) == 120
    assert {r["instruction"] for r in rows} <= set(VARIANTS["classification"]["zh"][1:])
    assert all(r["input"].endswith(", ".join(r["choices"])) for r in rows)


def test_a_row_whose_answer_is_not_its_label_is_dropped(tmp_path, news_cls, capsys):
    rows = read_jsonl(news_cls)
    rows[0]["output"] = "娱乐"
    news_cls.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert run("augment", news_cls, "--preset", "classification", "--per-row", 1, "--no-original",
               "--out", tmp_path / "aug.jsonl") == 0
    assert "40 rows in, 39 out, 1 dropped (1 output differs from the label" in capsys.readouterr().out


def test_builtin_ner_variants_name_the_dataset_labels(tmp_path):
    ner = tmp_path / "ner.jsonl"
    assert run("convert", "--input", CCFBDCI, "--preset", "ner", "--limit", 60, "--out", ner) == 0
    out = tmp_path / "aug.jsonl"
    assert run("augment", ner, "--preset", "ner", "--per-row", 2, "--no-original", "--out", out) == 0
    rows, source = read_jsonl(out), read_jsonl(ner)
    assert len(rows) == 120
    for row in rows:
        assert "{labels}" not in row["instruction"] and "{example}" not in row["instruction"]
        assert all(label in row["instruction"] for label in ("地理实体", "人名", "组织"))
    assert [parse_entities(r["output"]) for r in rows[::2]] == [parse_entities(r["output"]) for r in source]


def test_synonym_rules_rewrite_each_rows_instruction(tmp_path):
    rows = [{"instruction": "将这段文本翻译成英文", "input": "你好", "output": "Hello"}]
    (tmp_path / "d.jsonl").write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "syn.json").write_text(json.dumps({"将": ["请把"], "这段文本": ["这段文字", "以下内容"]},
                                                  ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "aug.jsonl"
    assert run("augment", tmp_path / "d.jsonl", "--synonyms", tmp_path / "syn.json", "--per-row", 10,
               "--out", out) == 0
    got = {r["instruction"] for r in read_jsonl(out)}
    assert got == {"将这段文本翻译成英文", "请把这段文本翻译成英文", "将这段文字翻译成英文", "将以下内容翻译成英文",
                   "请把这段文字翻译成英文", "请把以下内容翻译成英文"}


def test_rule_variants_longest_phrase_first_and_limit():
    synonyms = {"翻译": ["转写"], "翻译成": ["转为", "翻译到"]}
    assert rule_variants("将这段文本翻译成英文", synonyms) == ["将这段文本转为英文", "将这段文本翻译到英文"]
    assert rule_variants("无可替换", synonyms) == []
    assert len(rule_variants("a b c", {"a": ["1", "2"], "b": ["1", "2"], "c": ["1", "2"]}, limit=5)) == 5


def test_fill_templates_cartesian_and_sampled():
    slots = {"概念": ["注意力机制", "残差连接"], "方面": ["原理"], "领域": ["自然语言处理", "计算机视觉"]}
    filled = fill_templates("解释{概念}的{方面}在{领域}中的应用", slots)
    assert len(filled) == 4 and "解释注意力机制的原理在自然语言处理中的应用" in filled
    sample = fill_templates("解释{概念}的{方面}在{领域}中的应用", slots, n=2, seed=1)
    assert len(sample) == 2 and set(sample) <= set(filled)
    with pytest.raises(DataError, match="no values for slot"):
        fill_templates("写一首关于{主题}的诗", {})
