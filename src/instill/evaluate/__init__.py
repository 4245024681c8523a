"""Task metrics: pure functions from (references, predictions) to a dict of numbers.

- ``classify``: read a label from a free-form output, accuracy / F1 / confusion matrix (drawn by report.plots).
- ``ner``: parse JSON-lines entity outputs, entity-level precision / recall / F1.
- ``textgen``: BLEU-1..4 (character level for Chinese), ROUGE-1/2/L (jieba words), exact match.

No model code here: the runner generates, these modules score. Heavy libraries
(matplotlib, sacrebleu, jieba, rouge-chinese) are imported only when used.
"""

from instill.evaluate.classify import (
    classification_metrics,
    match_label,
    normalize,
    parse_label_set,
)
from instill.evaluate.ner import ner_metrics, parse_entities
from instill.evaluate.textgen import generation_metrics

__all__ = [
    "classification_metrics",
    "generation_metrics",
    "match_label",
    "ner_metrics",
    "normalize",
    "parse_entities",
    "parse_label_set",
]
