"""report.html end to end: `instill train` -> `instill eval --compare base` -> `instill report`, then the
page rendered in headless Chromium (sections present, every image decoded, a screenshot taken)."""

from __future__ import annotations

import html
import json
import re
import warnings

import pytest
import yaml

from instill.cli import main
from instill.report.redact import redact, redact_yaml
from instill.report.samples import pick_samples
from tests.evaluate.conftest import TOY_LABELS, register, toy_rows, write_jsonl
from tests.report.chromium import dump_dom, needs_chromium, screenshot

SECTIONS = ["summary", "training", "evaluation", "general", "samples", "data", "performance", "environment", "config"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, tiny_qwen2) -> dict:
    """A full fine-tune of the tiny Qwen2 on a 4-label toy task, evaluated against its base, via the CLI."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    data.mkdir()
    (data / "train.json").write_text(json.dumps(toy_rows(64, seed=0), ensure_ascii=False), encoding="utf-8")
    write_jsonl(data / "test.jsonl", toy_rows(24, seed=1))
    columns = {"prompt": "text", "response": "output"}
    register(data, "toy_train", "train.json", columns=columns)
    register(data, "toy_test", "test.jsonl", columns=columns)
    out = root / "run"
    cfg = root / "toy.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_qwen2), "template": "empty", "dataset": "toy_train", "dataset_dir": str(data),
        "cutoff_len": 64, "output_dir": str(out), "finetuning_type": "full", "learning_rate": 1e-2,
        "lr_scheduler_type": "cosine", "warmup_steps": 2, "max_steps": 24, "per_device_train_batch_size": 16,
        "logging_steps": 2, "save_strategy": "no", "seed": 0, "val_size": 8, "eval_strategy": "steps",
        "eval_steps": 12, "eval_task": "classification", "choices_column": "category", "max_new_tokens": 4,
        "eval_batch_size": 8, "hf_hub_token": "hf_secret_do_not_show", "run_name": "toy-分类",
    }, allow_unicode=True), encoding="utf-8")
    assert main(["train", str(cfg)]) == 0
    after_train = (out / "report.html").read_text(encoding="utf-8")
    assert main(["eval", str(cfg), "eval_dataset=toy_test", "val_size=0", "--compare", "base"]) == 0
    assert main(["report", str(out)]) == 0
    return {"out": out, "after_train": after_train, "report": out / "report.html"}


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, flags=re.DOTALL))


def test_training_writes_a_report_that_says_what_is_missing(toy_run):
    sections = _sections(toy_run["after_train"])
    assert list(sections) == SECTIONS
    assert "No evaluation yet" in sections["evaluation"] and "instill eval" in sections["evaluation"]
    assert "training_loss.png" in sections["training"] and "learning_rate.png" in sections["training"]


def test_report_tells_the_whole_story(toy_run):
    out, page = toy_run["out"], toy_run["report"].read_text(encoding="utf-8")
    s = _sections(page)
    assert list(s) == SECTIONS
    # Self-contained: no URL is fetched; every image is inline.
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', page)
    assert {"Training loss", "Learning rate and gradient norm", "Tokens per sample", "Confusion matrix (tuned)",
            "Confusion matrix (base)", "Throughput and memory"} <= set(images), images
    for png in ["training_loss.png", "learning_rate.png", "token_lengths.png", "throughput.png"]:
        assert (out / png).read_bytes().startswith(b"\x89PNG")  # also saved beside the report

    # config: resolved, secret redacted, collapsed and last; environment: versions, device, threads
    assert "finetuning_type: full" in s["config"] and "hf_secret_do_not_show" not in page
    assert "<details><summary>run_config.yaml (" in s["config"] and "<details open" not in page
    assert "hf_hub_token: &#x27;***&#x27;" in s["config"]
    assert "torch threads" in s["environment"] and "transformers" in s["environment"] and "cpu" in s["environment"]
    # data: rows, lengths, truncation
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["sets"]["train"]["kept"] == 56 and summary["sets"]["eval"]["kept"] == 8
    assert summary["sets"]["train"]["rows"] == 56 and summary["cutoff_len"] == 64
    assert re.search(r"<td>train</td><td>56</td><td>56</td>", s["data"])
    # training: steps and loss
    assert "optimizer steps</th><td>24" in s["training"]
    # evaluation: base vs tuned table, per-class table with the Chinese labels, both confusion matrices
    comparison = json.loads((out / "eval" / "comparison.json").read_text())
    assert "Base vs tuned" in s["evaluation"]
    tuned_acc = comparison["metrics"]["accuracy"]["tuned"]
    assert f"{tuned_acc:.4f}" in s["evaluation"]
    for label in TOY_LABELS:
        assert f"<td>{label}</td>" in s["evaluation"]
    # 20 sample predictions, right and wrong both when both exist, with the base model's answer beside
    rows = [json.loads(x) for x in (out / "eval" / "tuned" / "predictions.jsonl").read_text().splitlines()]
    shown = re.findall(r"<tr><td>\d+</td>", s["samples"])
    assert len(rows) == 24 and len(shown) == 20
    n_right = sum(r["correct"] for r in rows)
    assert s["samples"].count('class="ok"') == min(n_right, 20 - min(24 - n_right, 10))
    assert "base model" in s["samples"]
    # throughput, peak memory, wall time
    info = json.loads((out / "run_info.json").read_text())
    assert info["wall_seconds"] > 0 and info["environment"]["torch_threads"] >= 1
    assert "peak RSS" in s["performance"] and "GiB" in s["performance"] and "tokens / s" in s["performance"]
    assert "wall time" in s["summary"] and "accuracy" in s["summary"]
    assert "toy-分类" in page


CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const result = {
    sections: [...document.querySelectorAll('main > section')].map(s => ({id: s.id, h2: s.querySelector('h2').textContent,
                                                                       height: s.getBoundingClientRect().height})),
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                                            shown: i.getBoundingClientRect().width})),
    samples: document.querySelectorAll('#samples table tbody tr').length,
    title: document.title,
  };
  const pre = document.createElement('pre');
  pre.id = 'check-result';
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>"""


