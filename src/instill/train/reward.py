"""`stage: rm`: a reward model on `trl.RewardTrainer` (pairwise loss -log sigmoid(r_chosen - r_rejected)).

The model is the base with a one-output value head (`AutoModelForSequenceClassification`,
num_labels=1; run.py loads it for this stage); with LoRA the head is trained and saved whole
(peft's SEQ_CLS `modules_to_save`), with freeze it is unfrozen. The data are the preference pairs of
data/pairs.py; the reward model scores whole conversations, so each side is prompt + answer ids.
Logged: accuracy (share of pairs scored chosen above rejected), margin, mean_reward.
"""

from __future__ import annotations

from typing import Any

from instill.train.optimizers import with_chosen_optimizer
from instill.train.preference import trl_config
from instill.train.stage import Stage, StageInputs


def _whole_conversations(dataset: Any) -> Any:
    if dataset is None:
        return None
    return dataset.map(lambda row: {"chosen_ids": row["prompt_ids"] + row["chosen_ids"],
                                    "rejected_ids": row["prompt_ids"] + row["rejected_ids"]},
                       remove_columns=["prompt_ids"])


def build_trainer(inputs: StageInputs) -> Any:
    from trl import RewardConfig, RewardTrainer

    model = inputs.model
    if inputs.config.method.finetuning_type == "freeze":
        for param in model.score.parameters():
            param.requires_grad_(True)
    args = trl_config(RewardConfig, inputs.training_args, max_length=None, gradient_checkpointing=False)
    trainer_cls = with_chosen_optimizer(RewardTrainer, inputs.config.method)
    return trainer_cls(model=model, args=args, train_dataset=_whole_conversations(inputs.train_dataset),
                       eval_dataset=_whole_conversations(inputs.eval_dataset), processing_class=inputs.tokenizer,
                       callbacks=inputs.callbacks)


STAGE = Stage.named("rm", build_trainer)
