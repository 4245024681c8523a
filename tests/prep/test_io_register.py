"""Reading tables (by name, index, path), writing the three row shapes, registering atomically."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from instill.data.formats import to_example
from instill.data.registry import load_registry, read_rows, resolve
from instill.errors import DataError
from instill.prep.io import (
    fill_template,
    get_field,
    read_table,
    render,
    write_rows,
)
from instill.prep.register import register


def test_tables_of_every_kind_give_the_same_rows_with_sources(tmp_path):
    rows = [{"q": "一加一", "a": "二"}, {"q": "天空的颜色", "a": "蓝色"}]
    pd.DataFrame(rows).to_excel(tmp_path / "t.xlsx", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text("q,a\n一加一,二\n天空的颜色,蓝色\n", encoding="utf-8")
    (tmp_path / "t.tsv").write_text("q\ta\n一加一\t二\n天空的颜色\t蓝色\n", encoding="utf-8")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "t.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    for name in ("t.xlsx", "t.parquet", "t.csv", "t.tsv", "t.jsonl", "t.json"):
        got = read_table(tmp_path / name)
        assert [r for _, r in got] == rows, name
    assert [s for s, _ in read_table(tmp_path / "t.xlsx")] == [f"{tmp_path}/t.xlsx:2", f"{tmp_path}/t.xlsx:3"]
    assert [s for s, _ in read_table(tmp_path / "t.csv")] == [f"{tmp_path}/t.csv:2", f"{tmp_path}/t.csv:3"]
    assert [s for s, _ in read_table(tmp_path / "t.json")] == [f"{tmp_path}/t.json:#0", f"{tmp_path}/t.json:#1"]


def test_headerless_files_name_columns_by_position(tmp_path):
    (tmp_path / "t.csv").write_text("一加一,二\n天空的颜色,蓝色\n", encoding="utf-8")
    pd.DataFrame([["一加一", "二"]]).to_excel(tmp_path / "t.xlsx", index=False, header=False)
    assert [r for _, r in read_table(tmp_path / "t.csv", header=False)][1] == {"0": "天空的颜色", "1": "蓝色"}
    assert [r for _, r in read_table(tmp_path / "t.xlsx", header=False)] == [{"0": "一加一", "1": "二"}]


def test_fields_by_name_index_and_dotted_path():
    row = {"text": "你好", "meta": {"tags": ["a", "b"]}, "messages": [{"content": "x"}, {"content": "y"}]}
    assert get_field(row, "text", "f:1") == "你好"
    assert get_field(row, "1", "f:1") == {"tags": ["a", "b"]}
    assert get_field(row, "meta.tags.1", "f:1") == "b"
    assert get_field(row, "messages.-1.content", "f:1") == "y"
    with pytest.raises(DataError, match=r"f:1: no column 'txet'.*did you mean 'text'"):
        get_field(row, "txet", "f:1")
    with pytest.raises(DataError, match="f:1: column index 7 is out of range"):
        get_field(row, "7", "f:1")
    assert fill_template("根据症状诊断疾病：{symptoms}；{{不是占位符}} {0}", {"symptoms": "头痛、发热"}, "f:1") == \
        "根据症状诊断疾病：头痛、发热；{不是占位符} 头痛、发热"


def test_the_three_shapes_load_back_through_the_registry(tmp_path):
    record = {"instruction": "翻译", "input": "cat", "output": "猫", "system": "你是翻译", "label": "x"}
    dialogue = {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                             {"role": "user", "content": "再见"}, {"role": "assistant", "content": "再见！"}]}
    for fmt in ("alpaca", "sharegpt", "openai"):
        rows = [render(record, fmt), render(dialogue, fmt)]
        write_rows(rows, tmp_path / f"{fmt}.jsonl")
        register(tmp_path / "dataset_info.json", fmt, tmp_path / f"{fmt}.jsonl", rows)
    for spec in resolve(["alpaca", "sharegpt", "openai"], tmp_path):
        examples = [to_example(row, spec, src) for src, row in read_rows(spec, tmp_path)]
        assert examples[0].messages == [{"role": "system", "content": "你是翻译"},
                                        {"role": "user", "content": "翻译\ncat"},
                                        {"role": "assistant", "content": "猫"}], spec.name
        assert examples[1].roles == ["user", "assistant", "user", "assistant"]
        assert examples[0].extras["label"] == "x"
    assert render(dialogue, "alpaca")["history"] == [["你好", "你好！"]]


def test_register_keeps_other_entries_and_refuses_a_broken_file(tmp_path):
    info = tmp_path / "dataset_info.json"
    others = {"alpaca_zh_demo": {"file_name": "alpaca_zh_demo.json"}, "hub": {"hf_hub_url": "a/b", "split": "train"}}
    info.write_text(json.dumps(others), encoding="utf-8")
    rows = [{"instruction": "问", "input": "", "output": "答"}]
    write_rows(rows, tmp_path / "sub" / "mine.json")
    assert register(info, "mine", tmp_path / "sub" / "mine.json", rows) == "added"
    assert register(info, "mine", tmp_path / "sub" / "mine.json", rows) == "updated"
    saved = json.loads(info.read_text(encoding="utf-8"))
    assert saved == {**others, "mine": {"file_name": "sub/mine.json"}}
    assert load_registry(tmp_path)["mine"].file_name == "sub/mine.json"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    info.write_text('{"alpaca_zh_demo": {"file_name": ', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        register(info, "mine", tmp_path / "sub" / "mine.json", rows)
    assert info.read_text(encoding="utf-8") == '{"alpaca_zh_demo": {"file_name": '


def test_register_refuses_rows_training_could_not_load(tmp_path):
    rows = [{"instruction": "问", "input": "", "output": "答"}, {"instruction": "问", "input": "", "output": ""}]
    with pytest.raises(DataError, match=r"mine.jsonl:2: empty response"):
        register(tmp_path / "dataset_info.json", "mine", tmp_path / "mine.jsonl", rows)
    assert not (tmp_path / "dataset_info.json").exists()
