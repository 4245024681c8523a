"""`instill eval --benchmarks`: lm-evaluation-harness on the tiny Qwen2, offline, from the benchmark files
in tests/fixtures/benchmarks (30 questions each: multiple choice in English and Chinese, GSM8K-style)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from instill.cli import main
from tests.report.chromium import dump_dom, needs_chromium

pytest.importorskip("lm_eval", reason="lm-eval is the [bench] extra")

BENCH = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
ALL = "tiny_mc_en,tiny_mc_zh,tiny_gsm"


def write_config(path: Path, **keys) -> Path:
    path.write_text(yaml.safe_dump(keys, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_qwen2) -> Path:
    """A LoRA adapter for the tiny Qwen2 made directly with peft, with non-zero B so it changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_qwen2),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_qwen2).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_qwen2, adapter) -> dict:
    """base vs tuned on all three benchmarks, 8 questions each, through the CLI."""
    root = tmp_path_factory.mktemp("bench")
    out = root / "run"
    config = write_config(root / "eval.yaml", model_name_or_path=str(tiny_qwen2), template="qwen",
                          adapter_name_or_path=str(adapter), output_dir=str(out), benchmark_dir=str(BENCH),
                          report_to="none")
    capture = pytest.MonkeyPatch()
    import io

    stdout = io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    try:
        code = main(["eval", str(config), "--benchmarks", ALL, "--limit", "8", "--compare", "base"])
    finally:
        capture.undo()
    return {"code": code, "out": out, "table": stdout.getvalue(),
            "written": json.loads((out / "eval" / "benchmarks.json").read_text(encoding="utf-8"))}


def test_base_vs_tuned_table_and_benchmarks_json(compared):
    assert compared["code"] == 0
    table = compared["table"].splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("benchmark"))
    assert table[header].split() == ["benchmark", "metric", "base", "tuned", "delta"]
    body = table[header + 1:header + 4]
    assert [line.split()[0] for line in body] == ["tiny_mc_en", "tiny_mc_zh", "tiny_gsm"]
    assert all("±" in line for line in body)  # standard errors
    written = compared["written"]
    assert written["limit"] == 8 and set(written["models"]) == {"base", "tuned"}
    tuned = written["models"]["tuned"]
    assert tuned["n_samples"] == {"tiny_mc_en": 8, "tiny_mc_zh": 8, "tiny_gsm": 8}
    assert tuned["chat_template"] == {"tiny_mc_en": False, "tiny_mc_zh": False, "tiny_gsm": True}
    assert tuned["model"]["adapters"] and not written["models"]["base"]["model"]["adapters"]
    rows = {(r["benchmark"], r["metric"]): r for r in written["comparison"]}
    assert set(rows) == {("tiny_mc_en", "acc"), ("tiny_mc_zh", "acc"), ("tiny_gsm", "exact_match (strict-match)")}
    for r in rows.values():
        assert 0 <= r["base"] <= 1 and 0 <= r["tuned"] <= 1
        assert r["delta"] == pytest.approx(r["tuned"] - r["base"])
        assert r["base_stderr"] is not None


def test_report_has_a_general_ability_section(compared):
    page = (compared["out"] / "report.html").read_text(encoding="utf-8")
    general = page[page.index('<section id="general">'):]
    general = general[:general.index("</section>")]
    assert "General ability" in general and "Base vs tuned" in general
    assert all(name in general for name in ALL.split(","))
    assert page.index('id="evaluation"') < page.index('id="general"')  # next to the task metrics


@needs_chromium
def test_general_ability_section_renders_in_chromium(compared, tmp_path):
    dom = dump_dom(tmp_path / "profile", (compared["out"] / "report.html").as_uri())
    assert "General ability" in dom and "tiny_mc_zh" in dom


def test_llamafactory_eval_keys_run_the_benchmarks(tmp_path, tiny_qwen2, capsys, monkeypatch):
    """An eval YAML in LLaMA-Factory's shape: task, task_dir (relative, as LLaMA-Factory's), n_shot, lang, save_dir,
    batch_size."""
    import shutil

    save = tmp_path / "saved"
    shutil.copytree(BENCH, tmp_path / "my_tasks")
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "lf_eval.yaml", model_name_or_path=str(tiny_qwen2), template="qwen",
                          task="tiny_mc_zh", task_dir="my_tasks", n_shot=2, lang="zh", save_dir=str(save),
                          batch_size=4, output_dir=str(tmp_path / "run"))
    assert main(["eval", str(config), "--limit", "6"]) == 0
    written = json.loads((save / "benchmarks.json").read_text(encoding="utf-8"))
    assert written["benchmarks"] == ["tiny_mc_zh"] and written["comparison"] is None
    assert written["models"]["base"]["n_shot"] == {"tiny_mc_zh": 2}
    assert "tiny_mc_zh" in capsys.readouterr().out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_missing_benchmark_dir_is_one_line_exit_2(tmp_path, tiny_qwen2, capsys):
    config = write_config(tmp_path / "eval.yaml", model_name_or_path=str(tiny_qwen2), template="qwen",
                          benchmark_dir=str(tmp_path / "nowhere"), output_dir=str(tmp_path / "run"))
    assert main(["eval", str(config), "--benchmarks", "tiny_mc_en"]) == 2
    line = _one_line_error(capsys)
    assert "benchmark_dir" in line and "nowhere" in line and "task YAML" in line


def test_missing_data_file_is_one_line_exit_2(tmp_path, tiny_qwen2, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "tiny_mc_en.yaml").write_text((BENCH / "tiny_mc_en.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    config = write_config(tmp_path / "eval.yaml", model_name_or_path=str(tiny_qwen2), template="qwen",
                          benchmark_dir=str(bench), output_dir=str(tmp_path / "run"))
    assert main(["eval", str(config), "--benchmarks", "tiny_mc_en"]) == 2
    line = _one_line_error(capsys)
    assert "tiny_mc_en" in line and str(bench) in line


def test_without_lm_eval_one_line_names_the_extra(tmp_path, tiny_qwen2, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    config = write_config(tmp_path / "eval.yaml", model_name_or_path=str(tiny_qwen2), template="qwen",
                          benchmark_dir=str(BENCH), output_dir=str(tmp_path / "run"))
    assert main(["eval", str(config), "--benchmarks", "tiny_mc_en"]) == 2
    assert "instill[bench]" in _one_line_error(capsys)


def test_limit_without_benchmarks_is_one_line_exit_2(tmp_path, tiny_qwen2, capsys):
    config = write_config(tmp_path / "eval.yaml", model_name_or_path=str(tiny_qwen2), template="qwen",
                          output_dir=str(tmp_path / "run"))
    assert main(["eval", str(config), "--limit", "3"]) == 2
    assert "--limit" in _one_line_error(capsys)


def test_results_reach_tensorboard(compared, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from instill.config import build_config
    from instill.tracking.trackers import log_benchmark_results

    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(compared["written"]), encoding="utf-8")
    config = build_config({"model_name_or_path": "m", "do_train": False, "output_dir": str(tmp_path / "run"),
                           "report_to": "tensorboard"})
    log_benchmark_results(config, path)
    (events_dir,) = {p.parent for p in (tmp_path / "run").rglob("events.out.tfevents.*")}
    tags = EventAccumulator(str(events_dir), size_guidance={"scalars": 0}).Reload().Tags()["scalars"]
    assert {"bench/base/tiny_mc_en/acc", "bench/tuned/tiny_mc_zh/acc", "bench/delta/tiny_gsm/exact_match (strict-match)"} \
        <= set(tags)
