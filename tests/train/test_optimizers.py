"""LLaMA-Factory 0.9.5's optimizer examples (examples/extras/{galore,apollo,badam,adam_mini,muon,loraplus}) train
the tiny Qwen2 through instill's training run with their own keys (model and data swapped for stand-ins, the
run sized down): each builds the optimizer it asks for, and the loss moves. Refusals are one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from instill.cli import main
from instill.config import build_config, load_config
from instill.errors import ConfigError
from instill.model.footprint import model_shape, muon_split
from instill.train.optimizers import MuonWithAdamW, state_bytes
from instill.train.run import run_training
from tests.conftest import native_bf16
from tests.train.test_preference import config as preference_config
from tests.train.test_preference import data_dir  # noqa: F401 — the preference pairs, a fixture

EXTRAS = Path(__file__).resolve().parents[1] / "fixtures" / "llamafactory_examples" / "extras"


def _sized(tiny_qwen2: Path, dataset_dir: Path, out: Path) -> list[str]:
    """The stand-ins (model, dataset_dir holding the demo datasets) and a run a CPU finishes in seconds: 4 rows
    of each of identity and alpaca_en_demo, 3 epochs, every step logged."""
    return [f"model_name_or_path={tiny_qwen2}", f"dataset_dir={dataset_dir}", f"output_dir={out}", "max_samples=4",
            "cutoff_len=128", "logging_steps=1", "dataloader_num_workers=0", "preprocessing_num_workers=1",
            f"bf16={native_bf16()}"]


def _train(example: str, tiny_qwen2: Path, dataset_dir: Path, out: Path, *extra: str):
    config = load_config(EXTRAS / example, [*_sized(tiny_qwen2, dataset_dir, out), *extra])
    result = run_training(config)
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    third = max(len(losses) // 3, 1)  # an epoch: the same rows, first and last
    first, last = sum(losses[:third]) / third, sum(losses[-third:]) / third
    assert last < first, losses
    optimizer = getattr(result.trainer.optimizer, "optimizer", result.trainer.optimizer)  # inside accelerate's
    _estimate_matches(config, tiny_qwen2, optimizer)
    return result, optimizer


def _estimate_matches(config, model_dir: Path, optimizer) -> None:
    """The doctor's optimizer-state estimate (model/footprint.py) within 25% of the bytes the optimizer holds."""
    estimate = model_shape(model_dir, config, 10).optimizer_state
    measured = state_bytes(optimizer)
    assert 0.8 * measured <= estimate <= 1.25 * measured, (estimate, measured)


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (an optional extra of instill)")


def test_galore_layerwise_example(tiny_qwen2, lf_dataset_dir, tmp_path):
    """galore_layerwise: one GaLoreAdamW per parameter, stepped in the backward pass (transformers' optimizer);
    the projected ones carry the example's rank and scale."""
    _needs("galore_torch")
    from galore_torch import GaLoreAdamW
    from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

    # pure_bf16 (bf16 weights without fp32 masters, tests/model/test_vocab_and_patches.py) is off here: emulated bf16
    # is ~30x slower on CPUs without bf16 instructions.
    result, optimizer = _train("galore/llama3_full_sft.yaml", tiny_qwen2, lf_dataset_dir, tmp_path / "out",
                               "pure_bf16=false")
    assert isinstance(optimizer, LayerWiseDummyOptimizer)
    inner = list(optimizer.optimizer_dict.values())
    assert all(type(opt) is GaLoreAdamW for opt in inner)
    projected = [g for opt in inner for g in opt.param_groups if "rank" in g]
    assert len(projected) == 14 and {(g["rank"], g["scale"]) for g in projected} == {(128, 2.0)}  # 7 per layer


def test_galore_whole_model(tiny_qwen2, lf_dataset_dir, tmp_path):
    """Without galore_layerwise, one GaLoreAdamW over the projected and the other parameters."""
    _needs("galore_torch")
    from galore_torch import GaLoreAdamW

    result, optimizer = _train("galore/llama3_full_sft.yaml", tiny_qwen2, lf_dataset_dir, tmp_path / "out",
                               "pure_bf16=false", "galore_layerwise=false", "galore_target=q_proj,v_proj")
    assert type(optimizer) is GaLoreAdamW
    (projected,) = [g for g in optimizer.param_groups if "rank" in g]
    assert len(projected["params"]) == 4 and projected["proj_type"] == "std"


