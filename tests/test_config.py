"""Config: LLaMA-Factory keys, typed sections, errors that name the key."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from instill.config import KNOWN_KEYS, build_config, load_config
from instill.errors import ConfigError
from tests.conftest import SHARED

BASE = {"model_name_or_path": "some/model", "dataset": "a"}

# Every key the spine issue names must be a known key.
SPINE_KEYS = """model_name_or_path template trust_remote_code stage do_train finetuning_type lora_target lora_rank
lora_alpha lora_dropout dataset dataset_dir eval_dataset cutoff_len max_samples val_size overwrite_cache
preprocessing_num_workers output_dir overwrite_output_dir logging_steps save_steps save_total_limit plot_loss
per_device_train_batch_size per_device_eval_batch_size gradient_accumulation_steps learning_rate num_train_epochs
max_steps lr_scheduler_type warmup_ratio warmup_steps weight_decay bf16 fp16 gradient_checkpointing seed
eval_strategy eval_steps resume_from_checkpoint report_to ddp_timeout""".split()


def seed_yaml() -> dict:
    """The qwen2.5_14B_lora_sft.yaml of seed 002, parsed from the seed text itself."""
    text = (SHARED / "seeds/002_b466d1455033d0a7.txt").read_text(encoding="utf-8")
    start = text.index("### model\nmodel_name_or_path")
    end = text.index("eval_steps: 500", start) + len("eval_steps: 500")
    return yaml.safe_load(text[start:end])


def test_all_spine_keys_known():
    assert [k for k in SPINE_KEYS if k not in KNOWN_KEYS] == []


def test_sections_and_lists():
    cfg = build_config({**BASE, "dataset": "a, b", "lora_target": "q_proj,v_proj", "report_to": "tensorboard"})
    assert cfg.data.dataset == ["a", "b"]
    assert cfg.method.lora_target == ["q_proj", "v_proj"]
    assert cfg.train.report_to == ["tensorboard"]
    assert cfg.data.template == "auto"


def test_seed_yaml_loads_unchanged():
    raw = seed_yaml()
    assert raw["model_name_or_path"] == "Qwen/Qwen2.5-14B-Instruct" and raw["learning_rate"] == 1.0e-4
    cfg = build_config(raw)
    assert cfg.method.finetuning_type == "lora" and cfg.method.lora_target == ["all"]
    assert cfg.train.gradient_accumulation_steps == 8 and cfg.train.lr_scheduler_type == "cosine"
    assert cfg.data.val_size == 0.1 and cfg.train.eval_strategy == "steps" and cfg.train.eval_steps == 500
    assert cfg.data.preprocessing_num_workers == 16 and cfg.train.ddp_timeout == 180000000


def test_overrides_parse_yaml_values():
    cfg = build_config(BASE, ["learning_rate=5e-5", "max_samples=200", "bf16=true", "dataset=x,y"])
    assert cfg.train.learning_rate == 5e-5 and cfg.data.max_samples == 200 and cfg.train.bf16
    assert cfg.data.dataset == ["x", "y"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"learnig_rate": 1e-4}, "unknown key 'learnig_rate' — did you mean 'learning_rate'?"),
        ({"lora_rnak": 8}, "did you mean 'lora_rank'?"),
        ({"learning_rate": "fast"}, "invalid value for 'learning_rate': 'fast'"),
        ({"lora_rank": 0}, "invalid value for 'lora_rank': 0"),
        ({"val_size": 1.5}, "invalid value for 'val_size': 1.5"),
        ({"finetuning_type": "qlora"}, "invalid value for 'finetuning_type': 'qlora'"),
        ({"stage": "dpoo"}, "invalid value for 'stage': 'dpoo'"),
        ({"stage": "ppo"}, "'stage: ppo': PPO was removed from trl"),
        ({"bf16": True, "fp16": True}, "bf16 and fp16 are both true"),
        ({"eval_strategy": "steps"}, "no val_size or eval_dataset"),
        ({"quantization_bit": 4, "finetuning_type": "full"}, "quantization_bit (QLoRA) needs finetuning_type lora"),
        ({"quantization_bit": 3}, "invalid value for 'quantization_bit': 3"),
        ({"adalora_init_r": 4, "adalora_target_r": 8}, "adalora_target_r must not exceed adalora_init_r"),
        ({"fsdp": "full_shard wrap"}, "'wrap' is not an fsdp option"),
        ({"early_stopping_steps": 3}, "early_stopping_steps needs evaluation during training"),
        ({"hub_strategy": "often"}, "invalid value for 'hub_strategy': 'often'"),
        ({"bf16": "fast"}, "invalid value for 'bf16'"),
        ({"report_to": "wandb"}, "'wandb' is not a supported tracker"),
        ({"max_steps": 0}, "invalid value for 'max_steps': 0"),
        # YAML 1.1 (PyYAML, OmegaConf) reads an unquoted `no` as false: the error says so
        ({"save_strategy": False}, "YAML reads an unquoted no/off as false: quote it"),
    ],
)
def test_errors_name_the_key(bad, message):
    with pytest.raises(ConfigError) as err:
        build_config({**BASE, **bad})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_model_and_bad_override():
    with pytest.raises(ConfigError, match="'model_name_or_path' is required"):
        build_config({"dataset": "a"})
    with pytest.raises(ConfigError, match="not of the form key=value"):
        build_config(BASE, ["learning_rate"])


def test_yaml_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model_name_or_path: x\ndataset: [a, b\nlr: 1\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r":\d+: invalid YAML"):
        load_config(path)


def test_cli_exits_2_with_one_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model_name_or_path: x\ndataset: a\nlearnig_rate: 1.0e-4\n")
    proc = subprocess.run([sys.executable, "-m", "instill.cli", "train", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"instill: error: {path}: unknown key 'learnig_rate' — did you mean 'learning_rate'?"


def test_llamafactory_use_swanlab_alias():
    assert build_config({**BASE, "use_swanlab": True}).train.report_to == ["swanlab"]
    assert build_config({**BASE, "use_swanlab": True, "report_to": "tensorboard"}).train.report_to == ["tensorboard", "swanlab"]
    assert build_config({**BASE, "use_swanlab": False}).train.report_to == ["none"]


def test_every_numeric_key_refuses_booleans_and_infinities():
    """Strict numbers at the door, for every int/float key of every section (new keys included)."""
    from instill.config import SECTIONS, _is_number_type

    numeric = [key for cls in SECTIONS.values() for key, field in cls.model_fields.items()
               if _is_number_type(field.annotation)]
    assert {"learning_rate", "val_size", "lora_rank", "num_train_epochs", "cutoff_len"} <= set(numeric)
    for key in numeric:
        for bad, says in ((True, "not a boolean"), (False, "not a boolean"), (float("inf"), "finite"),
                          (float("nan"), "finite")):
            with pytest.raises(ConfigError, match=f"invalid value for '{key}'.*{says}"):
                build_config({**BASE, key: bad})


def test_unset_training_keys_get_defaults_that_learn():
    """A YAML that leaves the learning rate, batch and warmup unset gets the method's values
    and the run summary's note names each; keys the user sets (or overrides) are never changed."""
    lora = build_config({"model_name_or_path": "m"})
    t = lora.train
    assert (t.learning_rate, t.per_device_train_batch_size, t.gradient_accumulation_steps,
            t.warmup_ratio) == (1e-3, 4, 2, 0.1)
    assert lora.notes == ["defaults for sft, lora (not in the config; set a key to override): learning_rate 0.001, "
                          "per_device_train_batch_size 4, gradient_accumulation_steps 2, warmup_ratio 0.1"]
    assert build_config({"model_name_or_path": "m", "finetuning_type": "full"}).train.learning_rate == 1e-5
    assert build_config({"model_name_or_path": "m", "stage": "pt"}).train.learning_rate == 5e-4
    assert build_config({"model_name_or_path": "m", "stage": "dpo"}).train.learning_rate == 5e-5
    given = build_config({"model_name_or_path": "m", "per_device_train_batch_size": 1, "warmup_steps": 3},
                         ["learning_rate=2e-5"])
    assert (given.train.learning_rate, given.train.per_device_train_batch_size,
            given.train.gradient_accumulation_steps, given.train.warmup_ratio) == (2e-5, 1, 1, 0.0)
    assert given.notes == []


