"""report.plots: the confusion matrix picture and the CJK font helper."""

import warnings

import pytest

from instill.errors import DataError
from instill.evaluate.classify import classification_metrics
from instill.report import plots
from instill.report.plots import plot_confusion_matrix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REFS = ["A", "A", "A", "A", "B", "B", "B", "C", "C", "C"]
PREDS = ["A", "A", "B", None, "B", "B", "A", "C", "C", "B"]


# --------------------------------------------------------------------------- plot


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 100 and data.startswith(PNG_MAGIC)


def test_plot_confusion_matrix_png(tmp_path):
    m = classification_metrics(REFS, PREDS, ["A", "B", "C"])
    out = plot_confusion_matrix(m["confusion_matrix"], m["labels"], tmp_path / "sub" / "cm.png", "3 classes")
    assert out == tmp_path / "sub" / "cm.png"
    assert _is_png(out)


def test_plot_confusion_matrix_chinese_labels(tmp_path):
    labels = ["体育", "财经", "科技"]
    m = classification_metrics(["体育", "财经", "科技", "科技"], ["体育", "科技", None, "科技"], labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CJK font on this machine is a warning, not a failure
        out = plot_confusion_matrix(m["confusion_matrix"], labels, tmp_path / "cm_zh.png", "混淆矩阵")
    assert _is_png(out)


def test_plot_square_matrix(tmp_path):
    assert _is_png(plot_confusion_matrix([[3, 1], [0, 0]], ["yes", "no"], tmp_path / "sq.png"))


def test_plot_rejects_wrong_shape(tmp_path):
    with pytest.raises(DataError):
        plot_confusion_matrix([[1, 2, 3, 4, 5]], ["a"], tmp_path / "bad.png")


def test_missing_cjk_font_warns_once(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "find_cjk_font", lambda: None)
    monkeypatch.setattr(plots, "_warned_no_cjk", False)
    with pytest.warns(UserWarning, match="no CJK font"):
        plot_confusion_matrix([[1]], ["体育"], tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_confusion_matrix([[1]], ["体育"], tmp_path / "b.png")  # second time: silent
    assert _is_png(tmp_path / "b.png")


def test_cjk_font_used_when_found(tmp_path, monkeypatch):
    font = plots.find_cjk_font()
    if font is None:
        pytest.skip("no CJK font installed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing-glyph or no-font warnings
        plot_confusion_matrix([[1, 0], [0, 1]], ["体育", "财经"], tmp_path / "zh.png", "混淆矩阵")
    assert _is_png(tmp_path / "zh.png")