def test_apollo_layerwise_example(tiny_qwen2, lf_dataset_dir, tmp_path):
    _needs("apollo_torch")
    from apollo_torch import APOLLOAdamW
    from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

    result, optimizer = _train("apollo/llama3_full_sft.yaml", tiny_qwen2, lf_dataset_dir, tmp_path / "out",
                               "pure_bf16=false")
    assert isinstance(optimizer, LayerWiseDummyOptimizer)
    groups = [g for opt in optimizer.optimizer_dict.values() for g in opt.param_groups]
    assert all(type(opt) is APOLLOAdamW for opt in optimizer.optimizer_dict.values())
    projected = [g for g in groups if "rank" in g]
    assert len(projected) == 14
    assert {(g["rank"], g["scale"], g["scale_type"], g["proj"]) for g in projected} == {(128, 32.0, "channel", "random")}


def test_badam_example(tiny_qwen2, lf_dataset_dir, tmp_path):
    """badam_mode: layer, ascending: the first decoder layer is the only one trained at first."""
    _needs("badam")
    from badam import BlockOptimizer

    before = _weights(tiny_qwen2)
    result, optimizer = _train("badam/llama3_full_sft.yaml", tiny_qwen2, lf_dataset_dir, tmp_path / "out")
    assert type(optimizer) is BlockOptimizer and optimizer.switch_block_every == 50
    after = {n: p.detach() for n, p in result.trainer.model.named_parameters()}
    changed = {n for n, p in after.items() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("model.layers.0.") for n in changed), sorted(changed)


def test_badam_ratio(tiny_qwen2, lf_dataset_dir, tmp_path):
    _needs("badam")
    from badam import BlockOptimizerRatio

    result, optimizer = _train("badam/llama3_full_sft.yaml", tiny_qwen2, lf_dataset_dir, tmp_path / "out",
                               "badam_mode=ratio", "badam_update_ratio=0.5")
    assert type(optimizer) is BlockOptimizerRatio


def test_adam_mini_example(tiny_qwen2, lf_dataset_dir, tmp_path):
    _needs("adam_mini")
    from adam_mini import Adam_mini

    result, optimizer = _train("adam_mini/qwen2_full_sft.yaml", tiny_qwen2, lf_dataset_dir, tmp_path / "out")
    assert type(optimizer) is Adam_mini


@pytest.mark.parametrize("bf16_hardware", [True, False])
def test_muon_example(tiny_qwen2, lf_dataset_dir, tmp_path, monkeypatch, capsys, bf16_hardware):
    monkeypatch.setattr("instill.train.optimizers.native_bf16", lambda: bf16_hardware)
    result, optimizer = _train("muon/qwen2_full_sft.yaml", tiny_qwen2, lf_dataset_dir, tmp_path / "out")
    assert type(optimizer) is MuonWithAdamW
    assert type(optimizer.muon) is torch.optim.Muon and type(optimizer.adamw) is torch.optim.AdamW
    assert all(opt.state for opt in optimizer.parts)  # both stepped
    # torch's Muon runs Newton-Schulz in bf16: on a CPU that emulates bf16 the run says so (measured: 30 steps of
    # SmolLM2 took > 13 min against AdamW's 1.5 min on such a CPU)
    assert ("which this CPU emulates" in capsys.readouterr().out) is not bf16_hardware


