"""`instill data split` keeps label ratios; `instill data mix` takes ratios/counts, seeded, across formats."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from instill.errors import DataError
from instill.prep.mix_split import parse_source, plan_counts
from tests.prep.conftest import ALPACA_ZH, FIREFLY, read_jsonl, run


def _imbalanced(tmp_path):
    """Classification rows with labels in ratio 6:3:1 (fudan-derived texts)."""
    rows = []
    for i, row in enumerate(read_jsonl(tmp_path / "cls.jsonl")):
        label = "甲" if i % 10 < 6 else "乙" if i % 10 < 9 else "丙"
        rows.append({**row, "output": label, "label": label, "choices": ["甲", "乙", "丙"]})
    path = tmp_path / "imb.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def cls_file(tmp_path, fudan_raw):
    assert run("convert", "--input", fudan_raw, "--preset", "classification", "--label-field", "output",
               "--out", tmp_path / "cls.jsonl") == 0
    return tmp_path / "cls.jsonl"


def test_stratified_split_keeps_label_ratios(tmp_path, cls_file, capsys):
    path = _imbalanced(tmp_path)
    info = tmp_path / "dataset_info.json"
    assert run("split", path, "--ratios", "0.8,0.1,0.1", "--out-dir", tmp_path, "--register", info) == 0
    assert "stratified by 'label' (3 labels)" in capsys.readouterr().out
    parts = {p: read_jsonl(tmp_path / f"imb_{p}.jsonl") for p in ("train", "val", "test")}
    assert [len(parts[p]) for p in ("train", "val", "test")] == [256, 32, 32]
    for name, rows in parts.items():
        counts = Counter(r["label"] for r in rows)
        n = len(rows)
        for label, share in (("甲", 0.6), ("乙", 0.3), ("丙", 0.1)):
            assert abs(counts[label] - share * n) <= 1, (name, counts)
    everything = [r["input"] for rows in parts.values() for r in rows]
    assert sorted(everything) == sorted(r["input"] for r in read_jsonl(path))  # a partition: nothing lost or doubled
    assert set(json.loads(info.read_text())) == {"imb_train", "imb_val", "imb_test"}


def test_split_is_seeded_and_plain_split_ignores_labels(tmp_path, cls_file):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out in (out_a, out_b):
        assert run("split", cls_file, "--ratios", "0.9,0.1", "--seed", 7, "--out-dir", out) == 0
    assert (out_a / "cls_val.jsonl").read_text() == (out_b / "cls_val.jsonl").read_text()
    assert not (out_a / "cls_test.jsonl").exists()
    assert run("split", cls_file, "--ratios", "0.9,0.1", "--seed", 8, "--out-dir", tmp_path / "c") == 0
    assert (tmp_path / "c" / "cls_val.jsonl").read_text() != (out_a / "cls_val.jsonl").read_text()
    assert run("split", cls_file, "--ratios", "0.5,0.6", "--out-dir", tmp_path / "d") == 2
    assert not (tmp_path / "d").exists()


def test_mix_by_ratio_count_and_upsampling(tmp_path, cls_file, capsys):
    zh = tmp_path / "zh.json"
    zh.write_text(json.dumps(json.loads(ALPACA_ZH.read_text(encoding="utf-8"))[:100], ensure_ascii=False))
    out = tmp_path / "mix.jsonl"
    assert run("mix", f"{cls_file}:0.75", f"{zh}:0.25", "--total", 200, "--out", out) == 0
    rows = read_jsonl(out)
    assert sum("label" in r for r in rows) == 150 and len(rows) == 200
    assert run("mix", f"{cls_file}:0.75", f"{zh}:0.25", "--total", 200, "--out", tmp_path / "again.jsonl") == 0
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()  # same seed, same mix

    assert run("mix", f"{cls_file}:10", f"{zh}:250", "--out", out) == 0
    assert "(upsampled)" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert len(rows) == 260 and sum("label" in r for r in rows) == 10
    assert len({json.dumps(r, ensure_ascii=False) for r in rows if "label" not in r}) == 100  # every row, some twice

    assert run("mix", f"{cls_file}:0.5", f"{zh}:0.5", "--out", out) == 0  # largest total without repeats
    assert len(read_jsonl(out)) == 200


def test_mix_converts_shapes_with_format(tmp_path, capsys):
    zh = tmp_path / "zh.json"
    zh.write_text(json.dumps(json.loads(ALPACA_ZH.read_text(encoding="utf-8"))[:20], ensure_ascii=False))
    dialogue = tmp_path / "dialogue.jsonl"
    assert run("convert", "--input", FIREFLY, "--preset", "dialogue", "--out", dialogue) == 0
    assert run("mix", zh, dialogue, "--out", tmp_path / "x.jsonl") == 2
    assert "different shapes" in capsys.readouterr().err
    out, info = tmp_path / "mixed.jsonl", tmp_path / "dataset_info.json"
    assert run("mix", zh, dialogue, "--format", "sharegpt", "--out", out, "--register", info) == 0
    rows = read_jsonl(out)
    assert len(rows) == 53 and all("conversations" in r for r in rows)
    assert json.loads(info.read_text())["mixed"]["formatting"] == "sharegpt"


def test_source_specs():
    assert parse_source("a.jsonl") == ("a.jsonl", None)
    assert parse_source("a.jsonl:500") == ("a.jsonl", 500)
    assert parse_source("a.jsonl:0.3") == ("a.jsonl", 0.3)
    assert plan_counts([100, 50], [0.5, 0.5], None) == [50, 50]
    assert plan_counts([100, 50], [0.7, 0.3], 11) == [8, 3]
    with pytest.raises(DataError, match="not a mix"):
        plan_counts([10, 10], [0.5, 5], None)
