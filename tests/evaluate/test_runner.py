"""`instill eval` / `instill predict` end to end on tiny models: files, metrics, comparisons, errors."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import yaml

from instill.cli import main
from instill.config import build_config
from instill.evaluate.runner import load_samples, task_metrics_callback
from instill.evaluate.tasks import TASKS
from instill.model.choice import choose_model
from instill.report.plots import plot_confusion_matrix
from tests.evaluate.conftest import TOY_LABELS, fudan_rows, ner_seed003_rows, register, write_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FUDAN_LABELS = ["政治", "财经", "体育", "计算机"]


def write_config(path: Path, **keys) -> Path:
    path.write_text(yaml.safe_dump(keys, allow_unicode=True), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture()
def fudan(tmp_path, tiny_qwen2) -> dict:
    """16 fudan-news rows (openai messages + label column) registered, and an eval config for them."""
    write_jsonl(tmp_path / "data" / "fudan_val.jsonl", fudan_rows(16))
    register(tmp_path / "data", "fudan_val", "fudan_val.jsonl", formatting="openai")
    keys = {"model_name_or_path": str(tiny_qwen2), "template": "auto", "dataset_dir": str(tmp_path / "data"),
            "eval_dataset": "fudan_val", "cutoff_len": 96, "output_dir": str(tmp_path / "run"),
            "eval_task": "classification", "max_new_tokens": 6, "eval_batch_size": 4}
    return {"dir": tmp_path, "keys": keys, "out": tmp_path / "run" / "eval"}


@pytest.mark.parametrize("mode", ["generate", "score"])
def test_eval_fudan_news_writes_predictions_metrics_and_confusion_matrix(fudan, mode, capsys, monkeypatch):
    import instill.evaluate.runner as runner

    plotted = []
    monkeypatch.setattr(runner, "plot_confusion_matrix",
                        lambda cm, labels, path, **kw: plotted.append(cm) or plot_confusion_matrix(cm, labels, path, **kw))
    config = write_config(fudan["dir"] / "eval.yaml", **fudan["keys"], label_column="label", eval_mode=mode)
    assert run_cli("eval", config) == 0
    out = fudan["out"]
    rows = read_jsonl(out / "predictions.jsonl")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    source = fudan_rows(16)
    assert [r["reference"] for r in rows] == [s["label"] for s in source]
    assert [r["id"] for r in rows] == [f"{fudan['dir'] / 'data' / 'fudan_val.jsonl'}:{i + 1}" for i in range(16)]
    assert all(r["correct"] == (r["label"] == r["reference"]) for r in rows)
    # label set from the references (no labels/choices given), sorted
    assert metrics["labels"] == sorted(FUDAN_LABELS)
    assert metrics["n"] == metrics["samples"] == 16
    assert metrics["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 16)
    assert sum(map(sum, metrics["confusion_matrix"])) == 16
    assert metrics["prompts_truncated"] == 16  # news texts are far longer than cutoff_len 96
    assert metrics["headline"] == list(TASKS["classification"].headline)  # what report.html leads with
    assert (out / "confusion_matrix.png").read_bytes()[:8] == PNG_MAGIC
    # the picture has an <invalid> column only when some answer matched no label
    assert len(plotted[0][0]) == 4 + (metrics["invalid"] > 0)
    if mode == "score":
        assert "calibration" not in metrics and "calibrated_scores" not in rows[0]
        assert metrics["invalid"] == 0 and all(r["label"] in FUDAN_LABELS for r in rows)
        assert metrics["label_template"] == "\\boxed{{label}}"  # learned from the answers "\boxed{财经}"
        assert all(0 < r["confidence"] <= 1 and set(r["scores"]) == set(r["candidates"]) for r in rows)
    else:  # a random model writes no label: every answer is invalid and reported as such
        assert metrics["invalid"] == sum(r["label"] is None for r in rows)
    summary = capsys.readouterr().out
    assert f"classification ({mode}), 16 samples" in summary and "samples/s" in summary and "accuracy" in summary


def test_every_eval_task_is_a_registry_entry():
    from typing import get_args

    from instill.config import EvalArgs

    assert set(get_args(EvalArgs.model_fields["eval_task"].annotation)) == set(TASKS)
    assert all(t.run is not None or None not in (t.prepare, t.predict, t.score) for t in TASKS.values())


def test_batch_calibration_rescores_from_the_raw_likelihoods(fudan):
    """eval_calibration: batch: label = argmax of p / mean p, recomputed here from the raw scores written."""
    config = write_config(fudan["dir"] / "eval.yaml", **fudan["keys"], label_column="label", eval_mode="score",
                          eval_calibration="batch")
    assert run_cli("eval", config) == 0
    rows = read_jsonl(fudan["out"] / "predictions.jsonl")
    metrics = json.loads((fudan["out"] / "metrics.json").read_text(encoding="utf-8"))
    probs = []
    for r in rows:
        z = sum(math.exp(v) for v in r["scores"].values())
        probs.append({k: math.exp(v) / z for k, v in r["scores"].items()})
    prior = {k: sum(p[k] for p in probs) / len(probs) for k in FUDAN_LABELS}
    assert metrics["calibration"] == "batch"
    assert metrics["label_prior"] == pytest.approx(prior, abs=1e-4)
    assert sum(metrics["label_prior"].values()) == pytest.approx(1.0, abs=1e-4)
    for r, p in zip(rows, probs):
        assert r["label"] == max(p, key=lambda k: p[k] / prior[k])
    assert metrics["accuracy"] == pytest.approx(sum(r["label"] == r["reference"] for r in rows) / 16)
    assert "classification (score, batch calibration)" in (fudan["dir"] / "run" / "report.html").read_text("utf-8")


def test_calibration_needs_score_mode(fudan, capsys):
    config = write_config(fudan["dir"] / "eval.yaml", **fudan["keys"], eval_calibration="batch")
    assert run_cli("eval", config) == 2
    err = capsys.readouterr().err.strip()
    assert "eval_calibration" in err and "score" in err and len(err.splitlines()) == 1


def test_seed004_shape_candidates_from_a_column(fudan, tiny_qwen2):
    """{"text", "category": "['体育', '财经']", "output"} rows: each row is ranked among its own candidates."""
    rows = []
    for i, row in enumerate(fudan_rows(12)):
        others = [x for x in FUDAN_LABELS if x != row["label"]][: 1 + i % 3]
        category = sorted([row["label"], *others])
        rows.append({"text": row["messages"][1]["content"], "category": str(category) if i % 2 else category,
                     "output": row["label"]})
    data = fudan["dir"] / "data"
    (data / "seed004.json").write_text(json.dumps(rows, ensure_ascii=False))
    register(data, "seed004", "seed004.json", columns={"prompt": "text", "response": "output"})
    config = write_config(fudan["dir"] / "eval.yaml", **{**fudan["keys"], "eval_dataset": "seed004"},
                          choices_column="category", eval_mode="score")
    assert run_cli("eval", config) == 0
    predictions = read_jsonl(fudan["out"] / "predictions.jsonl")
    for row, pred in zip(rows, predictions):
        expected = row["category"] if isinstance(row["category"], list) else ast.literal_eval(row["category"])
        assert pred["candidates"] == expected and pred["label"] in expected
        assert pred["prediction"] == pred["label"]  # answers are the bare label: template "{label}"
    assert any(len(p["candidates"]) == 2 for p in predictions) and any(len(p["candidates"]) == 4 for p in predictions)


def test_eval_ner_seed003_format(tmp_path, tiny_qwen2):
    rows = ner_seed003_rows(24)
    write_jsonl(tmp_path / "ner.jsonl", rows)
    register(tmp_path, "ner", "ner.jsonl", columns={"system": "instruction", "prompt": "input", "response": "output"})
    config = write_config(tmp_path / "eval.yaml", model_name_or_path=str(tiny_qwen2), dataset_dir=str(tmp_path),
                          eval_dataset="ner", eval_task="ner", max_new_tokens=12, eval_batch_size=8,
                          output_dir=str(tmp_path / "run"))
    assert run_cli("eval", config) == 0
    predictions = read_jsonl(tmp_path / "run" / "eval" / "predictions.jsonl")
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    # the seed-003 answers parse back to exactly the source entities (and 没有找到任何实体 to none)
    assert [p["reference_entities"] for p in predictions] == [r["gold"] for r in rows]
    assert sum(not r["gold"] for r in rows) == 8
    assert metrics["n"] == 24
    assert metrics["unparseable"] == sum(p["entities"] is None for p in predictions)
    assert metrics["fn"] + metrics["tp"] == sum(len(r["gold"]) for r in rows)
    assert {"precision", "recall", "f1", "per_type"} <= set(metrics)


def test_eval_generation_on_the_val_size_split(tmp_path, tiny_qwen2):
    """With no eval_dataset, the rows training held out (val_size, same seed) are evaluated."""
    rows = [{"instruction": f"把数字{i}写成汉字", "output": "零一二三四五六七八九"[i % 10]} for i in range(20)]
    (tmp_path / "gen.json").write_text(json.dumps(rows, ensure_ascii=False))
    register(tmp_path, "gen", "gen.json")
    keys = dict(model_name_or_path=str(tiny_qwen2), dataset_dir=str(tmp_path), dataset="gen", val_size=5,
                eval_task="generation", max_new_tokens=4, output_dir=str(tmp_path / "run"))
    config = write_config(tmp_path / "eval.yaml", **keys)
    assert run_cli("eval", config) == 0
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == 5
    assert {"bleu-1", "bleu-4", "rouge-1", "rouge-l", "exact_match"} <= set(metrics)
    held_out = [s.id for s in load_samples(build_config({**keys, "do_train": False}))]
    assert [p["id"] for p in read_jsonl(tmp_path / "run" / "eval" / "predictions.jsonl")] == held_out


def test_llama_factory_predict_yaml_runs_with_instill_train(tmp_path, tiny_qwen2):
    """LLaMA-Factory's predict YAML shape (do_predict + predict_with_generate, no do_train): predicts, trains nothing."""
    rows = [{"instruction": f"把数字{i}写成汉字", "output": "零一二三四五六七八九"[i % 10]} for i in range(6)]
    (tmp_path / "gen.json").write_text(json.dumps(rows, ensure_ascii=False))
    register(tmp_path, "gen", "gen.json")
    config = write_config(tmp_path / "predict.yaml", model_name_or_path=str(tiny_qwen2), stage="sft",
                          do_predict=True, predict_with_generate=True, finetuning_type="lora", dataset_dir=str(tmp_path),
                          eval_dataset="gen", template="auto", cutoff_len=64, output_dir=str(tmp_path / "predict"),
                          overwrite_output_dir=True, per_device_eval_batch_size=2, max_new_tokens=3)
    assert run_cli("train", config) == 0
    out = tmp_path / "predict"
    assert not (out / "adapter_config.json").exists()  # nothing trained
    predictions = read_jsonl(out / "eval" / "predictions.jsonl")
    metrics = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert [p["reference"] for p in predictions] == [r["output"] for r in rows]
    assert metrics["n"] == 6 and {"bleu-4", "rouge-l"} <= set(metrics)
    # and LLaMA-Factory's own output file, for scripts that read it
    assert read_jsonl(out / "generated_predictions.jsonl") == [
        {"prompt": r["instruction"], "predict": p["prediction"], "label": r["output"]} for r, p in zip(rows, predictions)]