def test_muon_takes_hidden_matrices_adamw_the_rest(tiny_qwen2):
    """Muon on the 2-D weights of the decoder layers; embeddings, the (tied) head, norms and biases on AdamW."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    hidden, rest = muon_split(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted({names[id(p)].split(".")[-2] for p in hidden}) == [
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert len(hidden) == 14 and all(p.ndim == 2 for p in hidden)
    rest_names = {names[id(p)] for p in rest}
    assert "model.embed_tokens.weight" in rest_names and "model.norm.weight" in rest_names
    assert any(n.endswith("q_proj.bias") for n in rest_names) and any("layernorm" in n for n in rest_names)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied: the head is AdamW's
    optimizer = MuonWithAdamW(hidden, rest, lr=0.1, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert {g["lr"] for g in optimizer.muon.param_groups + optimizer.adamw.param_groups} == {0.05}
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    scheduler.step()
    state = optimizer.state_dict()
    optimizer.load_state_dict(state)
    assert len(state["parts"]) == 2 and state["parts"][1]["state"]


def test_loraplus_example(tiny_qwen2, lf_dataset_dir, tmp_path):
    """The B matrices learn at loraplus_lr_ratio (16) x learning_rate (1e-4), the A matrices at learning_rate."""
    result, optimizer = _train("loraplus/llama3_lora_sft.yaml", tiny_qwen2, lf_dataset_dir, tmp_path / "out")
    names = {id(p): n for n, p in result.trainer.model.named_parameters()}
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = group["initial_lr"]  # the schedule's peak, before its factor
    b = [rate for n, rate in rates.items() if "lora_B" in n]
    a = [rate for n, rate in rates.items() if "lora_A" in n]
    assert b == pytest.approx([16 * 1e-4] * len(b)) and a == pytest.approx([1e-4] * len(a))
    assert len([n for n in rates if "lora_B" in n]) == 14


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {n: p.detach().clone() for n, p in AutoModelForCausalLM.from_pretrained(model_dir).named_parameters()}


BASE = {"model_name_or_path": "x", "dataset": "d"}


@pytest.mark.parametrize(("keys", "message"), [
    ({"use_galore": True}, "use_galore optimizes full weights: it needs finetuning_type full or freeze, not lora"),
    ({"use_badam": True, "finetuning_type": "adalora"}, "use_badam optimizes full weights"),
    ({"loraplus_lr_ratio": 16, "finetuning_type": "full"}, "loraplus_lr_ratio sets the learning rate of LoRA's B"),
    ({"use_muon": True, "use_adam_mini": True}, "use_adam_mini and use_muon each choose the optimizer; keep one"),
    ({"use_apollo": True, "apollo_layerwise": True, "finetuning_type": "full", "gradient_accumulation_steps": 8},
     "apollo_layerwise steps each parameter as soon as its gradient is ready, so it needs "
     "gradient_accumulation_steps: 1"),
    ({"use_galore": True, "finetuning_type": "full", "weight_decay": 0.01}, "apply no weight decay"),
    ({"use_galore": True, "finetuning_type": "full", "optim": "sgd"}, "optim: sgd: use_galore runs on optim"),
    ({"use_muon": True, "optim": "adafactor"}, "optim: adafactor: use_muon is the optimizer; remove optim"),
    ({"apollo_scale_front": True}, "'apollo_scale_front: True': apollo-torch reads scale_front only"),
    ({"badam_switch_interval": 0}, "badam_switch_interval"),
])
def test_refusals_are_one_line(keys, message):
    with pytest.raises(ConfigError) as err:
        build_config({**BASE, **keys})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_package_names_the_extra(tiny_qwen2, lf_dataset_dir, tmp_path, monkeypatch, capsys):
    """Without galore-torch, `instill train` stops before loading anything: one line naming the extra, exit 2."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "galore_torch"
                        else find_spec(name, *a))
    code = main(["train", str(EXTRAS / "galore/llama3_full_sft.yaml"), *_sized(tiny_qwen2, lf_dataset_dir,
                                                                             tmp_path / "out"), "pure_bf16=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == ("instill: error: use_galore: needs the galore-torch package: pip install 'instill[galore]'")


@pytest.mark.parametrize(("stage", "keys"), [
    ("dpo", {"loraplus_lr_ratio": 4.0}),
    ("dpo", {"pref_loss": "orpo", "use_muon": True}),
    ("kto", {"dataset": "kto_en_demo", "use_muon": True}),
    ("rm", {"loraplus_lr_ratio": 4.0}),
])
def test_every_stage_builds_the_chosen_optimizer(tiny_qwen2, data_dir, tmp_path, stage, keys):  # noqa: F811
    """Preference and reward stages build their trl trainer with the optimizer the config chose."""
    result = run_training(preference_config(tiny_qwen2, data_dir, tmp_path / "out", stage=stage, max_steps=2,
                                            per_device_train_batch_size=2, cutoff_len=32, max_samples=8, **keys))
    optimizer = getattr(result.trainer.optimizer, "optimizer", result.trainer.optimizer)
    if "use_muon" in keys:
        assert type(optimizer) is MuonWithAdamW and all(opt.state for opt in optimizer.parts)
    else:
        names = {id(p): n for n, p in result.trainer.model.named_parameters()}
        b = {g["initial_lr"] for g in optimizer.param_groups for p in g["params"] if "lora_B" in names[id(p)]}
        assert b == {4.0 * 5e-3}
