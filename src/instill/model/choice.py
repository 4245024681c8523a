"""Which model a command uses: base, base + adapters, or what training wrote to output_dir.

Shared by `instill eval`, `predict`, `chat` and `serve`, so they all pick the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from instill.config import ModelArgs, RunConfig
from instill.errors import ConfigError


@dataclass
class ModelChoice:
    name: str  # "base" or "tuned"
    model_args: ModelArgs
    adapters: list[str]

    def describe(self) -> str:
        return self.model_args.model_name_or_path + "".join(f" + {a}" for a in self.adapters)


def choose_model(config: RunConfig, which: str = "auto") -> ModelChoice:
    """`base`, `tuned` (an error if there is none) or `auto` (tuned if there is one, else base)."""
    base = ModelChoice("base", config.model.model_copy(update={"adapter_name_or_path": None}), [])
    if which == "base":
        return base
    out = Path(config.train.output_dir)
    if config.model.adapter_name_or_path:
        return ModelChoice("tuned", base.model_args, list(config.model.adapter_name_or_path))
    if (out / "adapter_config.json").is_file():  # adapter_folder is a folder of adapter_name_or_path's, not of this
        return ModelChoice("tuned", base.model_args.model_copy(update={"adapter_folder": None}), [str(out)])
    if (out / "config.json").is_file():
        return ModelChoice("tuned", base.model_args.model_copy(update={"model_name_or_path": str(out)}), [])
    if which == "tuned":
        raise ConfigError(f"no tuned model: adapter_name_or_path is not set and output_dir {out} holds neither an "
                          "adapter nor a model (train first, or set adapter_name_or_path)")
    return base
