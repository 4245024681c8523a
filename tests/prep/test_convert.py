"""`instill data convert`: every preset on real-shaped data, Excel files, and one-command seed flows."""

from __future__ import annotations

import json
import re

import pandas as pd

from instill.data.formats import to_example
from instill.data.registry import read_rows, resolve
from instill.evaluate.classify import match_label
from instill.evaluate.ner import NONE_MARKER, parse_entities
from tests.prep.conftest import (
    ALPACA_EN,
    ALPACA_ZH,
    CCFBDCI,
    FIREFLY,
    FUDAN_LABELS,
    fudan_raw_rows,
    read_jsonl,
    run,
)


def _examples(dataset_dir, name):
    spec = resolve([name], dataset_dir)[0]
    return [to_example(row, spec, src) for src, row in read_rows(spec, dataset_dir)]


def test_classification_seed_000_flow_is_one_command(tmp_path, fudan_raw, capsys):
    raw = fudan_raw_rows()
    bad = [dict(raw[0], output="娱乐"), dict(raw[1], text="  ")]  # label outside the choices; empty text
    fudan_raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw + bad), encoding="utf-8")
    out, info = tmp_path / "data" / "news_cls.jsonl", tmp_path / "data" / "dataset_info.json"
    code = run("convert", "--input", fudan_raw, "--preset", "classification", "--text-field", "text",
               "--label-field", "output", "--choices-field", "category", "--out", out, "--register", info)
    assert code == 0
    summary = capsys.readouterr().out
    assert "322 rows in, 320 out, 2 dropped (1 label not among the choices, 1 empty text)" in summary
    rows = read_jsonl(out)
    assert len(rows) == 320
    for row, source in zip(rows, raw):
        choices = json.loads(source["category"]) if isinstance(source["category"], str) else source["category"]
        assert row["input"] == f"文本：{source['text']},类型选项：{', '.join(choices)}"
        assert row["output"] == row["label"] == source["output"]
        assert row["choices"] == choices
        assert row["instruction"].startswith("你是一个文本分类领域的专家")
        assert match_label(row["output"], row["choices"]) == row["label"]
    assert json.loads(info.read_text())["news_cls"] == {"file_name": "news_cls.jsonl"}
    assert len(_examples(info.parent, "news_cls")) == 320


def test_classification_from_an_excel_file_with_fixed_choices(tmp_path):
    raw = fudan_raw_rows()[:12]
    pd.DataFrame([{"新闻": r["text"][:80], "类别": r["output"]} for r in raw]).to_excel(tmp_path / "news.xlsx",
                                                                                      index=False)
    out = tmp_path / "cls.json"
    assert run("convert", "--input", tmp_path / "news.xlsx", "--preset", "classification", "--text-field", "0",
               "--label-field", "类别", "--choices", "政治,财经,体育,计算机", "--out", out) == 0
    rows = json.loads(out.read_text())
    assert [r["output"] for r in rows] == [r["output"] for r in raw]
    assert all(r["input"].endswith(",类型选项：政治, 财经, 体育, 计算机") for r in rows)
    assert rows[0]["input"].startswith("文本：" + raw[0]["text"][:20])


def test_classification_label_set_taken_from_the_data_when_no_choices(tmp_path, capsys):
    rows = [{"text": r["text"][:50], "label": r["output"]} for r in fudan_raw_rows()[:40]]
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert run("convert", "--input", tmp_path / "raw.jsonl", "--preset", "classification",
               "--out", tmp_path / "o.jsonl") == 0
    assert "labels from the data: " + ", ".join(sorted(FUDAN_LABELS)) in capsys.readouterr().out
    assert {tuple(r["choices"]) for r in read_jsonl(tmp_path / "o.jsonl")} == {tuple(sorted(FUDAN_LABELS))}


