"""Every LLaMA-Factory 0.9.5 key has a policy: implemented, ignored with a reason, or refused with one."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import pytest

from instill.config import ALIASES, KNOWN_KEYS, TRAINER_PASSTHROUGH, build_config
from instill.errors import ConfigError
from instill.key_policy import POLICY, markdown

ROOT = Path(__file__).resolve().parents[1]
LF_KEYS = json.loads((ROOT / "tests" / "fixtures" / "llamafactory_0.9.5_keys.json").read_text())
BASE = {"model_name_or_path": "m", "dataset": "d"}


def _trainer_fields() -> dict[str, object]:
    from transformers import Seq2SeqTrainingArguments

    return {f.name: f.default for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}


@functools.cache
def _every_key() -> dict[str, object]:
    """LLaMA-Factory's own keys with their defaults, then the installed transformers' trainer fields."""
    keys = {key: fact["default"] for key, fact in LF_KEYS.items()}
    for key, default in _trainer_fields().items():
        keys.setdefault(key, default if isinstance(default, str | int | float | bool | type(None)) else None)
    return keys


def test_the_fixture_holds_llamafactorys_keys():
    assert len(LF_KEYS) == 241
    assert {"use_galore", "default_system", "infer_backend", "export_device", "pref_beta"} <= set(LF_KEYS)


@pytest.mark.parametrize("key", sorted(_every_key()))
def test_no_llamafactory_key_is_unknown(key):
    """At LLaMA-Factory's default value every key loads or is refused with a reason, never 'unknown key'."""
    value = _every_key()[key]
    try:
        build_config({**BASE, key: value})
    except ConfigError as err:
        assert "unknown key" not in str(err), str(err)
        assert f"'{key}" in str(err), str(err)  # names the key


def test_every_key_has_exactly_one_policy():
    assert not set(POLICY) & set(KNOWN_KEYS), "a key is both implemented and in the policy table"
    assert not set(ALIASES) & (set(KNOWN_KEYS) | set(POLICY))
    covered = set(KNOWN_KEYS) | set(POLICY) | set(ALIASES) | {"use_swanlab", "disable_gradient_checkpointing"}
    assert set(_every_key()) <= covered


def test_passthrough_names_are_trainer_fields():
    """The fields instill hands to TrainingArguments exist there under these names (an upgrade fails here)."""
    fields = _trainer_fields()
    assert [key for key in TRAINER_PASSTHROUGH if key not in fields] == []
    assert [key for key in ALIASES if key not in fields and key not in LF_KEYS] == []


@pytest.mark.parametrize("key, value, reason", [
    ("apollo_scale_front", True, "apollo-torch reads scale_front only as a constructor argument"),
    ("use_mca", True, "Megatron-Core training"),
    ("fp8", True, "fp8 training needs a CUDA GPU"),
    ("infer_backend", "sglang", "the SGLang backend is not supported"),
    ("stage", "ppo", "PPO was removed from trl"),
    ("export_legacy_format", True, "unsafe to load (pickle)"),
])
def test_refused_keys_say_why(key, value, reason):
    with pytest.raises(ConfigError) as err:
        build_config({**BASE, key: value})
    assert f"'{key}: {value}'" in str(err.value) and reason in str(err.value)


def test_tool_format_is_a_data_key():
    for name in ("llama3", "gemma4", "seed_oss"):  # every LLaMA-Factory format is written
        assert build_config({**BASE, "tool_format": name}).data.tool_format == name
    with pytest.raises(ConfigError, match="tool_format"):
        build_config({**BASE, "tool_format": "hermes"})


def test_refused_key_at_its_default_is_accepted_quietly():
    config = build_config({**BASE, "apollo_scale_front": False, "mix_strategy": "concat"})
    assert not any("apollo" in note or "mix" in note for note in config.notes)


def test_ignored_keys_are_named_in_the_notes():
    config = build_config({**BASE, "low_cpu_mem_usage": True, "disable_tqdm": False})
    line = next(note for note in config.notes if note.startswith("ignored:"))
    assert "'low_cpu_mem_usage' (transformers 5 always loads weights lazily)" in line and "'disable_tqdm'" in line