def test_do_predict_without_eval_data_fails_before_training(tmp_path, tiny_qwen2, capsys):
    config = write_config(tmp_path / "predict.yaml", model_name_or_path=str(tiny_qwen2), do_predict=True,
                          output_dir=str(tmp_path / "out"))
    assert run_cli("train", config) == 2
    assert "do_predict needs eval_dataset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_overrides_may_follow_options(fudan, capsys):
    config = write_config(fudan["dir"] / "eval.yaml", **fudan["keys"], label_column="label")
    assert run_cli("eval", config, "--output", fudan["dir"] / "o", "eval_mode=score", "eval_max_samples=3") == 0
    metrics = json.loads((fudan["dir"] / "o" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["mode"] == "score" and metrics["samples"] == 3
    with pytest.raises(SystemExit) as exc:
        run_cli("eval", config, "--output", fudan["dir"] / "o", "stray")
    assert exc.value.code == 2 and "unrecognized arguments: stray" in capsys.readouterr().err


def test_compare_base_and_tuned(trained_toy, tmp_path, capsys):
    """Base = the random tiny model, tuned = the full model training wrote to output_dir."""
    config = write_config(tmp_path / "eval.yaml", **trained_toy["config"], eval_mode="score",
                          labels=",".join(TOY_LABELS))
    assert choose_model(build_config(yaml.safe_load(config.read_text())), "tuned").model_args.model_name_or_path \
        == str(trained_toy["model"])
    assert run_cli("eval", config, "--compare", "base") == 0
    out = trained_toy["model"] / "eval"
    comparison = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    base, tuned = (json.loads((out / n / "metrics.json").read_text()) for n in ("base", "tuned"))
    assert comparison["metrics"]["accuracy"] == {"base": base["accuracy"], "tuned": tuned["accuracy"],
                                                 "delta": tuned["accuracy"] - base["accuracy"]}
    assert tuned["accuracy"] >= 0.9 > base["accuracy"] + 0.3
    assert comparison["tuned"]["model_name_or_path"] == str(trained_toy["model"])
    assert comparison["base"]["model_name_or_path"] == str(trained_toy["base"])
    assert {f"f1 [{label}]" for label in TOY_LABELS} <= set(comparison["metrics"])
    assert (out / "base" / "confusion_matrix.png").is_file() and (out / "tuned" / "confusion_matrix.png").is_file()
    table = capsys.readouterr().out
    assert "base" in table and "tuned" in table and f"{tuned['accuracy']:.4f}" in table


def test_predict_input_without_answers(trained_toy, tmp_path, capsys):
    rows = [{"messages": [{"role": "user", "content": f"编号：{d}"}], "category": str(TOY_LABELS)} for d in range(8)]
    alpaca = [{"instruction": f"编号：{d}", "category": TOY_LABELS} for d in range(8, 10)]
    write_jsonl(tmp_path / "ask.jsonl", rows)
    (tmp_path / "ask_alpaca.json").write_text(json.dumps(alpaca, ensure_ascii=False))
    config = write_config(tmp_path / "eval.yaml", **trained_toy["config"])
    for name, expected in (("ask.jsonl", range(8)), ("ask_alpaca.json", range(8, 10))):
        assert run_cli("predict", config, "--input", tmp_path / name, "--output", tmp_path / name.split(".")[0]) == 0
        predictions = read_jsonl(tmp_path / name.split(".")[0] / "predictions.jsonl")
        assert [p["reference"] for p in predictions] == [None] * len(expected)
        assert [p["label"] for p in predictions] == [TOY_LABELS[d % 4] for d in expected]
        assert not (tmp_path / name.split(".")[0] / "metrics.json").exists()
    capsys.readouterr()
    assert run_cli("eval", config, "--input", tmp_path / "ask.jsonl", "--output", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ask.jsonl:1: no reference answer" in err


def test_task_metrics_during_training(trained_toy, tmp_path):
    from transformers import TrainerControl, TrainerState


    config = build_config({**trained_toy["config"], "model_name_or_path": str(trained_toy["model"]),
                           "output_dir": str(tmp_path), "eval_mode": "score"})
    from instill.data.templates import get_template
    from instill.infer.engine import load_generator

    generator = load_generator(config.model, "empty")
    tokenizer = generator.tokenizer
    callback = task_metrics_callback(config, tokenizer, get_template("empty", tokenizer))
    state, metrics = TrainerState(global_step=7), {"eval_loss": 0.5}
    generator.model.train()
    callback.on_evaluate(None, state, TrainerControl(), metrics=metrics, model=generator.model)
    assert metrics["eval_accuracy"] >= 0.9 and metrics["eval_loss"] == 0.5
    assert generator.model.training  # put back as found
    assert state.log_history[-1]["step"] == 7
    logged = read_jsonl(tmp_path / "eval" / "task_metrics.jsonl")
    assert logged == [{"step": 7, **{k: v for k, v in metrics.items() if k != "eval_loss"}}]


# ---------------------------------------------------------------- bad input: one line naming the file and row


def _bad_rows(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "bad.json").write_text(json.dumps(rows, ensure_ascii=False))
    register(tmp_path, "bad", "bad.json", columns={"prompt": "text", "response": "output"})
    return tmp_path / "bad.json"


GOOD = {"text": "新闻：足球", "category": "['体育', '财经']", "output": "体育"}


@pytest.mark.parametrize("rows, keys, message", [
    ([GOOD, {"text": "x", "output": "体育"}], {"choices_column": "category"},
     "bad.json:#1: no column 'category' (choices_column); row has: "),
    ([GOOD], {"label_column": "gold"}, "bad.json:#0: no column 'gold' (label_column); row has: category"),
    ([GOOD, {**GOOD, "category": "[]"}], {"choices_column": "category"},
     "bad.json:#1: column 'category': label set is empty: '[]'"),
    ([GOOD, {**GOOD, "output": "政治"}], {"choices_column": "category"},
     "bad.json:#1: reference label '政治' is not among the candidates ['体育', '财经']"),
    ([GOOD], {"labels": "财经, 计算机"}, "bad.json:#0: reference label '体育' is not among the candidates"),
    ([GOOD], {"labels": ""}, "invalid value for 'labels': '' (the label set is empty)"),
    ([GOOD], {"eval_task": "ner"}, "bad.json:#0: the reference answer is not NER output"),
])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_bad_input_is_one_clear_line(tmp_path, tiny_qwen2, capsys, rows, keys, message, command):
    _bad_rows(tmp_path, rows)
    base = {"model_name_or_path": str(tiny_qwen2), "dataset_dir": str(tmp_path), "eval_dataset": "bad",
            "eval_task": "classification", "output_dir": str(tmp_path / "run")}
    config = write_config(tmp_path / "eval.yaml", **{**base, **keys})
    assert run_cli(command, config) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("instill: error: ") and message in err, err
    assert not (tmp_path / "run" / "eval").exists()


def test_nothing_to_evaluate(tmp_path, tiny_qwen2, capsys):
    config = write_config(tmp_path / "eval.yaml", model_name_or_path=str(tiny_qwen2))
    assert run_cli("eval", config) == 2
    assert "nothing to evaluate: set eval_dataset" in capsys.readouterr().err


def test_compare_without_a_tuned_model(fudan, capsys):
    config = write_config(fudan["dir"] / "eval.yaml", **fudan["keys"])
    assert run_cli("eval", config, "--compare", "base") == 2
    assert "no tuned model: adapter_name_or_path is not set" in capsys.readouterr().err
