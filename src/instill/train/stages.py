"""The training stages, keyed by the config's `stage:`. Adding a stage: one module, one entry here."""

from __future__ import annotations

from instill.train import distill, grpo, preference, pt, reward, sft
from instill.train.stage import Stage

STAGES: dict[str, Stage] = {stage.name: stage for stage in (sft.STAGE, pt.STAGE, preference.DPO, preference.KTO,
                                                        reward.STAGE, grpo.GRPO, grpo.RLOO, distill.STAGE)}