def test_ner_seed_003_flow_on_ccfbdci(tmp_path):
    out, info = tmp_path / "ner.jsonl", tmp_path / "dataset_info.json"
    assert run("convert", "--input", CCFBDCI, "--preset", "ner", "--limit", 400, "--out", out,
               "--register", info) == 0
    source = read_jsonl(CCFBDCI)[:400]
    rows = read_jsonl(out)
    names = {"GPE": "地理实体", "PER": "人名", "ORG": "组织", "LOC": "地点"}
    assert len(rows) == 400
    for row, raw in zip(rows, source):
        assert row["input"] == f"文本：{raw['text']}"
        expected = [(e["entity_text"], names[e["entity_label"]]) for e in raw["entities"]]
        assert parse_entities(row["output"]) == expected
        if not expected:
            assert row["output"] == NONE_MARKER
        else:
            assert all(json.loads(line) for line in row["output"].splitlines())  # one JSON object per line
    assert sum(r["output"] == NONE_MARKER for r in rows) == sum(not r["entities"] for r in source) > 0
    assert "提取 地理实体; 人名; 组织; 地点 实体" in rows[0]["instruction"]
    assert "没有找到任何实体" in rows[0]["instruction"]
    assert len(_examples(tmp_path, "ner")) == 400


def test_ner_label_map_renames_and_narrows_the_instruction(tmp_path):
    out = tmp_path / "ner.jsonl"
    assert run("convert", "--input", CCFBDCI, "--preset", "ner", "--limit", 50,
               "--label-map", "PER=人物,GPE=地名,ORG=机构,LOC=地名", "--out", out) == 0
    rows = read_jsonl(out)
    assert "提取 人物; 地名; 机构 实体" in rows[0]["instruction"]
    labels = {label for r in rows for _, label in parse_entities(r["output"])}
    assert labels <= {"人物", "地名", "机构"} and "人物" in labels


def test_qa_with_and_without_context_and_squad_answers(tmp_path):
    alpaca = json.loads(ALPACA_ZH.read_text())[:30]
    raw = [{"context": r["input"], "question": r["instruction"], "answer": {"text": [r["output"]]}} for r in alpaca]
    (tmp_path / "qa.json").write_text(json.dumps(raw, ensure_ascii=False))
    assert run("convert", "--input", tmp_path / "qa.json", "--preset", "qa", "--out", tmp_path / "o.jsonl") == 0
    rows = read_jsonl(tmp_path / "o.jsonl")
    for row, r in zip(rows, alpaca):
        assert row["output"] == r["output"]
        if r["input"]:
            assert (row["instruction"], row["input"]) == ("请根据上下文回答问题。", f"上下文：{r['input']}\n问题：{r['instruction']}")
        else:
            assert (row["instruction"], row["input"]) == ("请回答以下问题。", r["instruction"])
    assert any(r["input"] for r in alpaca) and any(not r["input"] for r in alpaca)


def test_default_instructions_are_english_for_english_data(tmp_path):
    alpaca = json.loads(ALPACA_EN.read_text())[:10]
    raw = [{"question": r["instruction"], "answer": r["output"]} for r in alpaca]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in raw))
    assert run("convert", "--input", tmp_path / "qa.jsonl", "--preset", "qa", "--out", tmp_path / "o.jsonl") == 0
    assert {r["instruction"] for r in read_jsonl(tmp_path / "o.jsonl")} == {"Answer the following question."}