def test_keys_of_another_stage_are_named_as_ignored():
    config = build_config({**BASE, "stage": "sft", "pref_beta": 0.2})
    assert any("'pref_beta' (read by stage dpo, kto, not sft)" in note for note in config.notes)
    assert not any("pref_beta" in note for note in build_config({**BASE, "stage": "dpo", "pref_beta": 0.2}).notes)
    # at its default it asks for nothing: LLaMA-Factory's YAMLs spell defaults out
    assert not any("pref_beta" in note for note in build_config({**BASE, "stage": "sft", "pref_beta": 0.1}).notes)


def test_a_typo_gets_a_close_hint():
    with pytest.raises(ConfigError, match=r"unknown key 'adam_beta3' — did you mean 'adam_beta2'"):
        build_config({**BASE, "adam_beta3": 0.9})
    with pytest.raises(ConfigError, match=r"did you mean 'use_dft_loss'"):
        build_config({**BASE, "use_dft_los": True})


def test_aliases_and_llamafactory_switches():
    config = build_config({**BASE, "activation_checkpointing": True, "use_liger_kernel": False})
    assert config.train.gradient_checkpointing is True
    assert build_config({**BASE, "gradient_checkpointing": True,
                         "disable_gradient_checkpointing": True}).train.gradient_checkpointing is False
    with pytest.raises(ConfigError, match="are the same key"):
        build_config({**BASE, "activation_checkpointing": True, "gradient_checkpointing": False})


def test_passthrough_reaches_training_arguments(tmp_path):
    from instill.train.run import training_arguments

    config = build_config({**BASE, "output_dir": str(tmp_path), "adam_beta2": 0.95, "label_smoothing_factor": 0.1,
                           "lr_scheduler_kwargs": {"min_lr": 1e-6}, "lr_scheduler_type": "cosine_with_min_lr",
                           "neftune_noise_alpha": 5, "data_seed": 7})
    args = training_arguments(config.train, has_eval=False)
    assert (args.adam_beta2, args.label_smoothing_factor, args.neftune_noise_alpha, args.data_seed) == (0.95, 0.1, 5, 7)
    assert args.lr_scheduler_kwargs == {"min_lr": 1e-6}


def test_a_value_transformers_refuses_is_one_line(tmp_path):
    from instill.train.run import training_arguments

    config = build_config({**BASE, "output_dir": str(tmp_path), "optim_args": "no-equals-sign", "optim": "adamw_torch"})
    try:
        training_arguments(config.train, has_eval=False)
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).startswith("the training arguments:")


def test_readme_lists_the_policy_table():
    """README's "Coming from LLaMA-Factory" tables are `python -m instill.key_policy`'s output."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown() in readme, "regenerate the README tables with: python -m instill.key_policy"


def test_instill_keys_lists_help_and_policy(capsys):
    from instill.cli import main

    assert main(["keys", "beta2"]) == 0
    assert "adam_beta2  [train] default 0.999\n    AdamW's beta2." in capsys.readouterr().out
    assert main(["keys", "apollo_scale_front"]) == 0
    assert "apollo_scale_front  [LLaMA-Factory: refused]" in capsys.readouterr().out


@pytest.mark.parametrize("verb, says", [("webui", "instill board"), ("env", "instill doctor")])
def test_llamafactory_verbs_say_what_to_use(verb, says, capsys):
    from instill.cli import main

    with pytest.raises(SystemExit) as code:
        main([verb])
    assert code.value.code == 2 and says in capsys.readouterr().err


def test_api_and_webchat_are_the_server(capsys):
    from instill.cli import parse_args

    for verb in ("api", "webchat"):
        args = parse_args([verb, "x.yaml", "--port", "9001"])
        assert args.func.__name__ == "_serve" and args.port == 9001


def test_bco_and_ld_dpo_are_dpo_keys():
    config = build_config({**BASE, "stage": "dpo", "pref_bco_weight": 0.5, "ld_alpha": 0.3})
    assert (config.method.pref_bco_weight, config.method.ld_alpha) == (0.5, 0.3)
    with pytest.raises(ConfigError, match="'pref_bco_weight' mixes into DPO's own losses"):
        build_config({**BASE, "stage": "dpo", "pref_loss": "orpo", "pref_bco_weight": 0.5})


def test_every_field_has_help_text():
    """`instill keys` and the README read a field's docstring: none is missing."""
    from instill.config import SECTIONS

    assert [k for cls in SECTIONS.values() for k, f in cls.model_fields.items() if not f.description] == []
