"""Real-shaped raw data from ../shared/data, and a helper to run `instill data ...` in-process."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from instill.cli import main as instill_main
from tests.conftest import SHARED_DATA

FUDAN = SHARED_DATA / "cls_fudan_derived_msswiftlearn" / "fudan_news_4class__val.jsonl"
CCFBDCI = SHARED_DATA / "ner_ccfbdci" / "ccfbdci.jsonl"
ALPACA_ZH = SHARED_DATA / "llamafactory_alpaca_zh_demo" / "alpaca_zh_demo.json"
ALPACA_EN = SHARED_DATA / "llamafactory_alpaca_en_demo" / "alpaca_en_demo.json"
FIREFLY = SHARED_DATA / "instr_firefly_dummy_multiturn" / "dummy_data.jsonl"
FUDAN_LABELS = ["政治", "财经", "体育", "计算机"]


def run(*argv: str) -> int:
    """`instill data <argv>` in this process; returns the exit code."""
    return instill_main(["data", *map(str, argv)])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def fudan_raw_rows() -> list[dict]:
    """The fudan-news derived rows in zh_cls_fudan-news's raw shape {text, category, output} (seed 000).

    The candidate list is a JSON list for even rows and its string form for odd rows, in a shuffled order.
    """
    rng = random.Random(0)
    out = []
    for i, row in enumerate(read_jsonl(FUDAN)):
        user = row["messages"][1]["content"]
        text = re.sub(r"^请判断下面新闻的主要类别。\s*新闻：", "", user).removesuffix("\n\n只输出一个类别答案。").strip()
        choices = rng.sample(FUDAN_LABELS, 4)
        out.append({"text": text, "category": choices if i % 2 == 0 else json.dumps(choices, ensure_ascii=False),
                    "output": row["label"], "record_id": row["record_id"]})
    return out


@pytest.fixture()
def fudan_raw(tmp_path) -> Path:
    path = tmp_path / "news.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fudan_raw_rows()), encoding="utf-8")
    return path