def test_llamafactory_yaml_trains_as_written():
    """The seed's LLaMA-Factory YAML sets every learning key: nothing is chosen for it."""
    assert build_config(seed_yaml()).notes == []


@pytest.mark.parametrize("stage, extra", [
    ("dpo", {"pref_beta": 0.1, "pref_loss": "sigmoid", "dataset": "dpo_en_demo", "learning_rate": 5.0e-6}),
    ("kto", {"pref_beta": 0.1, "dataset": "kto_en_demo", "learning_rate": 5.0e-6}),
    ("rm", {"dataset": "dpo_en_demo", "learning_rate": 1.0e-4}),
])
def test_llamafactory_preference_yamls_load_as_written(stage, extra):
    """LLaMA-Factory's examples/train_lora/qwen3_lora_{dpo,kto,reward}.yaml, keys as that repository writes them."""
    raw = {"model_name_or_path": "Qwen/Qwen3-4B-Instruct-2507", "trust_remote_code": True, "stage": stage,
           "do_train": True, "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all", "template": "qwen",
           "cutoff_len": 2048, "max_samples": 1000, "overwrite_cache": True, "preprocessing_num_workers": 16,
           "dataloader_num_workers": 4, "output_dir": f"saves/qwen3-4b/lora/{stage}", "logging_steps": 10,
           "save_steps": 500, "plot_loss": True, "overwrite_output_dir": True, "save_only_model": False,
           "report_to": "none", "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8,
           "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
           "ddp_timeout": 180000000, "resume_from_checkpoint": None, **extra}
    config = build_config(raw)
    assert config.method.stage == stage and config.train.learning_rate == extra["learning_rate"]
    assert config.notes == []  # every learning key is the YAML's own


def test_adalora_default_rate_is_above_loras():
    """AdaLoRA's singular values start at zero: at LoRA's rate it barely moves (README, Methods); 5e-3 is the
    rate measured there (10x LoRA's rate of then)."""
    lora = build_config({"model_name_or_path": "m"}).train.learning_rate
    adalora = build_config({"model_name_or_path": "m", "finetuning_type": "adalora"}).train.learning_rate
    assert adalora == 5e-3 and adalora > lora
