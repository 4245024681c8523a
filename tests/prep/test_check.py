"""`instill data check`: every planted bad row by file and line, truncation counts with the real tokenizer."""

from __future__ import annotations

import json

import yaml

from tests.prep.conftest import run

GOOD = {"instruction": "把句子翻译成英文。", "input": "今天天气很好。", "output": "The weather is nice today."}
LONG = {"instruction": "总结下面的新闻。", "input": "这是一段很长的新闻正文。" * 40, "output": "新闻很长。" * 50}


def _config(tmp_path, datasets, cutoff_len=512, **extra):
    config = {"model_name_or_path": str(extra.pop("model")), "template": "auto", "dataset": ",".join(datasets),
              "dataset_dir": str(tmp_path), "cutoff_len": cutoff_len, "output_dir": str(tmp_path / "out"), **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def test_check_reports_every_planted_bad_row_by_line(tmp_path, tiny_qwen2, capsys):
    lines = [json.dumps(GOOD, ensure_ascii=False)] * 2 + [
        '{"instruction": "坏行", "input": "", "output": ',  # 3: broken JSON
        json.dumps(GOOD, ensure_ascii=False),
        json.dumps({**GOOD, "output": ""}, ensure_ascii=False),  # 5: empty answer
        '["不是", "对象"]',  # 6: not an object
        json.dumps(GOOD, ensure_ascii=False),
        json.dumps({"input": "没有指令", "output": "x"}, ensure_ascii=False),  # 8: no instruction column
        json.dumps(GOOD, ensure_ascii=False),
    ]
    (tmp_path / "sft.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    chats = [
        {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]},
        {"conversations": [{"from": "gpt", "value": "先说话"}, {"from": "human", "value": "顺序错了"}]},  # #1
        {"conversations": [{"from": "human", "value": "只有问题"}]},  # #2
    ]
    (tmp_path / "chat.json").write_text(json.dumps(chats, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "sft": {"file_name": "sft.jsonl"},
        "chat": {"file_name": "chat.json", "formatting": "sharegpt"},
    }), encoding="utf-8")
    config = _config(tmp_path, ["sft", "chat"], model=tiny_qwen2)
    assert run("check", config) == 1
    out = capsys.readouterr().out
    sft, chat = tmp_path / "sft.jsonl", tmp_path / "chat.json"
    reported = [line for line in out.splitlines() if not line.startswith("[instill]")]
    assert reported == [
        f"{sft}:3: invalid JSON: Expecting value (column 46)",
        f"{sft}:5: empty response in column 'output'",
        f"{sft}:6: expected a JSON object (one row), got list",
        f"{sft}:8: missing column 'instruction' (row has: input, output)",
        f"{chat}:#1: message 0: expected 'human' or 'observation' but got 'gpt' (roles: gpt, human)",
        f"{chat}:#2: message 0: the last message must be 'gpt' or 'function_call', got 'human' (roles: human)",
    ]
    assert "sft: 9 rows, 4 bad" in out and "chat: 3 rows, 2 bad" in out
    assert "check: 12 rows in 2 datasets, 6 bad" in out


def test_check_counts_truncation_and_passes_clean_data(tmp_path, tiny_qwen2, qwen2_tokenizer, capsys):
    rows = [GOOD] * 6 + [LONG] * 3
    (tmp_path / "d.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}), encoding="utf-8")

    def n_tokens(row):
        messages = [{"role": "user", "content": row["instruction"] + "\n" + row["input"]},
                    {"role": "assistant", "content": row["output"]}]
        return len(qwen2_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])

    long_tokens, answer_tokens = n_tokens(LONG), len(qwen2_tokenizer("新闻很长。" * 50)["input_ids"])
    cutoff = 256
    assert n_tokens(GOOD) < cutoff < long_tokens and answer_tokens > cutoff // 2  # answer must be shortened
    assert run("check", _config(tmp_path, ["d"], cutoff_len=cutoff, model=tiny_qwen2)) == 0
    out = capsys.readouterr().out
    assert f"d: 9 rows, 0 bad; tokens p50 {n_tokens(GOOD)}" in out
    assert f"max {long_tokens}; 3 truncated at cutoff_len {cutoff} (answer shortened in 3, answer lost in 0)" in out
    assert "ready to train" in out
    assert run("check", _config(tmp_path, ["d"], cutoff_len=4096, model=tiny_qwen2)) == 0
    assert "0 truncated at cutoff_len 4096" in capsys.readouterr().out