@needs_chromium
def test_report_renders_in_headless_chromium(toy_run, tmp_path):
    report = toy_run["report"]
    # The page as Chromium lays it out: a probe script appended to a copy reads the DOM after load.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    dom = dump_dom(tmp_path / "profile", probe.as_uri())
    found = re.search(r'<pre id="check-result">(.*?)</pre>', dom, flags=re.DOTALL)
    assert found, dom[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    assert [x["id"] for x in result["sections"]] == SECTIONS
    assert all(x["height"] > 40 for x in result["sections"]), result["sections"]
    assert len(result["images"]) >= 6
    for image in result["images"]:  # decoded by the browser, and drawn at a readable size
        assert image["complete"] and image["w"] >= 400 and image["h"] >= 300 and image["shown"] >= 300, image
    assert result["samples"] == 20
    assert result["title"] == "instill report · toy-分类"

    # A screenshot of the real page, kept beside the report for people to look at.
    shot = screenshot(tmp_path / "profile", report.as_uri(), report.parent / "report_screenshot.png")
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 3000)
        colours = im.convert("RGB").resize((64, 150)).getcolors(64 * 150)
    assert colours is not None and len(colours) > 20  # text, tables and plots, not a blank page


def test_report_leads_with_the_headline_its_metrics_file_names(tmp_path):
    """report/ may not import evaluate/: each task's headline (evaluate/tasks.py) arrives in metrics.json."""
    from instill.report.html import section_evaluation, section_summary
    from instill.report.run_files import Run

    (tmp_path / "eval").mkdir()
    metrics = {"task": "generation", "mode": "generate", "samples": 3, "bleu-1": 0.5, "bleu-4": 0.125,
               "rouge-l": 0.25, "headline": ["rouge-l", "bleu-4"]}
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    run = Run.read(tmp_path)
    summary, table = section_summary(run), section_evaluation(run)
    assert summary.index("rouge-l") < summary.index("bleu-4") and "bleu-1" not in summary
    assert table.index("rouge-l") < table.index("bleu-4") < table.index("bleu-1")


def test_report_cli_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_redaction_keeps_settings_and_hides_secrets():
    flat = {"hf_hub_token": "hf_abc", "use_fast_tokenizer": True, "ignore_pad_token_for_loss": True,
            "max_new_tokens": 12, "swanlab_api_key": "k", "cache_dir": None}
    assert redact(flat) == {**flat, "hf_hub_token": "***", "swanlab_api_key": "***"}
    text = "hf_hub_token: hf_abc\nuse_fast_tokenizer: true\nmax_new_tokens: null\nother_token: null\n"
    assert redact_yaml(text) == "hf_hub_token: '***'\nuse_fast_tokenizer: true\nmax_new_tokens: null\nother_token: null\n"


def test_pick_samples_shows_right_and_wrong():
    rows = [{"id": i, "correct": i % 3 == 0} for i in range(30)]  # 10 right, 20 wrong
    picked = pick_samples(rows, 20)
    assert len(picked) == 20 and sum(r["correct"] for r in picked) == 10
    assert [r["id"] for r in picked] == sorted(r["id"] for r in picked)
    few_wrong = [{"id": i, "correct": i != 5} for i in range(30)]
    assert sum(not r["correct"] for r in pick_samples(few_wrong, 20)) == 1
    unscored = [{"id": i, "correct": None} for i in range(5)]
    assert pick_samples(unscored, 20) == unscored


def test_plots_find_a_cjk_font_or_warn(tmp_path, monkeypatch):
    from instill.report import plots
    from instill.report.plots import find_cjk_font, font_rc, plot_token_lengths

    monkeypatch.setattr(plots, "_warned_no_cjk", False)  # the warning comes once per process

    summary = {"cutoff_len": 16, "sets": {"训练集": {"kept": 3, "length_histogram": {"edges": [0, 4, 8, 12],
                                                                                   "counts": [1, 1, 1]}}}}
    font = find_cjk_font()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = plot_token_lengths(summary, tmp_path)
    assert png.read_bytes().startswith(b"\x89PNG")
    glyph_warnings = [w for w in caught if "Glyph" in str(w.message)]
    if font is None:
        assert any("no CJK font" in str(w.message) for w in caught)
    else:
        assert font_rc(["训练集"])["font.sans-serif"][0] == font
        assert not glyph_warnings, [str(w.message) for w in glyph_warnings]
