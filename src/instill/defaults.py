"""Training defaults that learn, for the keys a YAML leaves unset.

transformers' own defaults (learning rate 5e-5, batch 1, no warmup) are one setting for every
method; a LoRA adapter at 5e-5 barely moves in a few hundred steps, so a small run stays at chance
and the user blames the data. Where the YAML (or an override) does not set a key, the run uses the
stage's learning rate for its method (stage_facts.py) and the values below, and the run summary lists what was chosen. A key the user
sets is never changed, so LLaMA-Factory's YAMLs (which set them all) train exactly as written; for
the same reason `lora_rank` keeps LLaMA-Factory's default (8), which its examples leave unset.

The measured effect on Fudan-news classification is in the README ("Defaults").
"""

from __future__ import annotations

from typing import Any

from instill.stage_facts import STAGE_FACTS

# Both batch keys unset: 4 rows per step, gradients of 2 steps per update (8 rows per update keeps
# the activation memory of 4 rows and gives a small set enough updates).
_BATCH = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
_WARMUP = {"warmup_ratio": 0.1}


def learning_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """The values to use for keys missing from `given` (the user's flat keys), for its stage and method."""
    stage, method = str(given.get("stage", "sft")), str(given.get("finetuning_type", "lora"))
    chosen: dict[str, Any] = {}
    facts = STAGE_FACTS.get(stage)  # an invalid stage/method: no rate here, the config refuses it
    rate = facts.learning_rates.get(method) if facts else None
    if rate is not None and "learning_rate" not in given:
        chosen["learning_rate"] = rate
    if not any(key in given for key in _BATCH):
        chosen.update(_BATCH)
    if "warmup_ratio" not in given and "warmup_steps" not in given:
        chosen.update(_WARMUP)
    return chosen


def defaults_note(chosen: dict[str, Any], given: dict[str, Any]) -> str:
    """The run summary's line naming what was chosen."""
    what = f"{given.get('stage', 'sft')}, {given.get('finetuning_type', 'lora')}"
    values = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                       for key, value in chosen.items())
    return f"defaults for {what} (not in the config; set a key to override): {values}"
