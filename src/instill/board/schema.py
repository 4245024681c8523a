"""The form, generated from the config schema (config.SECTIONS): one field per key, typed, with its default
and its help (the attribute docstring `instill keys` prints). What the form sends back is turned into a flat
YAML mapping and validated by `build_config`, so the page refuses exactly what `instill train` refuses."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from instill.config import SECTIONS, RunConfig, build_config, check_training
from instill.errors import ConfigError
from instill.stage_facts import STAGE_NAMES

# Shown open in the form; every other key sits under its section's "more keys".
MAIN_KEYS = (
    "model_name_or_path", "adapter_name_or_path", "trust_remote_code", "template",
    "dataset_dir", "dataset", "eval_dataset", "cutoff_len", "max_samples", "val_size",
    "stage", "finetuning_type", "lora_rank", "lora_alpha", "lora_target",
    "output_dir", "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
    "gradient_accumulation_steps", "lr_scheduler_type", "logging_steps", "save_steps", "bf16", "plot_loss",
)


def _kind(annotation: Any) -> tuple[str, list | None]:
    """(form widget, choices): bool -> check, Literal -> select, int/float -> number, str -> text, else yaml."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is Literal:
        return "select", list(get_args(annotation))
    if annotation is bool:
        return "check", None
    if annotation in (int, float):
        return "number", None
    if annotation is str:
        return "text", None
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        return "list", None
    return "yaml", None


def form_schema() -> list[dict[str, Any]]:
    """Every key of every section: name, section, widget, choices, default (None when required), help, main."""
    fields = []
    for section, cls in SECTIONS.items():
        for key, field in cls.model_fields.items():
            kind, choices = _kind(field.annotation)
            if key == "stage":
                kind, choices = "select", list(STAGE_NAMES)
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            fields.append({"key": key, "section": section, "kind": kind, "choices": choices,
                           "default": default, "required": field.is_required(), "help": field.description or "",
                           "main": key in MAIN_KEYS})
    order = {key: i for i, key in enumerate(MAIN_KEYS)}
    return sorted(fields, key=lambda f: (not f["main"], order.get(f["key"], 0)))


_KINDS = {f["key"]: f["kind"] for f in form_schema()}


def form_values(raw: dict[str, Any]) -> dict[str, Any]:
    """The form's values as YAML values, in form order: text stays text; numbers and yaml fields are read
    as a `key=value` override is (yaml.safe_load); empty fields are left out (the key's default applies)."""
    if not isinstance(raw, dict):
        raise ConfigError("form: the values must be a mapping of key: value")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None or value == "":
            continue
        kind = _KINDS.get(key, "yaml")
        if isinstance(value, str) and kind not in ("text", "list"):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise ConfigError(f"form: '{key}': not a valid value ({getattr(err, 'problem', None) or err})") from None
        values[key] = value
    return values


def to_yaml(values: dict[str, Any]) -> str:
    """The YAML `instill train` reads: the keys the form set, nothing resolved or added."""
    return yaml.safe_dump(values, allow_unicode=True, sort_keys=False)


def validate(values: dict[str, Any], training: bool = True) -> RunConfig:
    """build_config's verdict on the form (ConfigError with the CLI's own message), plus the training rules."""
    config = build_config(values, source="form")
    if training:
        check_training(config, "form")
    return config
