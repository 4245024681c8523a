"""Named-entity recognition as generation: parse the model's JSON lines, score entities.

Output format (the Qwen2 NER recipe, ``chinese_ner_sft``): one JSON object per entity,

    {"entity_text": "南京", "entity_label": "地理实体"}

one per line (the recipe's own training targets even glue them together on one line with
no separator), or the marker ``没有找到任何实体`` when the sentence has none.

``parse_entities`` is tolerant of what models actually emit: code fences, a JSON list of
objects, objects glued together, prose lines around them, and a last object cut off by
``max_new_tokens`` (the complete ones are kept). It returns ``None`` only when nothing in
the text can be read as entities and the text is not the none-marker.

``ner_metrics`` scores entity-level exact matches of (text, type) pairs, counted as
multisets (an entity predicted twice but present once is one TP and one FP).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from instill.errors import DataError

NONE_MARKER = "没有找到任何实体"

# Where an entity object keeps its text and its type, first match wins; also read by prep's NER converter.
ENTITY_TEXT_KEYS = ("entity_text", "text", "entity", "name", "word")
ENTITY_LABEL_KEYS = ("entity_label", "label", "type", "entity_type", "category")
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*")
_decoder = json.JSONDecoder()

Entity = tuple[str, str]


def _entity_from_dict(obj: dict) -> Entity | None:
    text = next((obj[k] for k in ENTITY_TEXT_KEYS if k in obj), None)
    label = next((obj[k] for k in ENTITY_LABEL_KEYS if k in obj), None)
    if isinstance(text, (str, int, float)) and isinstance(label, (str, int, float)):
        text, label = str(text).strip(), str(label).strip()
        if text and label:
            return (text, label)
    return None


def _entities_from_json(value: Any) -> list[Entity] | None:
    """Entities in one decoded JSON value, or None if the value is not entity-shaped.

    Shapes: an entity object; a list of entity objects (``[]`` is a valid "no entities");
    a ``{label: [text, ...]}`` mapping.
    """
    if isinstance(value, dict):
        entity = _entity_from_dict(value)
        if entity is not None:
            return [entity]
        if value and all(isinstance(v, list) and all(isinstance(t, str) for t in v) for v in value.values()):
            return [(t.strip(), str(k).strip()) for k, v in value.items() for t in v if t.strip()]
        return None
    if isinstance(value, list):
        found: list[Entity] = []
        for item in value:
            if isinstance(item, dict) and (entity := _entity_from_dict(item)) is not None:
                found.append(entity)
        return found if found or not value else None
    return None


def parse_entities(text: str | None) -> list[Entity] | None:
    """(entity_text, entity_label) pairs in order of appearance, duplicates kept.

    - empty text, or no entity JSON but the marker ``没有找到任何实体`` -> ``[]``;
    - every JSON value embedded in the text is tried (found by scanning for ``{``/``[`` and
      decoding from there), so fences, prose and several objects on one line are fine;
      values that are not entity-shaped and fragments that do not decode are skipped;
    - if nothing entity-shaped decodes and the marker is absent -> ``None`` (unparseable).
    """
    if text is None:
        return None
    text = _FENCE.sub("\n", text).strip()
    if not text:
        return []
    entities: list[Entity] = []
    parsed_any = False
    pos = 0
    while True:
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        try:
            value, end = _decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        found = _entities_from_json(value)
        if found is None:
            # Not entity-shaped as a whole (e.g. an object with other keys): look inside it.
            pos = start + 1
            continue
        parsed_any = True
        entities.extend(found)
        pos = end
    if parsed_any:
        return entities
    if NONE_MARKER in text:
        return []
    return None


def _as_entities(value: Any, where: str) -> list[Entity]:
    out = []
    for item in value:
        if isinstance(item, dict):
            entity = _entity_from_dict(item)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            entity = (str(item[0]).strip(), str(item[1]).strip())
        else:
            entity = None
        if entity is None:
            raise DataError(f"{where}: {item!r} is not an entity (expected (text, label))")
        out.append(entity)
    return out


def _prf(tp: int, pred: int, gold: int) -> tuple[float, float, float]:
    p = tp / pred if pred else 0.0
    r = tp / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def ner_metrics(
    references: Sequence[Sequence[Entity]],
    predictions: Sequence[Sequence[Entity] | None],
) -> dict[str, Any]:
    """Entity-level exact-match scores.

    An entity is a (text, type) pair; a predicted one is correct only if both equal a gold
    one (after stripping whitespace). Per sample, TP = size of the multiset intersection of
    predicted and gold pairs; FP = predicted - TP; FN = gold - TP. Micro precision / recall /
    F1 sum TP/FP/FN over all samples; a 0/0 ratio is 0. A ``None`` prediction (unparseable
    output) counts as predicting nothing and is counted in ``unparseable``. Pairs may be
    tuples, 2-lists (as JSON gives back) or ``{"entity_text", "entity_label"}`` dicts.

    Returns keys: ``n``, ``precision``, ``recall``, ``f1`` (micro), ``macro_f1`` (mean F1
    over types seen in references or predictions), ``tp``, ``fp``, ``fn``,
    ``exact_match`` (share of samples whose predicted multiset equals the gold one),
    ``unparseable``, ``unparseable_rate``, ``per_type`` (type -> ``precision``, ``recall``,
    ``f1``, ``support`` (gold count), ``predicted``, ``tp``), types sorted by name.
    """
    if len(references) != len(predictions):
        raise DataError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        raise DataError("nothing to evaluate: no references")

    tp_by: Counter[str] = Counter()
    gold_by: Counter[str] = Counter()
    pred_by: Counter[str] = Counter()
    unparseable = exact = 0
    for i, (ref, pred) in enumerate(zip(references, predictions)):
        if ref is None:
            raise DataError(f"reference {i} has no entity list (unparseable gold answer?)")
        gold = Counter(_as_entities(ref, f"reference {i}"))
        if pred is None:
            unparseable += 1
            guess: Counter[Entity] = Counter()
        else:
            guess = Counter(_as_entities(pred, f"prediction {i}"))
        exact += gold == guess
        for (_, label), count in gold.items():
            gold_by[label] += count
        for (_, label), count in guess.items():
            pred_by[label] += count
        for (_, label), count in (gold & guess).items():
            tp_by[label] += count

    tp, n_pred, n_gold = sum(tp_by.values()), sum(pred_by.values()), sum(gold_by.values())
    p, r, f = _prf(tp, n_pred, n_gold)
    per_type = {}
    for label in sorted(set(gold_by) | set(pred_by)):
        tp_l, pred_l, gold_l = tp_by[label], pred_by[label], gold_by[label]
        pl, rl, fl = _prf(tp_l, pred_l, gold_l)
        per_type[label] = {"precision": pl, "recall": rl, "f1": fl, "support": gold_l, "predicted": pred_l, "tp": tp_l}
    n = len(references)
    return {
        "n": n,
        "precision": p,
        "recall": r,
        "f1": f,
        "macro_f1": sum(v["f1"] for v in per_type.values()) / len(per_type) if per_type else 0.0,
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_gold - tp,
        "exact_match": exact / n,
        "unparseable": unparseable,
        "unparseable_rate": unparseable / n,
        "per_type": per_type,
    }
