"""`stage: pt`, continued pretraining on plain text (LLaMA-Factory's c4_demo / wiki_demo entries).

Rows give a text column (`columns: {prompt: text}`); documents end with eos, are joined and cut
into blocks of `cutoff_len` (data/dataset.py), and every token is trained. The Trainer is the
same as SFT's: only the data differs.
"""

from __future__ import annotations

from instill.train.sft import build_trainer
from instill.train.stage import Stage

STAGE = Stage.named("pt", build_trainer)
