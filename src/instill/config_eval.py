"""The eval section: `instill eval` / `instill predict`, decoding, and benchmarks (`EvalArgs`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from instill.config_section import _comma_list, _Section


class EvalArgs(_Section):
    """`instill eval` / `instill predict` (and task metrics during training)."""

    do_eval: bool = False
    """Score the eval task (accuracy, entity F1, ...) at each evaluation and after training."""
    do_predict: bool = False
    """After training (or alone), predict on the eval data and write generated_predictions.jsonl."""
    eval_task: Literal["classification", "ner", "generation", "preference"] = "generation"
    """What the eval measures: classification, ner, generation or preference."""
    eval_mode: Literal["generate", "score"] = "generate"
    """generate (decode and read the answer) or score (rank candidate labels by likelihood; classification)."""
    eval_calibration: Literal["none", "batch"] = "none"
    """Score mode: batch divides each label's probability by its mean over the rows (removes label bias)."""
    labels: list[str] | None = None
    """Classification labels, one list for every row (default: the set of reference labels)."""
    choices_column: str | None = None
    """A row column holding that row's candidate labels."""
    label_column: str | None = None
    """The row column holding the gold label (default: the final assistant answer)."""
    label_template: str | None = None
    """The answer text around the label, e.g. '\\boxed{{label}}' (default: inferred from the references)."""
    eval_batch_size: int | None = Field(default=None, ge=1)
    """Rows per evaluation batch (default: per_device_eval_batch_size when given, else 8)."""
    eval_max_samples: int | None = Field(default=None, ge=1)
    """Evaluate at most this many rows."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Longest generated answer (default: 64 for classification, 512 otherwise)."""
    do_sample: bool = False
    """Sample instead of greedy decoding."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature (with do_sample; the online stages always sample with it)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling threshold (with do_sample; the online stages always sample with it)."""
    top_k: int | None = Field(default=None, ge=0)
    """Sample only from the k most likely tokens (with do_sample; default: the model's generation_config; 0: off)."""
    repetition_penalty: float | None = Field(default=None, gt=0)
    """Divide the scores of tokens already in the prompt or answer by this (1.0: none; default: the model's
    generation_config)."""
    num_beams: int = Field(default=1, ge=1)
    """Beam search with this many beams in eval and predict (1: none); chat and serve stream tokens, so they refuse it."""
    eval_num_beams: int | None = Field(default=None, ge=1)
    """Beams for eval, predict and the task metrics during training (default: num_beams)."""
    length_penalty: float = 1.0
    """Beam search: the exponent of the length that divides a beam's score (> 0 favours longer answers)."""
    max_length: int | None = Field(default=None, ge=1)
    """The longest prompt + answer in tokens, used when max_new_tokens is not set (in a batch, counted from the longest
    prompt, as transformers does); eval, predict and chat."""
    skip_special_tokens: bool = True
    """Leave special tokens (a template's control tokens) out of the decoded answers."""
    benchmark_dir: str | None = None
    """Folder of lm-eval task YAMLs and their data files for --benchmarks (offline; default: lm-eval's own tasks)."""
    task: list[str] | None = None
    """Benchmarks to run (LLaMA-Factory's eval key): mmlu_test, cmmlu_test, ceval_validation or lm-eval names."""
    task_dir: str | None = None
    """LLaMA-Factory's name for benchmark_dir (its default 'evaluation' is ignored when there is no such folder)."""
    n_shot: int | None = Field(default=None, ge=0)
    """Few-shot examples per benchmark question (default: each benchmark's own)."""
    save_dir: str | None = None
    """Where benchmarks.json goes (default: output_dir/eval)."""
    batch_size: int | None = Field(default=None, ge=1)
    """Benchmark questions per batch (default: eval_batch_size, else 8)."""

    _split = field_validator("labels", "task", mode="before")(_comma_list)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not [label for label in v if str(label).strip()]:
            raise ValueError("the label set is empty")
        return v

    @field_validator("label_template")
    @classmethod
    def _label_template(cls, v: str | None) -> str | None:
        if v is not None and "{label}" not in v:
            raise ValueError("must contain '{label}' where the label goes, e.g. '\\boxed{{label}}'")
        return v

    @model_validator(mode="after")
    def _modes(self) -> EvalArgs:
        if self.eval_mode == "score" and self.eval_task != "classification":
            raise ValueError("eval_mode: score ranks candidate labels, so it needs eval_task: classification")
        if self.eval_calibration != "none" and self.eval_mode != "score":
            raise ValueError("eval_calibration applies to eval_mode: score (it re-ranks label likelihoods)")
        return self

