"""`instill data stats`: numbers that match a hand count, and a PNG."""

from __future__ import annotations

import json

import numpy as np

from tests.prep.conftest import ALPACA_ZH, read_jsonl, run


def test_stats_counts_lengths_labels_and_duplicates(tmp_path, fudan_raw, capsys):
    cls = tmp_path / "cls.jsonl"
    assert run("convert", "--input", fudan_raw, "--preset", "classification", "--label-field", "output",
               "--limit", 100, "--out", cls) == 0
    rows = read_jsonl(cls)
    rows += rows[:5]  # 5 duplicates
    cls.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    png, numbers = tmp_path / "stats.png", tmp_path / "stats.json"
    capsys.readouterr()
    assert run("stats", cls, "--plot", png, "--json", numbers) == 0
    printed = capsys.readouterr().out
    stats = json.loads(numbers.read_text(encoding="utf-8"))
    assert stats["rows"] == 105 and stats["bad_rows"] == 0
    assert stats["duplicate_rate"] == round(5 / 105, 4)
    labels = {}
    for r in rows:
        labels[r["label"]] = labels.get(r["label"], 0) + 1
    assert stats["labels"] == dict(sorted(labels.items(), key=lambda kv: -kv[1]))
    prompt_chars = [len(r["instruction"] + "\n" + r["input"]) for r in rows]
    assert stats["chars"]["prompt"]["max"] == max(prompt_chars)
    assert stats["chars"]["prompt"]["p50"] == float(np.percentile(prompt_chars, 50))
    assert stats["chars"]["response"]["max"] == max(len(r["output"]) for r in rows)
    assert "duplicate rate 4.8%" in printed and "labels: " in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_stats_counts_tokens_with_a_tokenizer(tmp_path, tiny_qwen2, qwen2_tokenizer, monkeypatch, capsys):
    rows = json.loads(ALPACA_ZH.read_text(encoding="utf-8"))[:50]
    path = tmp_path / "zh.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert run("stats", path, "--tokenizer", tiny_qwen2, "--json", "s.json") == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    tokens = [len(qwen2_tokenizer(r["output"], add_special_tokens=False)["input_ids"]) for r in rows]
    assert stats["tokens"]["response"]["max"] == max(tokens)
    assert stats["tokens"]["response"]["mean"] == round(float(np.mean(tokens)), 1)
    assert "labels" not in stats
    assert (tmp_path / "zh_stats.png").is_file()  # default: <stem>_stats.png in the current folder
    assert "response tokens" in capsys.readouterr().out
