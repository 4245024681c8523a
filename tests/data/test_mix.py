"""mix_strategy / interleave_probs: several datasets interleaved by `datasets.interleave_datasets`, as
LLaMA-Factory's data_utils.merge_dataset does, with what interleave_under leaves out counted."""

from __future__ import annotations

import pytest

from instill.config import DataArgs, build_config
from instill.data.dataset import fingerprint, iterable_dataset, load_examples
from instill.data.templates import get_template
from instill.errors import ConfigError
from tests.conftest import write_dataset


def _two(directory, **options) -> DataArgs:
    write_dataset(directory, "small", [{"instruction": f"s{i}", "output": "x"} for i in range(3)])
    write_dataset(directory, "large", [{"instruction": f"l{i}", "output": "y"} for i in range(10)])
    return DataArgs(dataset=["small", "large"], dataset_dir=str(directory), cutoff_len=64, **options)


def _prompts(examples) -> list[str]:
    return [e.messages[0]["content"] for e in examples]


def test_concat_is_the_default(tmp_path):
    assert _prompts(load_examples(["small", "large"], _two(tmp_path), 0)) == \
        [f"s{i}" for i in range(3)] + [f"l{i}" for i in range(10)]


def test_interleave_under_stops_at_the_first_exhausted_and_counts_what_it_left_out(tmp_path, capsys):
    got = _prompts(load_examples(["small", "large"], _two(tmp_path, mix_strategy="interleave_under"), 0))
    assert got == ["s0", "l0", "s1", "l1", "s2", "l2"]
    assert "mix_strategy interleave_under: 6 rows from 13 in 2 datasets; left out: 7 of large" in capsys.readouterr().out


def test_interleave_over_repeats_the_smaller_and_interleave_once_draws_each_row_once(tmp_path, capsys):
    over = _prompts(load_examples(["small", "large"], _two(tmp_path, mix_strategy="interleave_over"), 0))
    assert len(over) == 20 and set(over) == {f"s{i}" for i in range(3)} | {f"l{i}" for i in range(10)}
    assert "20 rows from 13 in 2 datasets; 7 rows drawn again" in capsys.readouterr().out
    once = _prompts(load_examples(["small", "large"], _two(tmp_path, mix_strategy="interleave_once"), 0))
    assert sorted(once) == sorted({f"s{i}" for i in range(3)} | {f"l{i}" for i in range(10)})


def test_probabilities_and_seed_draw_as_llamafactory_does(tmp_path):
    """LLaMA-Factory's merge_dataset calls interleave_datasets on the datasets themselves; instill on row
    indices: the same rows in the same order."""
    from datasets import Dataset, interleave_datasets

    args = _two(tmp_path, mix_strategy="interleave_under", interleave_probs=[0.2, 0.8])
    got = _prompts(load_examples(["small", "large"], args, 7))
    small = Dataset.from_dict({"p": [f"s{i}" for i in range(3)]})
    large = Dataset.from_dict({"p": [f"l{i}" for i in range(10)]})
    want = interleave_datasets([small, large], probabilities=[0.2, 0.8], seed=7,
                               stopping_strategy="first_exhausted")["p"]
    assert got == want and got != _prompts(load_examples(["small", "large"], args, 8))


def test_the_mix_is_part_of_the_cache_key(tmp_path, qwen2_tokenizer):
    template = get_template("qwen", qwen2_tokenizer)
    keys = {fingerprint(_two(tmp_path, **o), template, 0, "conversation")
            for o in ({}, {"mix_strategy": "interleave_under"}, {"mix_strategy": "interleave_over"},
                      {"mix_strategy": "interleave_under", "interleave_probs": [0.5, 0.5]})}
    assert len(keys) == 4


def test_streaming_interleaves_too(tmp_path, qwen2_tokenizer, capsys):
    args = _two(tmp_path, mix_strategy="interleave_under", streaming=True, buffer_size=1)
    rows = list(iterable_dataset(args, get_template("qwen", qwen2_tokenizer), seed=0))
    texts = [qwen2_tokenizer.decode(r["input_ids"]) for r in rows]
    # datasets' streaming interleave stops when it asks the exhausted dataset for a row (LLaMA-Factory's streams
    # too): one row fewer than the in-memory mix
    assert [t.split("user\n")[1].split("<")[0] for t in texts] == ["s0", "l0", "s1", "l1", "s2"]
    assert "the stream ends when the first of 2 datasets runs out" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "message"), [
    ({"interleave_probs": "0.5,0.5"}, "interleave_probs needs an interleave mix_strategy"),
    ({"mix_strategy": "interleave_over", "interleave_probs": "0.5,0.3,0.2"}, "3 probabilities for the 2 datasets"),
    ({"mix_strategy": "interleave_over", "interleave_probs": "0.5,0.6"}, "sum to 1 \\(they sum to 1.1\\)"),
    ({"mix_strategy": "interleave"}, "invalid value for 'mix_strategy'"),
])
def test_mixing_mistakes_stop_at_the_door(extra, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"model_name_or_path": "m", "dataset": "a,b", **extra})


def test_the_probabilities_are_read_from_a_comma_list():
    config = build_config({"model_name_or_path": "m", "dataset": "a,b", "mix_strategy": "interleave_under",
                           "interleave_probs": "0.7, 0.3"})
    assert config.data.interleave_probs == [0.7, 0.3]
