"""Fixtures of the data tests."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

LF_GOLDEN = Path(__file__).parents[1] / "fixtures" / "lf_templates_golden.json.gz"


@pytest.fixture(scope="module")
def stand_in(qwen2_tokenizer):
    """The tokenizer LLaMA-Factory's golden ids were made with (bench/lf_golden_templates.py): the real Qwen2
    tokenizer, its chat template removed, every template's stop words and token slots added as special tokens."""
    from tokenizers import AddedToken

    tokenizer = copy.deepcopy(qwen2_tokenizer)
    tokenizer.chat_template = None
    special = json.loads(gzip.open(LF_GOLDEN).read())["stand_in_special_tokens"]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in special], special_tokens=True)
    return tokenizer
