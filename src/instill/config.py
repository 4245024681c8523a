"""RunConfig: one YAML (LLaMA-Factory key names), validated once, before any model loads.

Users write a flat YAML, exactly as for LLaMA-Factory. We route each key to one typed
section (model / data / method / train / eval / export) and validate with pydantic, so a bad
config fails at the door naming the key. Later stages receive only their section.

Each section lives in a module of its own beside this one (config_model.py, config_data.py,
config_method.py, config_train.py, config_eval.py, config_export.py; their shared base in
config_section.py); this module routes keys to them, loads and saves configs, and hands every
section's names on, so `from instill.config import ...` is the one door.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from instill.config_data import DataArgs
from instill.config_eval import EvalArgs
from instill.config_export import ExportArgs
from instill.config_method import MethodArgs
from instill.config_model import ModelArgs
from instill.config_rules import CROSS_RULES
from instill.config_section import _comma_list, _Section
from instill.config_section import _is_number_type as _is_number_type  # handed on (tests check it)
from instill.config_train import TRAINER_PASSTHROUGH as TRAINER_PASSTHROUGH  # handed on (train/run.py)
from instill.config_train import TrainArgs
from instill.defaults import defaults_note, learning_defaults
from instill.errors import ConfigError
from instill.key_policy import POLICY, refusal
from instill.stage_facts import STAGE_FACTS, STAGE_KEYS
from instill.textfile import printable, read_text

SECTIONS: dict[str, type[_Section]] = {
    "model": ModelArgs,
    "data": DataArgs,
    "method": MethodArgs,
    "train": TrainArgs,
    "eval": EvalArgs,
    "export": ExportArgs,
}

# Other names for implemented keys (transformers 5's new names, LLaMA-Factory's): key -> instill's key.
ALIASES = {
    "generation_max_length": "max_length",  # Seq2SeqTrainingArguments' names for the eval generation settings
    "generation_num_beams": "eval_num_beams",
    "activation_checkpointing": "gradient_checkpointing",
    "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs",
    "use_liger_kernel": "enable_liger_kernel",
}

KNOWN_KEYS: dict[str, str] = {key: name for name, cls in SECTIONS.items() for key in cls.model_fields}


class RunConfig(BaseModel):
    """The validated configuration of one run, in typed sections."""

    model_config = ConfigDict(extra="forbid")

    model: ModelArgs
    data: DataArgs
    method: MethodArgs
    train: TrainArgs
    eval: EvalArgs
    export: ExportArgs
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        for rule in CROSS_RULES:
            problem = rule(self)
            if problem:
                raise ValueError(problem)
        return self

    def flat(self) -> dict[str, Any]:
        """The resolved config as one flat dict, LLaMA-Factory style (what run_config.yaml holds)."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out.update(getattr(self, name).model_dump())
        return out



def check_training(config: RunConfig, source: str = "config") -> None:
    """Rules only a training run has (instill eval reads the same config without them)."""
    if config.train.do_train and not config.data.dataset:
        raise ConfigError(f"{source}: training needs 'dataset' (names from dataset_info.json in dataset_dir)")


def _default_of(key: str) -> Any:
    """The default of an implemented key (None when it has none)."""
    field = SECTIONS[KNOWN_KEYS[key]].model_fields[key]
    return None if field.is_required() else field.get_default(call_default_factory=True)


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, [*KNOWN_KEYS, *ALIASES, *POLICY], n=1, cutoff=0.75)
    return f" — did you mean '{close[0]}'?" if close else ""


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{printable(item)}' is not of the form key=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML lets the second win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: construct_mapping below reports it
                continue
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (lines {first} and {line}); keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def yaml_position(text: str, err: yaml.reader.ReaderError) -> str:
    """LINE:COLUMN (1-based) of the character a YAML ReaderError refuses."""
    line = text.count("\n", 0, err.position) + 1
    return f"{line}:{err.position - text.rfind(chr(10), 0, err.position)}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = read_text(path, error=ConfigError)
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 — a SafeLoader
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    except yaml.reader.ReaderError as err:  # a control character: no problem_mark, and a two-line str()
        raise ConfigError(f"{path}:{yaml_position(text, err)}: invalid YAML (character #x{err.character:04x} is "
                          "not allowed in YAML)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value")
    return raw


