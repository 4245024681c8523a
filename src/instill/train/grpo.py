"""`stage: grpo` and `stage: rloo`: online RL on trl's `GRPOTrainer` / `RLOOTrainer`.

The model answers each prompt `num_generations` times (transformers' `generate`, or vLLM with
`use_vllm` on CUDA), the reward functions (`train/rewards.py`, and a `reward_model`) score every
answer, and each answer is pushed up or down by its advantage over its group: the group's mean
reward (GRPO) or the mean of the others (RLOO). The losses are trl's.

Prompts are the rows of data/prompts.py, rendered with the run's chat template; every other column
reaches the reward functions by name. Generation stops at the template's end of turn as well as at
the tokenizer's eos. Reference for the KL term (`beta` > 0): with LoRA the base with the adapter
disabled (one copy of the weights); with full/freeze trl loads a frozen copy of the base.

Logged (trainer_log.jsonl, trackers, report): reward and reward_std, rewards/<function>/mean and
/std, kl, completions/mean_length (and min/max, clipped ratio), clip_ratio/*, entropy; and every
`logging_steps` a sample of the answers with their rewards in output_dir/completions.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from instill.config import EvalArgs
from instill.console import say
from instill.errors import ConfigError
from instill.train.patches import OwnTokenCount
from instill.train.preference import trl_config
from instill.train.rewards import RewardFunc, reward_functions, text_of
from instill.train.stage import Stage, StageInputs

SAMPLES_LOGGED = 8  # answers per logging step kept in completions.jsonl


class CompletionTable(TrainerCallback):
    """Keeps the answers of the latest round with each reward function's score, and appends a sample of
    them to completions.jsonl at every log step (the report shows how answers changed)."""

    def __init__(self, path: Path, keep: int = SAMPLES_LOGGED) -> None:
        self.path, self.keep = path, keep
        self.rows: list[dict] = []
        self._batch: int | None = None

    def wrap(self, fn: RewardFunc) -> RewardFunc:
        name = getattr(fn, "__name__", "reward")

        def recorded(*args: Any, **kwargs: Any) -> list[float | None]:
            out = fn(*args, **kwargs)
            completions, prompts = kwargs.get("completions", []), kwargs.get("prompts", [])
            if id(completions) != self._batch:  # a new round: start a new table
                self._batch = id(completions)
                self.rows = [{"prompt": text_of(p)[-300:], "completion": text_of(c)}
                             for p, c in zip(prompts[:self.keep], completions[:self.keep])]
            for row, value in zip(self.rows, out):
                row[name] = value
            return out

        recorded.__name__ = name
        return recorded

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not self.rows or not logs or "loss" not in logs:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            for row in self.rows:
                fh.write(json.dumps({"step": state.global_step, **row}, ensure_ascii=False) + "\n")
        self.rows = []


def fit_prompts(rows: Any, limit: int | None, name: str) -> Any:
    """Rows whose prompt fits `max_prompt_length` (trl 1.x does not cut prompts); the rest are counted."""
    if rows is None or limit is None:
        return rows
    kept = rows.filter(lambda n: n <= limit, input_columns="prompt_tokens")
    if len(kept) < len(rows):
        say(f"{name}: {len(rows) - len(kept):,} of {len(rows):,} prompts are longer than max_prompt_length "
            f"({limit} tokens) and are left out")
    if not len(kept):
        raise ConfigError(f"max_prompt_length: every {name} prompt is longer than {limit} tokens; raise it")
    return kept


def stop_at_end_of_turn(model: Any, template: Any, tokenizer: Any) -> None:
    """Generation stops at the template's end-of-turn token too (trl stops at the generation config's eos)."""
    if not template.end_of_turn:
        return
    ids = tokenizer(template.end_of_turn.strip(), add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        return
    config = model.generation_config
    eos = config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if ids[0] not in eos:
        config.eos_token_id = [*eos, ids[0]]


def _check_vllm(use_vllm: bool) -> None:
    if not use_vllm:
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError("use_vllm: vLLM samples on CUDA GPUs; none is visible here (set use_vllm: false)")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("use_vllm: vLLM is not installed (pip install vllm), or set use_vllm: false")


def _reward_model(inputs: StageInputs) -> Any:
    """The reward model a `stage: rm` run saved (full weights, or a LoRA adapter on its base), frozen."""
    path = Path(inputs.config.method.reward_model)
    if not path.is_dir():
        raise ConfigError(f"reward_model: {path} is not a directory (give the output_dir of a stage: rm run)")
    from transformers import AutoModelForSequenceClassification

    try:
        if (path / "adapter_config.json").is_file():
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(str(path), num_labels=1).merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1)
    except (OSError, ValueError) as err:
        raise ConfigError(f"reward_model: {path} could not be loaded: {' '.join(str(err).split())[:200]}") from None
    model.requires_grad_(False).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = inputs.tokenizer.pad_token_id
    say(f"reward model: {path} ({sum(p.numel() for p in model.parameters()) / 1e6:,.0f}M parameters, frozen)")
    return model


def sampling_extras(e: EvalArgs) -> dict[str, Any]:
    """top_k and repetition_penalty for trl's sampling, where the config sets them (LLaMA-Factory's generating
    arguments drive its online sampling too); unset, trl's defaults stay."""
    return {k: v for k, v in (("top_k", e.top_k), ("repetition_penalty", e.repetition_penalty)) if v is not None}


