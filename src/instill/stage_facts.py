"""What each training stage is, as facts the config and every layer can read (the ground floor).

`train/stages.py` pairs each entry here with the code that builds its Trainer (`train/stage.py`);
a test pins the two to the same names. Adding a stage: one entry here, one module in `train/`,
one line in `train/stages.py`. Nothing else asks "is this a preference stage" by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

# What a stage's rows become: "conversation" (labels on what the assistant says), "text" (every token
# trained), "pairs" (chosen/rejected answers to one prompt), "kto" (one answer with a desirable tag),
# "prompts" (a conversation up to the user's last turn; the model writes the answers while training).
DataKind = Literal["conversation", "text", "pairs", "kto", "prompts"]
PAIR_KINDS: tuple[DataKind, ...] = ("pairs", "kto")

# learning_rate a YAML leaves unset (defaults.py), by finetuning_type. LoRA SFT: 1e-3 (alpha = 2 x rank), the best
# accuracy per minute of training on two classification sets (README "Defaults that learn"); continued
# pretraining keeps 5e-4, where it was not measured;
# AdaLoRA 5e-3, 10x LoRA's earlier 5e-4, as measured (its singular values start at zero: at LoRA's rate it
# barely moves, README "Methods");
# full and freeze update the base weights themselves, where 1e-5 / 1e-4 are the usual values.
# Preference stages start from a tuned model and move it a little (trl's DPO examples: 5e-7 to 5e-5).
_SFT_RATES = {"lora": 1e-3, "adalora": 5e-3, "oft": 1e-4, "freeze": 1e-4, "full": 1e-5}
_PT_RATES = {**_SFT_RATES, "lora": 5e-4}
_PREFERENCE_RATES = {"lora": 5e-5, "adalora": 5e-4, "oft": 1e-5, "freeze": 5e-6, "full": 1e-6}
# Online RL and distillation start from a tuned model too; LoRA at 1e-5 (trl's GRPO default 1e-6 is for full
# weights) moved the demo's rewards within a few dozen steps.
_ONLINE_RATES = {"lora": 1e-5, "adalora": 1e-4, "oft": 1e-5, "freeze": 1e-6, "full": 1e-6}


@dataclass(frozen=True)
class StageFacts:
    name: str
    description: str
    data_kind: DataKind
    # Rows can be read and tokenized lazily as training consumes them (streaming: true).
    streamable: bool
    # learning_rate by finetuning_type when the YAML sets none.
    learning_rates: dict[str, float]
    # Whether `do_eval` task metrics (accuracy, entity F1, ...) make sense for this stage's eval data.
    task_metrics: bool = False
    # "lm": the causal LM; "score": a one-output value head on the same body (stage: rm).
    head: Literal["lm", "score"] = "lm"
    # Metrics the stage's Trainer logs besides loss (eval_ forms included): kept in trainer_log.jsonl and
    # drawn in rewards.png. Exact names, or prefixes ending in "/".
    metrics: tuple[str, ...] = ()
    # Config keys that only this stage (and others listing them) reads; set in another stage, they are
    # named as ignored in the run summary.
    own_keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def reads_pairs(self) -> bool:
        """Rows are pairs or KTO rows (read up front)."""
        return self.data_kind in PAIR_KINDS

    @property
    def has_input_ids(self) -> bool:
        """Rows are tokenized conversations or text (input_ids to group by length)."""
        return self.data_kind in ("conversation", "text")

    @property
    def generates(self) -> bool:
        """The stage samples completions while training (temperature and top_p apply to them)."""
        return self.data_kind == "prompts"

    def logs_metric(self, key: str) -> bool:
        """Whether `key` (or its eval_ form) is one of this stage's own metrics."""
        key = key.removeprefix("eval_")
        return any(key.startswith(m) if m.endswith("/") else key == m for m in self.metrics)


# The SFT losses (DFT, EAFT, ASFT); ASFT's reference is ref_model when given.
_REF_KEYS = {"ref_model", "ref_model_adapters", "ref_model_quantization_bit"}
_SFT_KEYS = frozenset({"use_dft_loss", "use_eaft_loss", "eaft_alpha", "use_asft_loss", "asft_alpha", *_REF_KEYS})
_DPO_KEYS = frozenset({"pref_beta", "pref_ftx", "pref_loss", "dpo_label_smoothing", "simpo_gamma", *_REF_KEYS,
                       "pref_bco_weight", "ld_alpha"})