def build_config(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "config") -> RunConfig:
    """Validate a flat LLaMA-Factory-style mapping (plus key=value overrides) into a RunConfig."""
    flat = dict(raw)
    for item in overrides:
        key, value = _parse_override(item)
        flat[key] = value

    notes: list[str] = []
    # LLaMA-Factory's `use_swanlab: true` is our `report_to: swanlab`.
    if flat.pop("use_swanlab", False):
        trackers = _comma_list(flat.get("report_to")) or []
        flat["report_to"] = [r for r in trackers if r != "none"] + (["swanlab"] if "swanlab" not in trackers else [])
    # LLaMA-Factory checkpoints activations unless told not to; instill only when asked (gradient_checkpointing).
    if flat.pop("disable_gradient_checkpointing", False):
        flat["gradient_checkpointing"] = False
    if flat.get("do_predict") and "do_train" not in flat:  # LLaMA-Factory's predict YAMLs omit do_train
        flat["do_train"] = False
    for alias, key in ALIASES.items():
        if alias in flat and flat[alias] is None:  # transformers' default for its new names: unset
            del flat[alias]
        if alias in flat:
            if key in flat:
                raise ConfigError(f"{source}: '{alias}' and '{key}' are the same key; keep one")
            flat[key] = flat.pop(alias)
    chosen = learning_defaults(flat)
    if chosen:
        notes.append(defaults_note(chosen, flat))
        flat = {**flat, **chosen}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    ignored: list[str] = []
    for key, value in flat.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r} is not a string")
        why = refusal(key, value)
        if why:
            shown = f"{key}: {printable(str(value))}" if isinstance(value, str | int | float | bool) else key
            raise ConfigError(f"{source}: '{shown}': {why}")
        if key in POLICY:  # ignored, or a refused key at LLaMA-Factory's default (asks for nothing)
            if POLICY[key].action == "ignored":
                ignored.append(f"'{key}' ({POLICY[key].reason})")
            continue
        if key not in KNOWN_KEYS:
            raise ConfigError(f"{source}: unknown key '{printable(key)}'{_suggest(key)}")
        sections[KNOWN_KEYS[key]][key] = value
    stage = str(flat.get("stage", "sft"))
    if stage in STAGE_FACTS:
        # a key of another stage at its default asks for nothing (LLaMA-Factory's YAMLs spell defaults out)
        other = sorted(k for k in flat if k in STAGE_KEYS and k not in STAGE_FACTS[stage].own_keys
                       and flat[k] != _default_of(k))
        ignored += [f"'{k}' (read by stage {', '.join(n for n, f in STAGE_FACTS.items() if k in f.own_keys)}, "
                    f"not {stage})" for k in other]
    if ignored:
        notes.append("ignored: " + "; ".join(ignored))

    for key, value in flat.items():
        if _has_surrogate(value):  # YAML's "\ud800" escape: not text, and pydantic would raise UnicodeEncodeError
            raise ConfigError(f"{source}: '{key}' holds a lone surrogate (an escape such as \\ud800 that is no "
                              "character); write the character itself")
    if "model_name_or_path" not in sections["model"]:
        raise ConfigError(f"{source}: 'model_name_or_path' is required")

    try:
        built = {name: SECTIONS[name](**values) for name, values in sections.items()}
        return RunConfig(**built, notes=notes)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err, flat)}") from None


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return isinstance(value, list) and any(map(_has_surrogate, value))


def _describe(err: ValidationError, flat: dict[str, Any]) -> str:
    first = err.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if not isinstance(part, int)]
    key = next((part for part in reversed(loc) if part in KNOWN_KEYS), None)
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if key is None:
        return msg
    value = flat.get(key)
    hint = ""
    if isinstance(value, bool) and re.search(r"'(no|yes|off|on)'", msg):  # YAML 1.1 reads no/yes/off/on as booleans
        hint = f"; YAML reads an unquoted {'yes/on' if value else 'no/off'} as {str(value).lower()}: quote it"
    return f"invalid value for '{key}': {value!r} ({msg}){hint}"


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML file, apply key=value overrides, validate. Raises ConfigError naming the key.

    A reward plugin (`reward_funcs: my_rewards.py:fn`) is read from the YAML's folder: its path is made
    absolute here, so run_config.yaml names the file that ran."""
    config = build_config(load_yaml(path), overrides, source=str(path))
    funcs = config.method.reward_funcs
    if any(".py:" in f for f in funcs):
        here = Path(path).resolve().parent
        funcs = [str(here / f) if ".py:" in f and not Path(f.rpartition(":")[0]).is_absolute() else f
                 for f in funcs]
        config.method.reward_funcs = funcs
    return config


# Key names that hold a secret: ...token (hf_hub_token), ...api_key, ...password, ...secret.
# Not use_fast_tokenizer or ignore_pad_token_for_loss: the secret word must end the key.
SECRET_KEY = re.compile(r"(?:^|_)(?:token|api_key|key|password|secret)$", re.IGNORECASE)


def is_secret(key: Any, value: Any) -> bool:
    """True for a secret key holding a value worth hiding (None and booleans say nothing)."""
    return bool(SECRET_KEY.search(str(key))) and value not in (None, "", False, True)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as flat YAML (run_config.yaml); secret values are never written."""
    flat = config.flat()
    secrets = [k for k, v in flat.items() if is_secret(k, v)]
    text = yaml.safe_dump({k: None if k in secrets else v for k, v in flat.items()}, allow_unicode=True,
                          sort_keys=False)
    if secrets:
        text = "".join(f"{line}  # not saved (a secret)\n" if line.split(":")[0] in secrets else line + "\n"
                       for line in text.splitlines())
    Path(path).write_text(text, encoding="utf-8")
