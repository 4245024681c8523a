"""A short run reports its throughput everywhere, evaluates only when asked, and trains packed rows."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from instill.train import throughput
from instill.train.run import run_training
from instill.train.throughput import TrainClock
from tests.conftest import write_dataset
from tests.train.test_sft import FACTS, config


def _log(out):
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def test_throughput_figures_and_no_unasked_eval(tiny_qwen2, tmp_path, capsys):
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


def test_one_tokens_per_s_in_the_summary_line_all_results_and_the_report(tiny_qwen2, tmp_path, capsys):
    """Evaluation every 2 steps: its time is left out of the one training time every tokens/s divides by."""
    rows = [{"instruction": q, "input": "", "output": a} for q, a in FACTS]
    data = write_dataset(tmp_path / "data", "memo", rows)
    write_dataset(data, "held", rows[:4])
    out = tmp_path / "run"
    run_training(config(tiny_qwen2, data, out, max_steps=4, logging_steps=1, eval_dataset="held",
                        eval_strategy="steps", eval_steps=2))
    summary = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("[instill] done"))
    said = re.search(r"train [\d.]+ s \+ [\d.]+ s evaluation \(([\d.]+) tokens/s", summary)
    assert said, summary
    results = json.loads((out / "all_results.json").read_text())
    card = re.search(r'<div class="k">tokens / s</div><div class="v">([^<]+)</div>', (out / "report.html").read_text())
    assert said[1] == card[1] == f"{results['train_tokens_per_s']:.1f}"
    assert _log(out)[-1]["train_tokens_per_s"] == results["train_tokens_per_s"]
    assert results["eval_seconds"] > 0 and results["train_seconds"] > 0
    assert results["train_tokens_per_s"] == pytest.approx(results["num_input_tokens_seen"] / results["train_seconds"],
                                                          rel=1e-3)


def test_train_clock_leaves_evaluation_out(monkeypatch):
    """Evaluations during training (from the step's last training event to on_evaluate) are not training time;
    one after training is ignored; the interval rate is asked twice a log and gives one figure."""
    now = [0.0]
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: now[0])
    state = SimpleNamespace(num_input_tokens_seen=100, global_step=0)  # 100 tokens from before a resume
    clock = TrainClock()

    def at(t, event, tokens=None, step=None, **kw):
        now[0] = t
        state.num_input_tokens_seen = tokens or state.num_input_tokens_seen
        state.global_step = step or state.global_step
        getattr(clock, event)(None, state, None, **kw)

    at(0, "on_train_begin")
    at(2, "on_step_end", tokens=300, step=1)
    at(2, "on_log", logs={"loss": 1.0})
    assert clock.interval_rate(state) == clock.interval_rate(state) == 100.0  # 200 tokens in 2 s
    at(5, "on_evaluate")  # 3 s of evaluation
    at(6, "on_save")  # a checkpoint after the evaluation: training time
    at(7, "on_step_end", tokens=400, step=2)
    at(7, "on_log", logs={"loss": 1.0})
    assert clock.interval_rate(state) == 50.0  # 100 tokens in 2 s (5 -> 7), the evaluation left out
    at(8, "on_epoch_end")
    at(10, "on_evaluate")  # 2 s of evaluation at the epoch's end
    at(11, "on_train_end")
    at(20, "on_evaluate")  # the final evaluate() after training: not counted
    assert (clock.train_seconds(), clock.eval_seconds, clock.tokens(state)) == (6, 5, 300)