def test_summarization_news_article_to_its_title(tmp_path):
    raw = []
    for r in fudan_raw_rows():
        title = re.search(r"【 标 题 】(.*?)【", r["text"])
        body = r["text"].split("【 正 文 】", 1)[-1].strip()
        if title and body:
            raw.append({"article": body, "summary": title.group(1).strip()})
    (tmp_path / "sum.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw))
    out = tmp_path / "o.jsonl"
    assert run("convert", "--input", tmp_path / "sum.jsonl", "--preset", "summarization", "--out", out) == 0
    rows = read_jsonl(out)
    assert len(rows) == len(raw) > 100
    assert rows[0] == {"instruction": "请总结以下文本。", "input": raw[0]["article"], "output": raw[0]["summary"]}


def test_dialogue_firefly_turns_to_sharegpt_openai_and_alpaca_history(tmp_path):
    source = read_jsonl(FIREFLY)
    for fmt in ("sharegpt", "openai", "alpaca"):
        out = tmp_path / f"{fmt}.jsonl"
        assert run("convert", "--input", FIREFLY, "--preset", "dialogue", "--format", fmt,
                   "--system", "你是一个乐于助人的助手", "--out", out, "--register", tmp_path / "dataset_info.json") == 0
    for fmt in ("sharegpt", "openai", "alpaca"):
        examples = _examples(tmp_path, fmt)
        assert len(examples) == len(source) == 33
        for example, raw in zip(examples, source):
            turns = [t for pair in raw["conversation"] for t in (pair["human"], pair["assistant"])]
            assert [m["content"] for m in example.messages] == ["你是一个乐于助人的助手", *turns], fmt
    first = read_jsonl(tmp_path / "sharegpt.jsonl")[0]
    assert first["system"] == "你是一个乐于助人的助手"
    assert [t["from"] for t in first["conversations"][:2]] == ["human", "gpt"]
    assert set(first) == {"conversations", "system"}
    assert run("convert", "--input", FIREFLY, "--preset", "dialogue", "--keep-columns", "conversation_id",
               "--out", tmp_path / "ids.jsonl") == 0
    assert [r["conversation_id"] for r in read_jsonl(tmp_path / "ids.jsonl")] == [r["conversation_id"] for r in source]


def test_records_template_like_seed_001(tmp_path):
    raw = [{"symptoms": "头痛、发热", "diagnosis": "流感"}, {"symptoms": "咳嗽、胸闷", "diagnosis": "支气管炎"},
           {"symptoms": "乏力", "diagnosis": ""}]
    pd.DataFrame(raw).to_excel(tmp_path / "cases.xlsx", index=False)
    out = tmp_path / "o.jsonl"
    assert run("convert", "--input", tmp_path / "cases.xlsx", "--instruction-template", "根据症状诊断疾病：{symptoms}",
               "--output-column", "diagnosis", "--out", out) == 0
    assert read_jsonl(out) == [{"instruction": "根据症状诊断疾病：头痛、发热", "input": "", "output": "流感"},
                               {"instruction": "根据症状诊断疾病：咳嗽、胸闷", "input": "", "output": "支气管炎"}]


def test_seed_002_excel_to_alpaca_is_one_command(tmp_path, capsys):
    prompt = ("1. **输入内容**\n   提供上市公司ESG报告的文本数据\n如果内容中没有可以抽取的知识图谱 直接返回跳过\n"
              "     attributes:\n       - {name: \"<属性名称>\", value: \"<属性值>\"}\n**基于以上要求及以下内容构建知识图谱**:")
    (tmp_path / "prompt.txt").write_text(prompt, encoding="utf-8")
    sheet = [["甲公司2023年碳排放下降10%。", "```yaml\nknowledge_graph:\n  entities:\n    - name: \"甲公司\"\n```"],
             ["本页为目录。", "跳过"],
             ["乙公司披露了董事会构成。", "抱歉，我无法回答。"],
             ["丙公司发布了反腐败政策。", "```yaml\nknowledge_graph:\n  entities: []\n```"]]
    pd.DataFrame(sheet, columns=["报告内容", "模型输出"]).to_excel(tmp_path / "esg.xlsx", index=False)
    out, info = tmp_path / "ESG_Knowledge_Network.json", tmp_path / "dataset_info.json"
    assert run("convert", "--input", tmp_path / "esg.xlsx", "--instruction-file", tmp_path / "prompt.txt",
               "--input-column", 0, "--output-column", 1, "--output-regex", "```yaml|跳过", "--format", "alpaca",
               "--out", out, "--register", info, "--name", "ESG_Knowledge_Network") == 0
    assert "4 rows in, 3 out, 1 dropped (1 output not matching" in capsys.readouterr().out
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert rows == [{"instruction": prompt, "input": s[0], "output": s[1]} for s in sheet if s is not sheet[2]]
    assert json.loads(info.read_text())["ESG_Knowledge_Network"] == {"file_name": "ESG_Knowledge_Network.json"}


def test_a_missing_column_names_the_file_and_row(tmp_path, capsys):
    (tmp_path / "raw.csv").write_text("content,answer\n你好,你好！\n", encoding="utf-8")
    code = run("convert", "--input", tmp_path / "raw.csv", "--instruction", "回复", "--input-column", "content",
               "--output-column", "anwser", "--out", tmp_path / "o.jsonl")
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/raw.csv:2: no column 'anwser'" in err and "did you mean 'answer'" in err
    assert not (tmp_path / "o.jsonl").exists()
