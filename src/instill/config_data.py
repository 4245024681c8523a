"""The data section: datasets, template, cutoff, packing, mixing and streaming (`DataArgs`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from instill.config_section import _comma_list, _Section


class DataArgs(_Section):
    dataset: list[str] | None = None
    """Training datasets (comma-separated names from dataset_info.json in dataset_dir)."""
    dataset_dir: str = "data"
    """The folder holding dataset_info.json and the data files."""
    packing: bool = False
    """Pack each batch's rows into rows of cutoff_len tokens; packed sequences never see each other."""
    neat_packing: bool = False
    """The same as packing here (instill's packing never lets sequences see each other)."""
    eval_dataset: list[str] | None = None
    """Evaluation datasets (comma-separated names from dataset_info.json)."""
    template: str = "auto"
    """The chat template: auto (the tokenizer's own) or a template name."""
    cutoff_len: int = Field(default=2048, ge=8)
    """Longest sample in tokens; longer ones are cut, keeping the answer (the prompt is cut first)."""
    max_samples: int | None = Field(default=None, ge=1)
    """Use at most this many rows of each dataset (after shuffling)."""
    val_size: float = Field(default=0.0, ge=0)
    """Rows held out for evaluation: a fraction in (0, 1) or a whole number of rows."""
    overwrite_cache: bool = False
    """Tokenize again even when the cache holds this data."""
    tokenized_path: str | None = None
    """Where the tokenized data is saved and loaded (default: the instill cache)."""
    streaming: bool = False
    """Read and tokenize rows lazily as training consumes them (data larger than memory; needs max_steps)."""
    eval_on_each_dataset: bool = False
    """Evaluate each eval_dataset apart: its loss is logged as eval_<dataset>_loss (stage sft and pt)."""
    media_dir: str | None = None
    """The folder images in the data are found in, when their paths are relative (default: dataset_dir)."""
    disable_shuffling: bool = False
    """Train on the rows in the datasets' order: no shuffle of the data (unless val_size draws a held-out part)
    and a sequential train sampler (group_by_length off)."""
    buffer_size: int = Field(default=16384, ge=1)
    """streaming: the rows a seeded shuffle buffer holds (a larger buffer mixes the stream better)."""
    mix_strategy: Literal["concat", "interleave_under", "interleave_over", "interleave_once"] = "concat"
    """How several datasets mix: concat (one after another, then shuffled), or interleaved by datasets'
    interleave_datasets: interleave_under stops when the first dataset runs out (the rows left out are counted),
    interleave_over when the last does (others repeat), interleave_once when every row was drawn once."""
    interleave_probs: list[float] | None = None
    """With an interleave mix_strategy: the probability of drawing from each dataset (comma-separated, one per
    dataset, summing to 1; default: take turns)."""
    preprocessing_num_workers: int | None = Field(default=None, ge=1)
    """Processes that tokenize the data (default: one, or more for large sets)."""
    train_on_prompt: bool = False
    """Train on the prompt tokens too, not only on what the assistant says."""
    mask_history: bool = False
    """Train only on the last assistant turn of each conversation."""
    dataset_placeholders: dict[str, str] = Field(default_factory=dict)
    """Values for {{name}} placeholders in datasets (LLaMA-Factory's identity.json uses name and author)."""
    allow_special_tokens_in_data: bool = False
    """Text in a message that spells a special token becomes that control token (off: it stays text)."""
    default_system: str | None = None
    """The system prompt of conversations that have none (or an empty one); replaces the template's own default.
    Baked into the chat template, so evaluation, chat, serve and the saved model use it too."""
    enable_thinking: bool = True
    """Reasoning templates (qwen3, deepseekr1, glm4_moe, ... and the tokenizer's own jinja through its
    enable_thinking variable): false drops thoughts from answers and puts an empty thought in the prompt."""
    tool_format: Literal["default", "gemma4", "glm4", "glm4_moe", "lfm2", "ling", "llama3", "minimax1", "minimax2",
                         "mistral", "qwen", "qwen3_5", "seed_oss"] | None = None
    """How tools and tool calls are written (LLaMA-Factory's tool formats); default: the template's own. Needs a
    LLaMA-Factory template name, which is then rendered from LLaMA-Factory's slots (not the model's own jinja)."""

    _split = field_validator("dataset", "eval_dataset", mode="before")(_comma_list)

    @field_validator("interleave_probs", mode="before")
    @classmethod
    def _probs(cls, v: Any) -> Any:
        """'0.7, 0.3' or one number -> a list (each item then checked as a number)."""
        if isinstance(v, int | float) and not isinstance(v, bool):
            return [v]
        return _comma_list(v)

    @model_validator(mode="after")
    def _mixing(self) -> DataArgs:
        probs = self.interleave_probs
        if probs is None:
            return self
        if self.mix_strategy == "concat":
            raise ValueError("interleave_probs needs an interleave mix_strategy (interleave_under, interleave_over "
                             "or interleave_once)")
        for key in ("dataset", "eval_dataset"):
            names = getattr(self, key)
            if names is not None and len(names) != len(probs):
                raise ValueError(f"interleave_probs has {len(probs)} probabilities for the {len(names)} datasets of "
                                 f"{key}; give one per dataset")
        if any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-6:
            raise ValueError(f"interleave_probs must be non-negative and sum to 1 (they sum to {sum(probs):g})")
        return self

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("must be a fraction in [0, 1) or a whole number of samples")
        return v