def _online_args(inputs: StageInputs, config_cls: type, **extra: Any) -> Any:
    m, e = inputs.config.method, inputs.config.eval
    values = dict(num_generations=m.num_generations, max_completion_length=m.max_completion_length,
                  temperature=e.temperature, top_p=e.top_p, **sampling_extras(e), epsilon=m.epsilon,
                  mask_truncated_completions=m.mask_truncated_completions,
                  steps_per_generation=m.steps_per_generation, use_vllm=m.use_vllm,
                  reward_weights=m.reward_weights, gradient_checkpointing=False, log_completions=False)
    if m.beta is not None:
        values["beta"] = m.beta
    values.update(extra)
    try:
        return trl_config(config_cls, inputs.training_args, **values)
    except ValueError as err:  # e.g. a batch that num_generations does not divide
        raise ConfigError(f"stage: {inputs.config.method.stage}: {' '.join(str(err).split())}") from None


def _build(inputs: StageInputs, trainer_cls: type, config_cls: type, **extra: Any) -> Any:
    m = inputs.config.method
    _check_vllm(m.use_vllm)
    train = fit_prompts(inputs.train_dataset, m.max_prompt_length, "train")
    evaluation = fit_prompts(inputs.eval_dataset, m.max_prompt_length, "eval")
    table = CompletionTable(Path(inputs.config.train.output_dir) / "completions.jsonl")
    funcs: list[Any] = [table.wrap(f) for f in reward_functions(inputs.config, train)]
    if m.reward_model:
        funcs.append(_reward_model(inputs))
    args = _online_args(inputs, config_cls, **extra)
    stop_at_end_of_turn(inputs.model, inputs.template, inputs.tokenizer)
    if args.beta and inputs.config.method.finetuning_type in ("lora", "adalora"):
        say("reference model: the base with the adapter disabled (no second copy of the weights)")
    elif args.beta:
        say("reference model: a frozen copy of the base loaded by trl")
    trainer_cls = type(f"Instill{trainer_cls.__name__}", (OwnTokenCount, trainer_cls), {})
    try:
        trainer = trainer_cls(model=inputs.model, reward_funcs=funcs, args=args, train_dataset=train,
                              eval_dataset=evaluation, processing_class=inputs.tokenizer,
                              callbacks=[*inputs.callbacks, table])
    except ValueError as err:  # trl's checks of batch sizes against num_generations
        raise ConfigError(f"stage: {m.stage}: {' '.join(str(err).split())}") from None
    if getattr(trainer, "ref_model", None) is not None:
        trainer.ref_model.requires_grad_(False)
    return trainer


def build_grpo(inputs: StageInputs) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    m = inputs.config.method
    return _build(inputs, GRPOTrainer, GRPOConfig, loss_type=m.loss_type, scale_rewards=m.scale_rewards)


def build_rloo(inputs: StageInputs) -> Any:
    from trl import RLOOConfig, RLOOTrainer

    return _build(inputs, RLOOTrainer, RLOOConfig)


GRPO = Stage.named("grpo", build_grpo)
RLOO = Stage.named("rloo", build_rloo)
