"""The stage registry, `stage: pt` end to end, and the collator against transformers' own."""

from __future__ import annotations

import typing

import pytest
import torch

from instill.cli import main as instill_main
from instill.config import MethodArgs, build_config
from instill.data.collate import PadCollator
from instill.errors import ConfigError
from instill.stage_facts import STAGE_FACTS
from instill.train.stages import STAGES
from tests.conftest import write_dataset
from tests.train.test_sft import losses

POEMS = ["床前明月光，疑是地上霜。举头望明月，低头思故乡。", "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
         "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。", "The quick brown fox jumps over the lazy dog."]


def test_every_configurable_stage_is_registered():
    assert set(typing.get_args(MethodArgs.model_fields["stage"].annotation)) == set(STAGES)
    assert all(name == stage.name for name, stage in STAGES.items())


def test_the_stage_table_is_pinned_to_the_registry():
    """The ground-floor facts the config reads and the Trainer builders are one set of stages, in one order."""
    assert list(STAGE_FACTS) == list(STAGES)
    assert all(STAGES[name].facts is facts for name, facts in STAGE_FACTS.items())
    # The facts that generic code asks: pair rows, streaming, default rates for every method, own metrics.
    assert {n for n, f in STAGE_FACTS.items() if f.reads_pairs} == {"dpo", "kto", "rm"}
    assert {n for n, f in STAGE_FACTS.items() if f.generates} == {"grpo", "rloo", "distill"}
    assert {n for n, f in STAGE_FACTS.items() if f.streamable} == {"sft", "pt"}
    methods = typing.get_args(MethodArgs.model_fields["finetuning_type"].annotation)
    assert all(set(f.learning_rates) == set(methods) for f in STAGE_FACTS.values())
    assert STAGE_FACTS["dpo"].logs_metric("eval_rewards/margins") and STAGE_FACTS["kto"].logs_metric("kl")
    assert STAGE_FACTS["rm"].logs_metric("accuracy") and not STAGE_FACTS["sft"].logs_metric("eval_accuracy")


def test_no_generic_module_names_a_stage():
    """Outside the stage table and the stage modules, no code asks "is this dpo/kto/rm" by name."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "instill"
    own = {"stage_facts.py", "key_policy.py", "preference.py", "reward.py", "sft.py", "pt.py", "grpo.py", "distill.py",
           "stages.py"}
    pattern = re.compile(r"""in \(["'](?:dpo|kto|rm|grpo|rloo)["']|== ["'](?:dpo|kto|rm|grpo|rloo)["']""")
    found = [f"{p.relative_to(src)}:{n}" for p in src.rglob("*.py") if p.name not in own
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if "stage" in line and pattern.search(line)]
    assert found == []


def test_pt_stage_trains_on_a_text_file(tiny_qwen2, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "poems", [{"text": p} for p in POEMS * 4], columns={"prompt": "text"})
    out = tmp_path / "pt"
    config = tmp_path / "pt.yaml"
    config.write_text(f"model_name_or_path: {tiny_qwen2}\nstage: pt\nfinetuning_type: full\n"
                      f"dataset: poems\ndataset_dir: {data}\ncutoff_len: 32\noutput_dir: {out}\n"
                      "per_device_train_batch_size: 4\nlearning_rate: 1.0e-2\nmax_steps: 16\nlogging_steps: 4\n"
                      "lr_scheduler_type: constant\nsave_strategy: 'no'\ntemplate: qwen\n")
    assert instill_main(["train", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "done (pt)" in printed and "train: " in printed
    train_losses, _ = losses(out)
    assert train_losses[-1] < train_losses[0] - 0.3, train_losses
    assert (out / "model.safetensors").is_file()
    # Same inputs again: the tokenized blocks come from the cache.
    assert instill_main(["train", str(config), "overwrite_output_dir=true", "max_steps=1"]) == 0
    assert "tokenized data loaded from the cache" in capsys.readouterr().out


def test_pt_refuses_conversation_rows(tiny_qwen2, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "chat", [{"conversations": [{"from": "human", "value": "hi"}]}],
                         formatting="sharegpt")
    assert instill_main(["train", str(_yaml(tmp_path, tiny_qwen2, data))]) == 2
    assert "pretraining (stage: pt) reads plain text rows" in capsys.readouterr().err


def _yaml(tmp_path, model, data):
    path = tmp_path / "c.yaml"
    path.write_text(f"model_name_or_path: {model}\nstage: pt\ndataset: chat\ndataset_dir: {data}\n"
                    f"output_dir: {tmp_path / 'o'}\nmax_steps: 1\ntemplate: qwen\n")
    return path


def test_pad_collator_matches_transformers(qwen2_tokenizer):
    from transformers import DataCollatorForSeq2Seq

    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [1], "labels": [1]},
            {"input_ids": list(range(10, 19)), "labels": list(range(10, 19))}]
    for multiple in (None, 8):
        ours = PadCollator(qwen2_tokenizer.pad_token_id, multiple)(rows)
        theirs = DataCollatorForSeq2Seq(qwen2_tokenizer, label_pad_token_id=-100, pad_to_multiple_of=multiple)(
            [dict(r) for r in rows])
        for key in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(ours[key], theirs[key]), key
    assert PadCollator(0, 8)(rows)["input_ids"].shape == (3, 16)


def test_streaming_needs_max_steps(tiny_qwen2):
    with pytest.raises(ConfigError, match="streaming: true needs max_steps"):
        build_config({"model_name_or_path": str(tiny_qwen2), "dataset": "x", "streaming": True})
