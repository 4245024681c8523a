"""Free-text generation: BLEU-1..4, ROUGE-1/2/L and exact match, tuned for Chinese.

BLEU (``bleu-1`` .. ``bleu-4``), on a 0-100 scale
    Corpus-level BLEU from ``sacrebleu`` (``BLEU(tokenize="zh", max_ngram_order=n,
    effective_order=True)``, default ``smooth_method="exp"``, one reference per sample):
    n-gram counts are summed over the whole set, BLEU-n = brevity penalty x geometric
    mean of the clipped n-gram precisions of orders 1..n. Tokenizer ``zh``: every Chinese
    character is a token (as the seed recipe's ``list(text)``), runs of other text are
    split like sacrebleu's ``13a`` (words, numbers and punctuation), case kept.
    ``effective_order`` drops orders for which the corpus has no n-grams at all, so very
    short outputs (``体育``) still score 100 when identical instead of 0.
    Note this is *not* the mean of sentence-level BLEU that some recipes report
    (LLaMA-Factory averages nltk ``sentence_bleu`` over jieba words); corpus BLEU is the
    standard definition and is not dominated by very short samples.

ROUGE (``rouge-1``, ``rouge-2``, ``rouge-l``), on a 0-100 scale
    ``rouge_chinese.Rouge`` F-scores on ``jieba`` words (``jieba.cut``, default mode),
    computed per sample and averaged — the recipe LLaMA-Factory and ChatGLM use, with the
    library's defaults (n-grams counted once per sample; ROUGE-L summary-level LCS over
    sentences split at 。！？). Two edge cases are handled here, not by the library: a sample
    whose prediction and reference are the same word sequence scores 100 on all three
    (the library gives ROUGE-2 = 0 to an identical one-word answer, and raises on two
    empty strings); a sample where only one side is empty (no words) scores 0.

Exact match (``exact_match``, a 0-1 share like accuracy)
    prediction == reference after stripping surrounding whitespace.

``None`` predictions are treated as empty strings; empty predictions never raise and
are counted in ``empty``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from instill.errors import DataError, InstillError


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InstillError(f"text-generation metrics need {package}: pip install {package}") from e


def bleu_scores(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """``{"bleu-1": .., "bleu-4": ..}`` as defined in the module docstring (0-100)."""
    metrics = _require("sacrebleu.metrics", "sacrebleu")
    refs = [list(references)]
    out = {}
    for n in range(1, 5):
        bleu = metrics.BLEU(tokenize="zh", max_ngram_order=n, effective_order=True)
        out[f"bleu-{n}"] = round(min(100.0, bleu.corpus_score(list(predictions), refs).score), 4)
    return out


def _words(text: str) -> str:
    jieba = _require("jieba", "jieba")
    return " ".join(w for w in jieba.cut(text) if w.strip())


def rouge_scores(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """``{"rouge-1", "rouge-2", "rouge-l"}`` F-scores as defined in the module docstring (0-100)."""
    rouge_mod = _require("rouge_chinese", "rouge-chinese")
    _require("jieba", "jieba").setLogLevel(logging.WARNING)
    rouge = rouge_mod.Rouge()
    keys = ("rouge-1", "rouge-2", "rouge-l")
    totals = dict.fromkeys(keys, 0.0)
    for ref, pred in zip(references, predictions):
        hyp_words, ref_words = _words(pred), _words(ref)
        if hyp_words == ref_words:
            for key in keys:
                totals[key] += 1.0
            continue
        if not hyp_words or not ref_words:
            continue
        score = rouge.get_scores(hyp_words, ref_words)[0]
        for key in keys:
            totals[key] += score[key]["f"]
    n = len(references)
    return {key: round(min(100.0, 100.0 * totals[key] / n), 4) if n else 0.0 for key in keys}


def generation_metrics(references: Sequence[str], predictions: Sequence[str | None]) -> dict[str, Any]:
    """BLEU-1..4, ROUGE-1/2/L (0-100) and exact match (0-1); see the module docstring.

    Returns keys: ``n``, ``bleu-1``, ``bleu-2``, ``bleu-3``, ``bleu-4``, ``rouge-1``,
    ``rouge-2``, ``rouge-l``, ``exact_match``, ``empty`` (predictions that are empty or
    whitespace after stripping).
    """
    if len(references) != len(predictions):
        raise DataError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        raise DataError("nothing to evaluate: no references")
    for i, ref in enumerate(references):
        if not isinstance(ref, str):
            raise DataError(f"reference {i} is {type(ref).__name__}, not text: {ref!r}")
    preds = ["" if p is None else str(p) for p in predictions]
    refs = list(references)
    n = len(refs)
    return {
        "n": n,
        **bleu_scores(refs, preds),
        **rouge_scores(refs, preds),
        "exact_match": sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / n,
        "empty": sum(not p.strip() for p in preds),
    }
