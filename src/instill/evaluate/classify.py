"""Classification: turn free-form model outputs into labels, then score them.

A generative model answers a classification prompt with text ("Sports", "类别：体育。",
"The answer is \\boxed{Sports}"). Scoring has two steps:

1. ``match_label(output, labels)`` maps one output to one candidate label, or ``None``
   when no label can be read from it (an *invalid* prediction).
2. ``classification_metrics(references, predictions, labels)`` scores the matched labels.

Invalid predictions are never dropped: they count as wrong, lower recall (never precision)
of the reference class, and get their own ``"<invalid>"`` column in the confusion matrix,
so a model that learns the task but not the output format shows up as such.

Precision/recall/F1 are computed here from the confusion matrix (a few lines; no
scikit-learn needed); ``tests/evaluate`` cross-checks them against scikit-learn's
``precision_recall_fscore_support(..., zero_division=0)``.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from instill.errors import DataError
from instill.report.plots import INVALID_COLUMN

INVALID = INVALID_COLUMN  # the confusion matrix's column for answers that matched no label

# Characters stripped from both ends of an output and of a label before comparing.
# An explicit set rather than "all punctuation" so labels such as "C#" or "C++" survive.
_EDGE_CHARS = (
    " \t\r\n\f\v"
    "\"'`*_~.,;:!?()[]{}<>"  # ASCII (full-width forms become these under NFKC)
    "\u3002\u3001\uff61\uff64"  # 。、 ｡ ､
    "\u201c\u201d\u2018\u2019\u300c\u300d\u300e\u300f"  # “ ” ‘ ’ 「 」 『 』
    "\u300a\u300b\u3008\u3009\u3010\u3011\u3014\u3015\u3016\u3017"  # 《》〈〉【】〔〕〖〗
    "\u2026\u00b7\u30fb"  # … · ・
)
_LABEL_SEPARATORS = re.compile(r"[,\uff0c\u3001;\uff1b\n]")  # , ， 、 ; ； newline
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BOXED = "\\boxed{"
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf)\{([^{}]*)\}")


# --------------------------------------------------------------------------- label sets


def parse_label_set(value: Any) -> list[str]:
    """Candidate labels from a list, a Python-list string or a separated string.

    Accepted: ``["Art", "Sports"]``; ``"['Art', 'Sports']"`` (read with ``ast.literal_eval``,
    never ``eval``); ``"Art, Sports"`` split on ``,`` ``，`` ``、`` ``;`` ``；`` or newlines
    (a bracketed string that is not a valid literal, ``"[Art, Sports]"``, is split the same
    way). Items are stripped of whitespace and quotes; exact duplicates are dropped keeping
    the first. Raises ``DataError`` when nothing is left, when an item is not a string or
    number, or when two labels become the same after ``normalize``.
    """
    if isinstance(value, str):
        items = _split_label_string(value)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise DataError(f"label set must be a list or a string, got {type(value).__name__}: {value!r}")

    labels: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise DataError(f"label set item {item!r} is not a string")
        label = str(item).strip().strip("\"'\u201c\u201d\u2018\u2019").strip()
        if label and label not in labels:
            labels.append(label)
    if not labels:
        raise DataError(f"label set is empty: {value!r}")
    _check_distinct(labels)
    return labels


def _split_label_string(text: str) -> list[Any]:
    text = text.strip()
    if text[:1] in "[(" and text[-1:] in "])":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            text = text[1:-1]
        else:
            if isinstance(parsed, (list, tuple)):
                return list(parsed)
            text = text[1:-1]
    return _LABEL_SEPARATORS.split(text)


def _check_distinct(labels: Sequence[str]) -> dict[str, str]:
    """Map normalised form -> label; a collision is a user error (the labels are indistinguishable)."""
    seen: dict[str, str] = {}
    for label in labels:
        key = normalize(label)
        if not key:
            raise DataError(f"label {label!r} is empty after normalisation")
        if key in seen and seen[key] != label:
            raise DataError(f"labels {seen[key]!r} and {label!r} are the same after normalisation")
        seen.setdefault(key, label)
    return seen


def _as_label_list(labels: Any) -> list[str]:
    return parse_label_set(labels)


# --------------------------------------------------------------------------- normalise + match


def normalize(text: str | None) -> str:
    """Canonical form of an output or a label, for comparison only.

    Steps, in order: take the content of the last ``<answer>...</answer>`` if there is one;
    then the content of the last ``\\boxed{...}`` (braces balanced; a ``\\text{X}`` inside
    becomes ``X``) if there is one; NFKC
    (full-width letters, digits and punctuation become half-width: ``ＳＰＯＲＴＳ！`` ->
    ``SPORTS!``); casefold; collapse runs of whitespace to one space; strip surrounding
    whitespace, punctuation, quotes and brackets (ASCII and Chinese: 。，、！“”《》【】 ...)
    repeatedly, so ``**“体育”。**`` -> ``体育``. ``None`` becomes ``""``.
    """
    if not text:
        return ""
    tags = _ANSWER_TAG.findall(text)
    if tags:
        text = tags[-1]
    boxed = _last_boxed(text)
    if boxed is not None:
        text = _LATEX_TEXT.sub(r"\1", boxed)
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.strip(_EDGE_CHARS)


def label_in_answer(answer: str) -> str:
    """The label written in an answer: inside the last <answer>..</answer>, then the last \\boxed{..}."""
    tags = _ANSWER_TAG.findall(answer)
    text = tags[-1] if tags else answer
    boxed = _last_boxed(text)
    return (boxed if boxed is not None else text).strip()


def _last_boxed(text: str) -> str | None:
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    i = start + len(_BOXED)
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return text[i:]  # unclosed (output cut off): take what is there


def _is_word_char(ch: str) -> bool:
    """A character that continues a word: letters/digits of scripts written with spaces.

    CJK ideographs, kana and Hangul are wide (east-asian width W/F) and never count, so
    ``体育`` is found inside ``这是体育新闻``, while ``art`` is not found inside ``article``.
    """
    return ch.isalnum() and unicodedata.east_asian_width(ch) not in ("W", "F")


def _occurrences(needle: str, haystack: str) -> list[int]:
    """Start positions of ``needle`` in ``haystack`` that do not cut through a word."""
    found = []
    start = haystack.find(needle)
    while start >= 0:
        end = start + len(needle)
        left_ok = not (_is_word_char(needle[0]) and start > 0 and _is_word_char(haystack[start - 1]))
        right_ok = not (_is_word_char(needle[-1]) and end < len(haystack) and _is_word_char(haystack[end]))
        if left_ok and right_ok:
            found.append(start)
        start = haystack.find(needle, start + 1)
    return found


def match_label(output: str | None, labels: Any) -> str | None:
    """The candidate label an output names, or ``None`` (invalid) if it names none.

    Rule, on ``normalize``d text (both sides):

    1. the output equals a label -> that label;
    2. otherwise look for each label inside the output, as a substring that does not cut
       through a word of a space-separated script (``art`` does not match ``article``;
       Chinese labels match anywhere). Exactly one label found -> that label;
    3. several found -> the one whose first occurrence starts earliest; at the same start
       the longest (``体育新闻`` beats ``体育`` in ``这是体育新闻``);
    4. none found -> ``None``.

    The returned value is the label as given in ``labels`` (not normalised). ``labels`` may
    be anything ``parse_label_set`` accepts.
    """
    label_list = _as_label_list(labels)
    text = normalize(output)
    if not text:
        return None
    by_key = {normalize(label): label for label in label_list}
    if text in by_key:
        return by_key[text]
    best: tuple[int, int] | None = None
    best_label = None
    for key, label in by_key.items():
        hits = _occurrences(key, text)
        if hits:
            rank = (hits[0], -len(key))
            if best is None or rank < best:
                best, best_label = rank, label
    return best_label


# --------------------------------------------------------------------------- metrics


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return _safe_div(2 * p * r, p + r)


def classification_metrics(
    references: Sequence[str],
    predictions: Sequence[str | None],
    labels: Any,
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class scores and a confusion matrix.

    ``references`` are gold labels; each must equal (after ``normalize``) a label of
    ``labels``, else ``DataError`` names it. ``predictions`` are labels from ``match_label``
    or ``None`` for invalid outputs; a string that is not exactly a label is passed through
    ``match_label`` first, so raw model outputs work too.

    Definitions (``zero_division=0``: a 0/0 ratio is 0):

    - ``accuracy`` = correct / n; invalid predictions are wrong.
    - per class c: precision = TP / predicted as c, recall = TP / support,
      F1 = 2PR/(P+R). An invalid prediction lowers the recall of its reference class only.
    - ``macro_*`` = unweighted mean over the *active* labels: those with support > 0 or
      predicted at least once. A candidate label that neither occurs in the references nor
      is ever predicted has nothing to score, and counting it as F1 = 0 would punish a model
      for the make-up of the evaluation set; it is still listed in ``per_class``.
      A label with support but never predicted does count (precision = recall = F1 = 0).
    - ``weighted_f1`` = mean of per-class F1 weighted by support.

    Returns keys: ``n``, ``accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``,
    ``weighted_f1``, ``invalid``, ``invalid_rate``, ``labels`` (label order),
    ``per_class`` (label -> ``precision``, ``recall``, ``f1``, ``support``, ``predicted``),
    ``confusion_matrix`` (rows: reference labels in label order; columns: predicted labels in
    label order then ``"<invalid>"``; nested lists of ints) and ``confusion_columns``
    (the column names).
    """
    label_list = _as_label_list(labels)
    if len(references) != len(predictions):
        raise DataError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        raise DataError("nothing to evaluate: no references")

    by_key = {normalize(label): label for label in label_list}
    index = {label: i for i, label in enumerate(label_list)}
    k = len(label_list)
    cm = [[0] * (k + 1) for _ in range(k)]
    invalid = 0
    for i, (ref, pred) in enumerate(zip(references, predictions)):
        ref_label = by_key.get(normalize(ref)) if isinstance(ref, str) else None
        if ref_label is None:
            raise DataError(f"reference label {ref!r} (sample {i}) is not in the label set {label_list}")
        if pred is not None and pred not in index:
            pred = match_label(pred, label_list) if isinstance(pred, str) else None
        if pred is None:
            invalid += 1
            col = k
        else:
            col = index[pred]
        cm[index[ref_label]][col] += 1

    n = len(references)
    correct = sum(cm[i][i] for i in range(k))
    per_class: dict[str, dict[str, float | int]] = {}
    active = []
    for i, label in enumerate(label_list):
        tp = cm[i][i]
        support = sum(cm[i])
        predicted = sum(cm[r][i] for r in range(k))
        p, r = _safe_div(tp, predicted), _safe_div(tp, support)
        per_class[label] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": support, "predicted": predicted}
        if support or predicted:
            active.append(label)

    def macro(key: str) -> float:
        return _safe_div(sum(per_class[c][key] for c in active), len(active))

    return {
        "n": n,
        "accuracy": correct / n,
        "macro_precision": macro("precision"),
        "macro_recall": macro("recall"),
        "macro_f1": macro("f1"),
        "weighted_f1": sum(per_class[c]["f1"] * per_class[c]["support"] for c in label_list) / n,
        "invalid": invalid,
        "invalid_rate": invalid / n,
        "labels": list(label_list),
        "per_class": per_class,
        "confusion_matrix": cm,
        "confusion_columns": [*label_list, INVALID],
    }


# --------------------------------------------------------------------------- plot
