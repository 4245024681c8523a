"""`stage: distill`: on-policy distillation from a teacher, on trl's `DistillationTrainer`.

The student (any method: LoRA, full, ...) answers the prompts of data/prompts.py; the loss is the
generalised Jensen-Shannon divergence between the teacher's and the student's next-token
distributions on those answers (`beta`: 0 forward KL, 0.5 JSD, 1 reverse KL, trl's default),
softened by `temperature`. The teacher (`teacher_model_name_or_path`: a local directory, a hub id
or a .gguf file, resolved like the student) is loaded frozen in the student's dtype.

Both distributions are over one vocabulary, so teacher and student must share a tokenizer: a
teacher whose vocabulary differs is refused in one line before it loads.
"""

from __future__ import annotations

from typing import Any

from instill.console import say
from instill.errors import ConfigError
from instill.train.grpo import fit_prompts, sampling_extras, stop_at_end_of_turn
from instill.train.patches import OwnTokenCount
from instill.train.preference import trl_config
from instill.train.stage import Stage, StageInputs


def _teacher(inputs: StageInputs) -> Any:
    """The frozen teacher, after its tokenizer is checked against the student's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instill.hub import resolve_model

    name = inputs.config.method.teacher_model_name_or_path
    path = resolve_model(name, inputs.config.model.cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise ConfigError(f"teacher_model_name_or_path: {name}: no tokenizer could be loaded "
                          f"({' '.join(str(err).split())[:160]})") from None
    student = inputs.tokenizer.get_vocab()
    theirs = tokenizer.get_vocab()
    if theirs != student:
        differ = len(set(theirs.items()) ^ set(student.items()))
        raise ConfigError(f"teacher_model_name_or_path: {name} has another tokenizer than the student "
                          f"({len(theirs):,} vs {len(student):,} tokens, {differ:,} entries differ); distillation "
                          "compares next-token distributions over one vocabulary, so pick a teacher of the same family")
    teacher = AutoModelForCausalLM.from_pretrained(str(path), dtype=inputs.model.dtype)
    teacher.requires_grad_(False).eval()
    size = sum(p.numel() for p in teacher.parameters())
    say(f"teacher: {name} ({size / 1e6:,.0f}M parameters, frozen)")
    return teacher


def build_trainer(inputs: StageInputs) -> Any:
    from trl import DistillationConfig, DistillationTrainer

    m, e = inputs.config.method, inputs.config.eval
    if not m.teacher_model_name_or_path:
        raise ConfigError("stage: distill needs teacher_model_name_or_path (the model to learn from)")
    teacher = _teacher(inputs)
    extra = {} if m.beta is None else {"beta": m.beta}
    args = trl_config(DistillationConfig, inputs.training_args, max_completion_length=m.max_completion_length,
                      temperature=e.temperature, top_p=e.top_p, **sampling_extras(e), use_vllm=m.use_vllm,
                      gradient_checkpointing=False,
                      log_completions=False, **extra)
    stop_at_end_of_turn(inputs.model, inputs.template, inputs.tokenizer)
    trainer_cls = type("InstillDistillationTrainer", (OwnTokenCount, DistillationTrainer), {})
    try:
        return trainer_cls(model=inputs.model, teacher_model=teacher, args=args,
                           train_dataset=fit_prompts(inputs.train_dataset, m.max_prompt_length, "train"),
                           eval_dataset=fit_prompts(inputs.eval_dataset, m.max_prompt_length, "eval"),
                           processing_class=inputs.tokenizer, callbacks=inputs.callbacks)
    except ValueError as err:
        raise ConfigError(f"stage: distill: {' '.join(str(err).split())}") from None


STAGE = Stage.named("distill", build_trainer)
