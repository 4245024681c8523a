"""The built-in rewards on hand-made completions, and reward plugins (loaded, named, failing in one line)."""

from __future__ import annotations

import pytest

from instill.config import build_config
from instill.config_rules import REWARD_NAMES
from instill.errors import ConfigError
from instill.train.rewards import BUILT_IN, RewardError, load_plugin, reward_functions

BASE = {"model_name_or_path": "m", "stage": "grpo", "dataset": "d"}


def _fn(name: str, **keys):
    config = build_config({**BASE, "reward_funcs": name, **keys})
    return reward_functions(config, None)[0]


def test_the_config_and_the_module_name_the_same_rewards():
    assert set(REWARD_NAMES) == set(BUILT_IN)


def test_label_match_is_evals_matcher_with_the_rows_labels():
    reward = _fn("label_match", labels="sports, finance, tech")
    completions = ["Sports.", "The answer is \\boxed{finance}", "I think it is tech news", "no idea", "体育"]
    out = reward(prompts=[""] * 5, completions=completions, output=["sports", "finance", "sports", "tech", None])
    assert out == [1.0, 1.0, 0.0, 0.0, None]
    # Conversational completions (trl's other shape) and a per-row choices column.
    reward = _fn("label_match", choices_column="choices", label_column="label")
    out = reward(completions=[[{"role": "assistant", "content": "B"}]], label=["B"], choices=[["A", "B"]])
    assert out == [1.0]


def test_entity_f1_scores_each_answer():
    reward = _fn("entity_f1")
    gold = '[{"entity_text": "Paris", "entity_label": "LOC"}, {"entity_text": "Ann", "entity_label": "PER"}]'
    out = reward(completions=['[{"entity_text": "Paris", "entity_label": "LOC"}]', gold, "none"],
                 output=[gold, gold, gold])
    assert out[0] == pytest.approx(2 / 3) and out[1] == 1.0 and out[2] == 0.0


def test_math_accuracy_reads_boxed_and_plain_numbers():
    pytest.importorskip("math_verify")
    reward = _fn("accuracy")
    out = reward(completions=["so \\boxed{42}", "it is 41", "\\boxed{\\frac{1}{2}}"], output=["42", "42", "0.5"])
    assert out == [1.0, 0.0, 1.0]


def test_rule_rewards():
    fmt = _fn("format")
    assert fmt(completions=["<think>hm</think><answer>4</answer>", "<answer>4</answer>"]) == [1.0, 0.0]
    think = _fn("think_format")
    assert think(completions=["<think>hm</think> 4", "<think>hm 4"]) == [1.0, 0.0]
    length = _fn("length", length_range=[2, 4])
    assert length(completions=["", "", ""], completion_ids=[[1, 2, 3], [1] * 8, [1]]) == [1.0, 0.0, 0.5]
    valid = _fn("json_valid")
    assert valid(completions=['{"a": 1}', '```json\n[1, 2]\n```', "{a: 1}"]) == [1.0, 1.0, 0.0]
    rep = _fn("repetition")
    assert rep(completions=["the cat sat on the mat", "go go go go go go"]) == [0.0, pytest.approx(-0.75)]


def test_config_refuses_unknown_rewards_and_bad_weights():
    with pytest.raises(ConfigError, match="reward_funcs: unknown 'label_mach'"):
        build_config({**BASE, "reward_funcs": "label_mach"})
    with pytest.raises(ConfigError, match="stage: grpo needs reward_funcs"):
        build_config(BASE)
    with pytest.raises(ConfigError, match="reward_weights has 1 values for 2 rewards"):
        build_config({**BASE, "reward_funcs": "format,repetition", "reward_weights": 1.0})
    with pytest.raises(ConfigError, match="length needs length_range"):
        build_config({**BASE, "reward_funcs": "length"})
    with pytest.raises(ConfigError, match="stage: grpo with reward_model"):
        build_config({**BASE, "stage": "ppo"})
    # Sampling keys need no do_sample in an online stage (it always samples).
    assert build_config({**BASE, "reward_funcs": "format", "temperature": 0.7}).eval.temperature == 0.7


def test_plugin_loads_from_the_named_file_and_fails_in_one_line(tmp_path):
    (tmp_path / "my_rewards.py").write_text(
        "def short(completions, **kw):\n    return [1.0 if len(c) < 5 else 0.0 for c in completions]\n"
        "def broken(completions, **kw):\n    raise KeyError('answer')\n"
        "def miscount(completions, **kw):\n    return [1.0]\n")
    short = load_plugin(f"{tmp_path}/my_rewards.py:short")
    assert short(prompts=["p", "p"], completions=["ok", "far too long"]) == [1.0, 0.0]
    with pytest.raises(RewardError, match=r"my_rewards.py:broken raised KeyError: 'answer'$"):
        load_plugin(f"{tmp_path}/my_rewards.py:broken")(completions=["x"])
    with pytest.raises(RewardError, match="returned 1 rewards for 2 completions"):
        load_plugin(f"{tmp_path}/my_rewards.py:miscount")(completions=["x", "y"])
    with pytest.raises(ConfigError, match="has no function 'nope' \\(it has: short, broken, miscount\\)"):
        load_plugin(f"{tmp_path}/my_rewards.py:nope")
    with pytest.raises(ConfigError, match="no file"):
        load_plugin(f"{tmp_path}/missing.py:fn")
    (tmp_path / "bad.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(ConfigError, match="loading bad.py raised ModuleNotFoundError"):
        load_plugin(f"{tmp_path}/bad.py:fn")
