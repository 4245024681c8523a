"""What a training run leaves behind: no secret in any file under output_dir, and a dataset written by
`instill data convert` with U+2028/U+2029/U+0085 inside its strings trains as written (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from instill.cli import main

TOKEN = "hf_PLANTEDsecret9f3c1a7e"


def _train_config(tmp_path: Path, model: Path, dataset_dir: Path, dataset: str, **keys) -> str:
    config = {"model_name_or_path": str(model), "dataset": dataset, "dataset_dir": str(dataset_dir),
              "output_dir": str(tmp_path / "out"), "cutoff_len": 48, "max_steps": 2, "save_steps": 1,
              "logging_steps": 1, "per_device_train_batch_size": 2, "lora_rank": 2, "report_to": "none",
              "plot_loss": True, **keys}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_planted_token_is_in_no_file_under_output_dir(tmp_path, tiny_qwen2, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(6)]
    (data / "d.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    config = _train_config(tmp_path, tiny_qwen2, data, "d", hf_hub_token=TOKEN, report_to="tensorboard")
    assert main(["train", config]) == 0
    printed = capsys.readouterr()
    assert TOKEN not in printed.out + printed.err
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "run_config.yaml" for p in files)
    assert any(p.name.startswith("events.out.tfevents") for p in files)  # the trackers' files are checked too
    holding = [str(p) for p in files if TOKEN.encode() in p.read_bytes()]
    assert not holding, holding
    saved = yaml.safe_load((tmp_path / "out" / "run_config.yaml").read_text())
    assert saved["hf_hub_token"] is None and "not saved (a secret)" in (tmp_path / "out" / "run_config.yaml").read_text()


def test_converted_jsonl_with_unicode_line_separators_trains(tmp_path, tiny_qwen2, capsys):
    separators = ["\u2028", "\u2029", "\u0085"]
    raw = [{"q": f"第{i}行{sep}下一行", "a": f"答{sep}案{i}"} for i, sep in enumerate(separators * 2)]
    raw_path = tmp_path / "raw.jsonl"
    raw_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw), encoding="utf-8")
    data = tmp_path / "data"
    out = data / "conv.jsonl"
    assert main(["data", "convert", "--input", str(raw_path), "--instruction", "回答", "--input-column", "q",
                 "--output-column", "a", "--out", str(out), "--register", str(data / "dataset_info.json")]) == 0
    text = out.read_text(encoding="utf-8")
    assert all(sep in text for sep in separators)  # written raw, as convert writes them
    assert text.count("\n") == len(raw)

    from instill.data.registry import read_rows, resolve

    rows = [row for _, row in read_rows(resolve(["conv"], data)[0], data)]
    assert [r["input"] for r in rows] == [r["q"] for r in raw] and [r["output"] for r in rows] == [r["a"] for r in raw]
    capsys.readouterr()
    assert main(["train", _train_config(tmp_path, tiny_qwen2, data, "conv")]) == 0
    assert "done (sft): 2 steps" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "all_results.json").read_text())["train_loss"] > 0
