from math import isclose

import pytest

from instill.errors import DataError, InstillError
from instill.evaluate.classify import (
    INVALID,
    classification_metrics,
    match_label,
    normalize,
    parse_label_set,
)

# --------------------------------------------------------------------------- parse_label_set


@pytest.mark.parametrize(
    "value, expected",
    [
        (["Art", "Sports"], ["Art", "Sports"]),
        ("['Art', 'Sports']", ["Art", "Sports"]),
        ('["Art", "Sports"]', ["Art", "Sports"]),
        ("('Art', 'Sports')", ["Art", "Sports"]),
        ("[Art, Sports]", ["Art", "Sports"]),  # not a literal: split instead
        ("Sports, Politics", ["Sports", "Politics"]),  # seed 004 "Category:" line
        ("体育、财经，科技", ["体育", "财经", "科技"]),
        ("体育；财经;科技\n教育", ["体育", "财经", "科技", "教育"]),
        ("'Art', 'Sports', 'Art'", ["Art", "Sports"]),  # quotes stripped, duplicate dropped
        ([" Art ", "", "Sports"], ["Art", "Sports"]),
        ([1, 2], ["1", "2"]),
    ],
)
def test_parse_label_set(value, expected):
    assert parse_label_set(value) == expected


@pytest.mark.parametrize("value", ["", "  ", "[]", [], ", ，、", None, 3, [["a"]], "['Art', 'art']"])
def test_parse_label_set_rejects(value):
    with pytest.raises(DataError):
        parse_label_set(value)


def test_parse_label_set_never_evaluates_code():
    # literal_eval refuses calls; the string is then split as text, never run.
    assert parse_label_set("[__import__('os').getcwd()]") == ["__import__('os').getcwd()"]


