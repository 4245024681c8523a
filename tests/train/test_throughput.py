"""A short run reports its throughput everywhere, evaluates only when asked, and trains packed rows."""

from __future__ import annotations

import json

from instill.train.run import run_training
from tests.train.test_sft import FACTS, config


def _log(out):
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def test_throughput_figures_and_no_unasked_eval(tiny_qwen2, tmp_path, capsys):
    from tests.conftest import write_dataset

    rows = [{"instruction": q, "input": "", "output": a} for q, a in FACTS]
    data = write_dataset(tmp_path / "data", "memo", rows)
    write_dataset(data, "held", rows[:4])
    out = tmp_path / "run"
    result = run_training(config(tiny_qwen2, data, out, max_steps=2, logging_steps=1, eval_dataset="held"))
    said = capsys.readouterr().out
    assert "no evaluation after training" in said and "eval_loss" not in result.metrics
    assert "threads: 1 torch threads (OMP_NUM_THREADS" in said  # conftest pins one thread
    summary = next(line for line in said.splitlines() if line.startswith("[instill] done"))
    for part in ("tokens/s", "samples/s", "s/step", "padding ", "shared prefix ", "peak RSS", "MFU "):
        assert part in summary, part
    figures = json.loads((out / "all_results.json").read_text())
    assert figures["train_samples_per_s"] > 0 and 0 < figures["mfu"] < 1 and 0 <= figures["padding_ratio"] < 1
    assert figures["train_s_per_step"] > 0 and figures["peak_rss_mb"] > 0
    log = _log(out)
    assert [r["samples_seen"] for r in log if "loss" in r] == [4, 8]  # batch 4
    assert log[-1]["train_tokens_per_s"] == figures["train_tokens_per_s"]
    assert 0 < figures["shared_prefix_ratio"] < 1  # the template's system prompt is common to every row
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "padding (padded / all batch tokens)" in report and "shared prefix (tokens run once" in report
    batching = json.loads((out / "data_summary.json").read_text())["batching"]
    assert batching["group_by_length"] and 0 <= batching["padding_ratio"] <= batching["padding_ratio_random_order"]

    # packing, with the eval asked for: same steps, packed rows, an eval loss computed on packed rows.
    out = tmp_path / "packed"
    result = run_training(config(tiny_qwen2, data, out, max_steps=2, logging_steps=1, eval_dataset="held",
                                 packing=True, do_eval=True))
    assert "final evaluation: eval loss on 4 eval rows" in capsys.readouterr().out
    assert result.metrics["eval_loss"] > 0
    assert [r["samples_seen"] for r in _log(out) if "loss" in r] == [4, 8]  # 4 sequences a packed batch