def test_check_config_errors_exit_2(tmp_path, tiny_qwen2, capsys):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}), encoding="utf-8")
    assert run("check", _config(tmp_path, ["dd"], model=tiny_qwen2)) == 2
    assert "no dataset named 'dd' (nearest: d)" in capsys.readouterr().err


def test_check_reads_preference_and_kto_data_as_their_stage_does(tmp_path, tiny_qwen2, capsys):
    from tests.data.test_pairs import ALPACA_RANKING, LF_PREFERENCE

    pair = {"instruction": "天空是什么颜色？", "input": "", "chosen": "蓝色。", "rejected": "绿色。"}
    lines = [pair, {k: v for k, v in pair.items() if k != "rejected"}, pair, {**pair, "rejected": "蓝色。"}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n",
                                          encoding="utf-8")
    kto = {**LF_PREFERENCE["kto_en_demo"], "file_name": "kto.jsonl"}
    kto_rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
                 "label": label} for label in (True, "yes")]
    (tmp_path / "kto.jsonl").write_text("\n".join(json.dumps(r) for r in kto_rows) + "\n", encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        **LF_PREFERENCE, "pairs": {"file_name": "pairs.jsonl", **ALPACA_RANKING}, "kto": kto}), encoding="utf-8")

    # LLaMA-Factory's demo files, as its dataset_info.json names them, pass (read as pairs / KTO rows, not SFT)
    assert run("check", _config(tmp_path, ["dpo_zh_demo"], stage="dpo", model=tiny_qwen2)) == 0
    assert "dpo_zh_demo: 300 rows, 0 bad" in capsys.readouterr().out
    assert run("check", _config(tmp_path, ["kto_en_demo"], stage="kto", model=tiny_qwen2)) == 0
    assert "kto_en_demo: 300 rows, 0 bad" in capsys.readouterr().out

    assert run("check", _config(tmp_path, ["pairs"], cutoff_len=12, stage="dpo", model=tiny_qwen2)) == 1
    out = capsys.readouterr().out
    path = tmp_path / "pairs.jsonl"
    assert [line for line in out.splitlines() if not line.startswith("[instill]")] == [
        f"{path}:2: missing column 'rejected' (a preference row needs chosen and rejected answers)",
        f"{path}:4: the chosen and rejected answers are identical"]
    assert "pairs: 4 rows, 2 bad; tokens p50 " in out and "2 truncated at cutoff_len 12" in out
    assert run("check", _config(tmp_path, ["kto"], stage="kto", model=tiny_qwen2)) == 1
    assert f"{tmp_path / 'kto.jsonl'}:2: column 'label' (kto_tag) must be true or false, got 'yes'" in \
        capsys.readouterr().out


def test_check_reads_prompts_as_the_online_stages_do(tmp_path, tiny_qwen2, qwen2_tokenizer, capsys):
    """stage: grpo reads prompt rows: a row without its answer loads (it has no reference answer), prompts
    longer than max_prompt_length are counted as dropped, and a broken row names its line."""
    rows = [GOOD, {k: v for k, v in GOOD.items() if k != "output"}, LONG, {"input": "no instruction"}]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                                            encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"prompts": {"file_name": "prompts.jsonl"}}))
    long_prompt = len(qwen2_tokenizer(LONG["instruction"] + "\n" + LONG["input"])["input_ids"])
    config = _config(tmp_path, ["prompts"], stage="grpo", reward_funcs="label_match", max_prompt_length=64,
                     model=tiny_qwen2)
    assert long_prompt > 64
    assert run("check", config) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'prompts.jsonl'}:4:" in out
    assert ("prompts: 4 rows, 1 bad; prompt tokens p50 " in out and "1 longer than max_prompt_length 64 (dropped "
            "by training); 1 with no reference answer" in out)

    from instill.config import load_config
    from instill.data.templates import get_template
    from instill.doctor.data import data_checks
    from instill.doctor.table import WARN

    loaded = load_config(config, [])
    found = data_checks(loaded, get_template("auto", qwen2_tokenizer))
    (prompts,) = [c for c in found.checks if c.name == "prompts prompts"]
    assert prompts.status == WARN and "1 of 3 prompts are longer than max_prompt_length 64" in prompts.detail
    assert "1 of 3 rows have no reference answer" in prompts.detail