# --------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  Sports \n", "sports"),
        ("ＳＰＯＲＴＳ！", "sports"),  # full-width -> half-width, then casefold
        ("“体育”。", "体育"),
        ("《体育》", "体育"),
        ("【体育】", "体育"),
        ("**Sports**", "sports"),
        ("'Sports'.", "sports"),
        ("\\boxed{Sports}", "sports"),
        ("The answer is $\\boxed{\\text{Art}}$.", "art"),  # braces balanced, \\text unwrapped
        ("so \\boxed{B} wait no \\boxed{C}", "c"),  # last box wins
        ("\\boxed{Spor", "spor"),  # cut off by max_new_tokens
        ("<answer> Sports </answer>", "sports"),
        ("<think>Art?</think><answer>\\boxed{体育}</answer>", "体育"),
        ("Science   Fiction", "science fiction"),
        ("C++", "c++"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


# --------------------------------------------------------------------------- match_label

LABELS = ["Art", "Sports", "Politics"]


@pytest.mark.parametrize(
    "output, expected",
    [
        ("Sports", "Sports"),
        ("sports", "Sports"),
        ("ＳＰＯＲＴＳ", "Sports"),
        ("Sports.", "Sports"),
        ("\\boxed{Art}", "Art"),
        ("<answer>Politics</answer>", "Politics"),
        ("The category is Sports.", "Sports"),  # one label inside prose
        ("This article is about sport events", None),  # "art" inside "article" is no match
        ("Art and Sports", "Art"),  # tie: earliest occurrence wins
        ("Sports, maybe Art", "Sports"),
        ("", None),
        ("   ", None),
        (None, None),
        ("I don't know", None),
    ],
)
def test_match_label(output, expected):
    assert match_label(output, LABELS) == expected


def test_match_label_chinese():
    labels = ["体育", "财经", "体育新闻"]
    assert match_label("类别：体育。", labels) == "体育"
    assert match_label("这篇文章属于财经类", labels) == "财经"  # no word boundaries in Chinese
    # same start: the longer label wins; exact match beats substring
    assert match_label("这是体育新闻", labels) == "体育新闻"
    assert match_label("体育", labels) == "体育"
    assert match_label("财经还是体育？", labels) == "财经"


def test_match_label_returns_label_as_given_and_accepts_string_sets():
    assert match_label("SCIENCE FICTION", "['Science Fiction', 'Drama']") == "Science Fiction"
    assert match_label("computer science", ["science", "computer science"]) == "computer science"
    assert match_label("it is computer science", ["science", "computer science"]) == "computer science"


# --------------------------------------------------------------------------- metrics

# 3 classes, 10 samples. Confusion (rows = reference, cols = A B C <invalid>):
#   A: 2 1 0 1    support 4
#   B: 1 2 0 0    support 3
#   C: 0 1 2 0    support 3
#   predicted:    A 3, B 4, C 2, invalid 1
# accuracy = (2+2+2)/10 = 0.6
# A: P = 2/3, R = 2/4, F1 = 2*(2/3)*(1/2) / (2/3+1/2) = 4/7
# B: P = 2/4, R = 2/3, F1 = 4/7
# C: P = 2/2, R = 2/3, F1 = 2*(2/3)/(5/3) = 4/5
# macro P = (2/3+1/2+1)/3 = 13/18; macro R = (1/2+2/3+2/3)/3 = 11/18
# macro F1 = (4/7+4/7+4/5)/3 = 68/105
# weighted F1 = (4*4/7 + 3*4/7 + 3*4/5)/10 = 0.64
REFS = ["A", "A", "A", "A", "B", "B", "B", "C", "C", "C"]
PREDS = ["A", "A", "B", None, "B", "B", "A", "C", "C", "B"]


def test_classification_metrics_by_hand():
    m = classification_metrics(REFS, PREDS, ["A", "B", "C"])
    assert m["n"] == 10
    assert isclose(m["accuracy"], 0.6)
    assert isclose(m["macro_precision"], 13 / 18)
    assert isclose(m["macro_recall"], 11 / 18)
    assert isclose(m["macro_f1"], 68 / 105)
    assert isclose(m["weighted_f1"], 0.64)
    assert m["invalid"] == 1 and isclose(m["invalid_rate"], 0.1)
    assert m["labels"] == ["A", "B", "C"]
    assert m["confusion_columns"] == ["A", "B", "C", INVALID]
    assert m["confusion_matrix"] == [[2, 1, 0, 1], [1, 2, 0, 0], [0, 1, 2, 0]]
    a, b, c = (m["per_class"][k] for k in "ABC")
    assert (a["support"], a["predicted"]) == (4, 3)
    assert isclose(a["precision"], 2 / 3) and isclose(a["recall"], 0.5) and isclose(a["f1"], 4 / 7)
    assert isclose(b["precision"], 0.5) and isclose(b["recall"], 2 / 3) and isclose(b["f1"], 4 / 7)
    assert isclose(c["precision"], 1.0) and isclose(c["recall"], 2 / 3) and isclose(c["f1"], 0.8)


def test_classification_metrics_agree_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    m = classification_metrics(REFS, PREDS, ["A", "B", "C"])
    y_pred = [INVALID if p is None else p for p in PREDS]
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(
        REFS, y_pred, labels=["A", "B", "C"], average=None, zero_division=0
    )
    for i, label in enumerate("ABC"):
        assert isclose(m["per_class"][label]["precision"], p[i])
        assert isclose(m["per_class"][label]["recall"], r[i])
        assert isclose(m["per_class"][label]["f1"], f[i])
        assert m["per_class"][label]["support"] == s[i]
    macro = sklearn_metrics.f1_score(REFS, y_pred, labels=["A", "B", "C"], average="macro", zero_division=0)
    assert isclose(m["macro_f1"], macro)


def test_label_never_predicted_counts_zero():
    # refs A B, preds A A. A: P = 1/2, R = 1, F1 = 2/3. B: never predicted -> P = R = F1 = 0.
    # macro F1 = (2/3 + 0)/2 = 1/3
    m = classification_metrics(["A", "B"], ["A", "A"], ["A", "B"])
    assert m["per_class"]["B"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert isclose(m["macro_f1"], 1 / 3)


def test_label_absent_from_refs_and_preds_left_out_of_macro():
    # D is a candidate nobody uses: listed with support 0, not averaged (perfect run -> macro F1 = 1)
    m = classification_metrics(["A", "B"], ["A", "B"], ["A", "B", "D"])
    assert m["per_class"]["D"]["support"] == 0 and m["per_class"]["D"]["f1"] == 0.0
    assert m["macro_f1"] == 1.0 and m["accuracy"] == 1.0
    assert m["confusion_matrix"][2] == [0, 0, 0, 0]


def test_predicted_label_without_support_lowers_precision_macro():
    # refs A A, preds A D: A P = 1, R = 1/2, F1 = 2/3; D predicted once, support 0 -> F1 0, averaged.
    m = classification_metrics(["A", "A"], ["A", "D"], ["A", "D"])
    assert isclose(m["macro_f1"], (2 / 3 + 0) / 2)


def test_all_invalid():
    m = classification_metrics(["A", "B"], [None, None], ["A", "B"])
    assert m["accuracy"] == 0.0 and m["macro_f1"] == 0.0
    assert m["invalid"] == 2 and m["invalid_rate"] == 1.0
    assert m["confusion_matrix"] == [[0, 0, 1], [0, 0, 1]]


def test_raw_outputs_and_sloppy_references_are_matched():
    refs = [" 体育 ", "财经"]  # references are compared normalised, not substring-matched
    preds = ["答案：\\boxed{体育}", "我不知道"]
    m = classification_metrics(refs, preds, "体育、财经")
    assert m["accuracy"] == 0.5 and m["invalid"] == 1


def test_reference_outside_label_set_is_named():
    with pytest.raises(DataError, match="Cooking"):
        classification_metrics(["Art", "Cooking"], ["Art", "Art"], ["Art", "Sports"])
    assert issubclass(DataError, InstillError)


def test_length_mismatch_and_empty():
    with pytest.raises(DataError, match="2 references but 1 predictions"):
        classification_metrics(["A", "B"], ["A"], ["A", "B"])
    with pytest.raises(DataError):
        classification_metrics([], [], ["A", "B"])


def test_error_messages_fit_one_line():
    with pytest.raises(DataError) as e:
        classification_metrics(["x"], ["A"], ["A", "B"])
    assert "\n" not in str(e.value)
