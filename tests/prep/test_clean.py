"""`instill data dedup` finds planted duplicates; `instill data filter` drops by length, tokens, language, regex."""

from __future__ import annotations

import difflib
import json

from tests.prep.conftest import ALPACA_EN, ALPACA_ZH, CCFBDCI, read_jsonl, run


def _write(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def _edit(text: str, k: int) -> str:
    """Change k characters spread through the text (a near duplicate)."""
    chars = list(text)
    for j in range(k):
        i = (j + 1) * len(chars) // (k + 1)
        chars[i] = "某" if chars[i] != "某" else "甲"
    return "".join(chars)


def test_dedup_removes_exactly_the_planted_exact_and_near_duplicates(tmp_path, capsys):
    base = json.loads(ALPACA_ZH.read_text(encoding="utf-8"))[:300]
    long_rows = [i for i, r in enumerate(base) if len(r["output"]) >= 300][:6]
    planted = []
    for i in long_rows[:3]:  # exact after normalisation: spacing, case and full-width forms differ
        r = base[i]
        wide = r["output"].replace("1", "１").replace("2", "２").replace("\n", "\n\n")
        planted.append((i, {**r, "instruction": "  " + r["instruction"].replace("，", "， ") + " ", "output": wide}))
    for i in long_rows[3:]:  # near: 3 characters of a long answer changed
        planted.append((i, {**base[i], "output": _edit(base[i]["output"], 3)}))
    rows = base + [row for _, row in planted]
    path = _write(tmp_path / "zh.json", rows)
    out, report = tmp_path / "dedup.json", tmp_path / "clusters.jsonl"
    assert run("dedup", path, "--out", out, "--report", report) == 0
    assert "306 rows in, 300 out, 6 dropped" in capsys.readouterr().out
    assert json.loads(out.read_text(encoding="utf-8")) == base
    clusters = {c["kept"]: c for c in read_jsonl(report)}
    assert len(clusters) == 6
    for n, (i, _) in enumerate(planted):
        cluster = clusters[f"{path}:#{i}"]
        assert cluster["removed"] == [f"{path}:#{300 + n}"]
        assert (cluster["similarity"][0] == 1.0) == (n < 3)
        assert n < 3 or 0.8 <= cluster["similarity"][0] < 1.0


def test_exact_only_keeps_near_duplicates_and_threshold_matters(tmp_path, capsys):
    base = json.loads(ALPACA_ZH.read_text(encoding="utf-8"))[:100]
    i = next(k for k, r in enumerate(base) if len(r["output"]) >= 300)
    rows = base + [{**base[i], "output": _edit(base[i]["output"], 3)}]
    path = _write(tmp_path / "zh.json", rows)
    assert run("dedup", path, "--exact-only", "--out", tmp_path / "a.json") == 0
    assert "101 rows in, 101 out, 0 dropped" in capsys.readouterr().out
    assert run("dedup", path, "--threshold", "0.99", "--out", tmp_path / "b.json") == 0
    assert "101 rows in, 101 out" in capsys.readouterr().out
    assert run("dedup", path, "--by", "prompt", "--out", tmp_path / "c.json") == 0  # same prompt: one kept
    assert "101 rows in, 100 out, 1 dropped (1 exact duplicates)" in capsys.readouterr().out


def test_filter_by_chars_tokens_regex_and_bad_rows(tmp_path, capsys, tiny_qwen2, qwen2_tokenizer):
    base = json.loads(ALPACA_ZH.read_text(encoding="utf-8"))[:80]
    bad = {"instruction": "空回答", "input": "", "output": ""}
    rows = base[:40] + [bad] + base[40:] + [{"instruction": "请介绍一下你自己", "input": "",
                                              "output": "我是ChatGPT，一个由OpenAI开发的大型语言模型，可以回答各种问题。"}]
    path = _write(tmp_path / "zh.json", rows)
    out = tmp_path / "f.json"

    def text(r):
        return "\n".join(p for p in (r["instruction"], r["input"]) if p) + "\n" + r["output"]

    good = [r for r in rows if r is not bad]
    assert run("filter", path, "--min-chars", 30, "--max-chars", 400, "--blacklist", "(?i)openai|chatgpt",
               "--out", out) == 0
    summary = capsys.readouterr().out
    expected = [r for r in good if 30 <= len(text(r).strip()) <= 400 and "OpenAI" not in r["output"]]
    assert json.loads(out.read_text(encoding="utf-8")) == expected
    assert f"first bad row: {path}:#40: empty response" in summary and "1 bad rows" in summary
    assert "1 matches /(?i)openai|chatgpt/" in summary

    assert run("filter", path, "--by", "response", "--max-tokens", 60, "--tokenizer", tiny_qwen2, "--out", out) == 0
    n_tokens = [len(qwen2_tokenizer(r["output"], add_special_tokens=False)["input_ids"]) for r in good]
    assert json.loads(out.read_text(encoding="utf-8")) == [r for r, n in zip(good, n_tokens) if n <= 60]
    assert 0 < len(json.loads(out.read_text(encoding="utf-8"))) < len(good)


def test_filter_by_language(tmp_path):
    zh = json.loads(ALPACA_ZH.read_text(encoding="utf-8"))[:60]
    en = json.loads(ALPACA_EN.read_text(encoding="utf-8"))[:60]
    path = _write(tmp_path / "mixed.json", [r for pair in zip(zh, en) for r in pair])
    out = tmp_path / "f.json"
    assert run("filter", path, "--lang", "zh", "--out", out) == 0
    kept = json.loads(out.read_text(encoding="utf-8"))
    assert all(r in zh for r in kept) and len(kept) >= 57
    assert run("filter", path, "--lang", "en", "--out", out) == 0
    kept = json.loads(out.read_text(encoding="utf-8"))
    # a Chinese instruction answered with English code and prose is mostly English, and kept
    mostly_ascii = [r for r in kept if r in zh]
    assert all(sum(c.isascii() for c in r["output"]) > 0.8 * len(r["output"]) for r in mostly_ascii)
    assert len(kept) - len(mostly_ascii) >= 57 and len(mostly_ascii) <= 3


def test_dedup_ignores_a_shared_instruction(tmp_path, capsys):
    """ccfbdci as NER rows all share one long instruction; only rows whose own text is (nearly) the same go."""
    ner = tmp_path / "ner.jsonl"
    assert run("convert", "--input", CCFBDCI, "--preset", "ner", "--limit", 3000, "--out", ner) == 0
    report = tmp_path / "clusters.jsonl"
    assert run("dedup", ner, "--out", tmp_path / "dd.jsonl", "--report", report) == 0
    raw = read_jsonl(CCFBDCI)[:3000]
    seen, exact = set(), 0
    for r in raw:
        key = json.dumps([r["text"], r["entities"]], ensure_ascii=False)
        exact += key in seen
        seen.add(key)
    assert f"({exact} exact duplicates" in capsys.readouterr().out and exact > 50
    for cluster in read_jsonl(report):
        kept = raw[int(cluster["kept"].rsplit(":", 1)[1]) - 1]["text"]
        for source in cluster["removed"]:
            removed = raw[int(source.rsplit(":", 1)[1]) - 1]["text"]
            assert difflib.SequenceMatcher(None, kept, removed).ratio() > 0.7, (kept, removed)
    assert len(read_jsonl(tmp_path / "dd.jsonl")) > 2000