_ONLINE_KEYS = frozenset({"num_generations", "max_prompt_length", "max_completion_length", "steps_per_generation",
                          "mask_truncated_completions", "use_vllm", "beta"})
_RL_KEYS = _ONLINE_KEYS | {"epsilon", "reward_funcs", "reward_weights", "reward_model"}
_GRPO_KEYS = _RL_KEYS | {"loss_type", "scale_rewards"}
_DISTILL_KEYS = _ONLINE_KEYS - {"num_generations", "steps_per_generation", "mask_truncated_completions"} | {
    "teacher_model_name_or_path"}
# What trl's online trainers log (eval_ forms too): rewards per function, KL, completion lengths, clipping.
_RL_METRICS = ("reward", "reward_std", "rewards/", "kl", "completions/", "clip_ratio/", "clip_ratio", "entropy",
               "frac_reward_zero_std")
_KTO_KEYS = frozenset({"pref_beta", "kto_chosen_weight", "kto_rejected_weight", *_REF_KEYS})

STAGE_FACTS: dict[str, StageFacts] = {facts.name: facts for facts in (
    StageFacts("sft", "supervised fine-tuning on conversations", "conversation", streamable=True,
               learning_rates=_SFT_RATES, task_metrics=True, own_keys=_SFT_KEYS),
    StageFacts("pt", "continued pretraining on plain text", "text", streamable=True, learning_rates=_PT_RATES),
    StageFacts("dpo", "preference optimisation on chosen/rejected pairs (DPO, IPO, hinge, ORPO, SimPO)", "pairs",
               streamable=False, learning_rates=_PREFERENCE_RATES, own_keys=_DPO_KEYS,
               metrics=("rewards/",)),
    StageFacts("kto", "KTO on answers labelled desirable or not", "kto", streamable=False,
               learning_rates=_PREFERENCE_RATES, own_keys=_KTO_KEYS, metrics=("rewards/", "kl")),
    StageFacts("rm", "reward model: a value head trained on chosen/rejected pairs", "pairs", streamable=False,
               learning_rates=_PREFERENCE_RATES, head="score", metrics=("accuracy", "margin", "mean_reward")),
    StageFacts("grpo", "online RL (GRPO): the model answers each prompt several times, rewards rank the answers",
               "prompts", streamable=False, learning_rates=_ONLINE_RATES, task_metrics=True, own_keys=_GRPO_KEYS,
               metrics=_RL_METRICS),
    StageFacts("rloo", "online RL (RLOO): like grpo, each answer's baseline is the mean reward of the others",
               "prompts", streamable=False, learning_rates=_ONLINE_RATES, task_metrics=True, own_keys=_RL_KEYS,
               metrics=_RL_METRICS),
    StageFacts("distill", "on-policy distillation: the student answers, a teacher's next-token distribution "
               "corrects it", "prompts", streamable=False, learning_rates=_ONLINE_RATES, task_metrics=True,
               own_keys=_DISTILL_KEYS, metrics=("completions/",)),
)}

STAGE_NAMES = tuple(STAGE_FACTS)
# Keys some stage reads and others do not (for the "ignored for this stage" note).
STAGE_KEYS = frozenset().union(*(facts.own_keys for facts in STAGE_FACTS.values()))


# eval_loss; eval_<dataset>_loss for each eval dataset with eval_on_each_dataset (the Trainer's names)
EVAL_LOSS = re.compile(r"eval_(?:(.+)_)?loss")
# what the Trainer's evaluation logs beside it: the loss, and compute_accuracy's token accuracy
EVAL_METRIC = re.compile(r"eval_(?:.+_)?(?:loss|accuracy)")


def eval_losses(record: dict) -> dict[str, float]:
    """The eval losses of a log record by label: `eval_loss` -> "eval loss"; with eval_on_each_dataset, the
    Trainer's `eval_<dataset>_loss` -> "eval loss (<dataset>)"."""
    out = {}
    for key, value in record.items():
        match = EVAL_LOSS.fullmatch(key)
        if match and isinstance(value, int | float) and not isinstance(value, bool):
            out["eval loss" + (f" ({match.group(1)})" if match.group(1) else "")] = value
    return out
