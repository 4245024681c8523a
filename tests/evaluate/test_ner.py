from math import isclose

import pytest

from instill.errors import DataError
from instill.evaluate.ner import NONE_MARKER, ner_metrics, parse_entities

NJ = '{"entity_text": "南京", "entity_label": "地点"}'
ZS = '{"entity_text": "张三", "entity_label": "人名"}'


# --------------------------------------------------------------------------- parse_entities


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"{NJ}\n{ZS}", [("南京", "地点"), ("张三", "人名")]),  # one object per line
        (f"{NJ}{ZS}", [("南京", "地点"), ("张三", "人名")]),  # glued, as seed 003 trains it
        (f"```json\n{NJ}\n{ZS}\n```", [("南京", "地点"), ("张三", "人名")]),  # fences
        (f"[{NJ}, {ZS}]", [("南京", "地点"), ("张三", "人名")]),  # a JSON list
        (f"```\n[{NJ}]\n```", [("南京", "地点")]),
        (f"我找到了以下实体：\n{NJ}\n以上。", [("南京", "地点")]),  # prose lines skipped
        (f"Entities: {NJ} and also {ZS}.", [("南京", "地点"), ("张三", "人名")]),
        (f'{NJ}\n{{"entity_text": "北', [("南京", "地点")]),  # truncated last object dropped
        (f"{NJ}\n{NJ}", [("南京", "地点"), ("南京", "地点")]),  # duplicates kept
        ('{"entity_text": " 南京 ", "entity_label": "地点 "}', [("南京", "地点")]),
        ('{"text": "南京", "label": "地点"}', [("南京", "地点")]),  # common key aliases
        ('{"entities": [{"entity_text": "南京", "entity_label": "地点"}]}', [("南京", "地点")]),  # wrapped
        ('{"人名": ["张三", "李四"], "地点": []}', [("张三", "人名"), ("李四", "人名")]),  # label -> texts
        (NONE_MARKER, []),
        (f'"{NONE_MARKER}"。', []),
        ("", []),
        ("  \n ", []),
        ("[]", []),
        ("```json\n[]\n```", []),
    ],
)
def test_parse_entities(text, expected):
    assert parse_entities(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        '{"entity_text": "南京", "entity_lab',  # truncated, nothing complete
        "南京是一个地点",  # prose only
        '{"foo": 1}',  # JSON, but not entities
        "{entity_text: 南京}",  # not JSON
        "[1, 2, 3]",
        None,
    ],
)
def test_parse_entities_unparseable(text):
    assert parse_entities(text) is None


# --------------------------------------------------------------------------- ner_metrics

# sample 1: gold {南京/地点, 张三/人名}, pred {南京/地点, 张三/组织} -> TP 1, FP 1, FN 1
# sample 2: gold {北京/地点 x2},         pred {北京/地点}          -> TP 1, FN 1 (multiset)
# sample 3: gold {},                     pred {上海/地点}          -> FP 1
# sample 4: gold {联合国/组织},          pred None (unparseable)   -> FN 1
# sample 5: gold {},                     pred {}                   -> exact
# TP = 2, predicted = 4, gold = 5: P = 2/4, R = 2/5, F1 = 2*.5*.4/.9 = 4/9
# 地点: gold 3, pred 3, TP 2 -> P = R = F1 = 2/3;  人名: gold 1, pred 0 -> 0;  组织: gold 1, pred 1, TP 0 -> 0
# macro F1 = (2/3 + 0 + 0)/3 = 2/9; exact match 1/5; unparseable 1/5
REFS = [
    [("南京", "地点"), ("张三", "人名")],
    [("北京", "地点"), ("北京", "地点")],
    [],
    [("联合国", "组织")],
    [],
]
PREDS = [
    [("南京", "地点"), ("张三", "组织")],
    [("北京", "地点")],
    [("上海", "地点")],
    None,
    [],
]


def test_ner_metrics_by_hand():
    m = ner_metrics(REFS, PREDS)
    assert m["n"] == 5
    assert (m["tp"], m["fp"], m["fn"]) == (2, 2, 3)
    assert isclose(m["precision"], 0.5) and isclose(m["recall"], 0.4) and isclose(m["f1"], 4 / 9)
    assert isclose(m["macro_f1"], 2 / 9)
    assert isclose(m["exact_match"], 0.2)
    assert m["unparseable"] == 1 and isclose(m["unparseable_rate"], 0.2)
    assert list(m["per_type"]) == sorted(["地点", "人名", "组织"])
    loc = m["per_type"]["地点"]
    assert (loc["support"], loc["predicted"], loc["tp"]) == (3, 3, 2)
    assert isclose(loc["f1"], 2 / 3)
    assert m["per_type"]["人名"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0, "tp": 0}
    assert m["per_type"]["组织"]["predicted"] == 1 and m["per_type"]["组织"]["f1"] == 0.0


def test_duplicate_prediction_is_one_tp_one_fp():
    m = ner_metrics([[("南京", "地点")]], [[("南京", "地点"), ("南京", "地点")]])
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 0)
    assert isclose(m["precision"], 0.5) and m["recall"] == 1.0 and m["exact_match"] == 0.0


def test_same_text_other_type_is_wrong():
    m = ner_metrics([[("南京", "地点")]], [[("南京", "地理实体")]])
    assert m["tp"] == 0 and m["f1"] == 0.0


def test_parse_then_score_end_to_end():
    gold = [parse_entities(f"{NJ}{ZS}"), parse_entities(NONE_MARKER)]
    outputs = [f"```json\n{NJ}\n{ZS}\n```", "没有找到任何实体。"]
    m = ner_metrics(gold, [parse_entities(o) for o in outputs])
    assert m["f1"] == 1.0 and m["exact_match"] == 1.0 and m["unparseable"] == 0


def test_accepts_json_round_tripped_pairs_and_dicts():
    m = ner_metrics([[["南京", "地点"]]], [[{"entity_text": "南京", "entity_label": "地点"}]])
    assert m["f1"] == 1.0


def test_all_empty_is_zero_not_a_crash():
    m = ner_metrics([[], []], [[], None])
    assert m["f1"] == 0.0 and m["per_type"] == {} and m["macro_f1"] == 0.0
    assert m["exact_match"] == 1.0  # the None prediction predicts nothing, which was right
    assert m["unparseable"] == 1


def test_ner_metrics_errors():
    with pytest.raises(DataError, match="1 references but 2 predictions"):
        ner_metrics([[]], [[], []])
    with pytest.raises(DataError):
        ner_metrics([], [])
    with pytest.raises(DataError, match="reference 0"):
        ner_metrics([None], [[]])
    with pytest.raises(DataError, match="not an entity"):
        ner_metrics([[("南京",)]], [[]])
