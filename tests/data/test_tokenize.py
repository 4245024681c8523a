"""Label masks and truncation on the real Qwen2 tokenizer."""

from __future__ import annotations

import json

import pytest

from instill.config import DataArgs
from instill.data.dataset import load_examples, tokenize_examples
from instill.data.example import Example
from instill.data.templates import get_template
from instill.data.tokenize import IGNORE_INDEX, EncodeOptions, encode, infer_seqlen
from instill.errors import TemplateError
from tests.conftest import SHARED_DATA
from tests.data.test_templates import CONVERSATIONS, TOOLS


def trained_text(tok, item) -> list[str]:
    """Decoded runs of trained tokens."""
    runs, cur = [], []
    for tid, label in zip(item.input_ids, item.labels):
        if label != IGNORE_INDEX:
            assert label == tid
            cur.append(tid)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


@pytest.fixture()
def qwen(qwen2_tokenizer):
    return get_template("qwen", qwen2_tokenizer)


def test_only_assistant_and_end_of_turn_are_trained(qwen2_tokenizer, qwen):
    item = encode(Example(CONVERSATIONS[0]), qwen, EncodeOptions(1024))
    assert trained_text(qwen2_tokenizer, item) == ["你好！有什么可以帮你？<|im_end|>\n"]
    im_end = qwen2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    # the stop token after the answer is trained; the one closing the user turn is not
    answer_end = max(i for i, t in enumerate(item.input_ids) if t == im_end)
    assert item.labels[answer_end] == im_end
    first_im_end = item.input_ids.index(im_end)
    assert item.labels[first_im_end] == IGNORE_INDEX
    # ids are exactly the tokenization of the full rendered text
    assert item.input_ids == qwen2_tokenizer.encode(qwen.render(CONVERSATIONS[0]), add_special_tokens=False)


def test_multi_turn_mask_history_and_train_on_prompt(qwen2_tokenizer, qwen):
    ex = Example(CONVERSATIONS[1])
    every = encode(ex, qwen, EncodeOptions(1024))
    assert trained_text(qwen2_tokenizer, every) == ["4<|im_end|>\n", "6<|im_end|>\n"]
    last = encode(ex, qwen, EncodeOptions(1024, mask_history=True))
    assert trained_text(qwen2_tokenizer, last) == ["6<|im_end|>\n"]
    everything = encode(ex, qwen, EncodeOptions(1024, train_on_prompt=True))
    assert everything.labels == everything.input_ids


def test_tool_calls_trained_observations_not(qwen2_tokenizer, qwen):
    item = encode(Example(CONVERSATIONS[2], tools=TOOLS), qwen, EncodeOptions(2048))
    runs = trained_text(qwen2_tokenizer, item)
    assert runs[0].startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>')
    assert runs[0].endswith("</tool_call><|im_end|>\n")
    assert runs[1] == "北京 3°C, Paris 9°C.<|im_end|>\n"
    assert not any("tool_response" in r or "temp" in r for r in runs)


def test_auto_template_masks_match_named(qwen2_tokenizer, qwen):
    auto = get_template("auto", qwen2_tokenizer)
    for conv in CONVERSATIONS:
        a = encode(Example(conv), auto, EncodeOptions(2048))
        b = encode(Example(conv), qwen, EncodeOptions(2048))
        assert (a.input_ids, a.labels) == (b.input_ids, b.labels)


def test_prefix_unstable_template_is_reported(qwen2_tokenizer):
    from instill.data.templates import ChatTemplate

    # A template that prints the number of turns up front changes every prefix.
    jinja = "[{{ messages | length }}]{% for m in messages %}{{ m['content'] }}|{% endfor %}"
    odd = ChatTemplate("odd", jinja, qwen2_tokenizer, "|")
    with pytest.raises(TemplateError, match="not prefix-stable at message 1"):
        encode(Example(CONVERSATIONS[0], source="x.json:#3"), odd, EncodeOptions(64))


def test_infer_seqlen_rules():
    assert infer_seqlen(1000, 10, 100) == (90, 10)  # short answer: prompt cut only
    assert infer_seqlen(20, 500, 100) == (20, 80)  # short prompt: answer gets the rest
    assert infer_seqlen(10000, 40, 64) == (32, 32)  # both long: answer keeps at least half
    assert infer_seqlen(300, 700, 100) == (30, 70)  # both long: proportional
    assert infer_seqlen(5, 5, 100) == (5, 5)


def _long_news_example(text_chars: int = 3000) -> tuple[Example, str]:
    """A fudan-news-shaped sample (seed 004): long text, candidate list after it, short label."""
    row = json.loads((SHARED_DATA / "cls_fudan_derived_msswiftlearn/fudan_news_4class__val.jsonl").open().readline())
    text = (row["messages"][1]["content"] * 5)[:text_chars]
    prompt = f"文本：{text},类型选项：['政治', '财经', '体育', '计算机']"
    system = "你是一个文本分类领域的专家，你会接收到一段文本和几个潜在的分类选项，请输出文本内容的正确类型"
    ex = Example([{"role": "system", "content": system}, {"role": "user", "content": prompt},
                  {"role": "assistant", "content": "财经"}], source="news.jsonl:1")
    return ex, prompt


def test_truncation_keeps_the_label_where_the_seed_recipe_loses_it(qwen2_tokenizer, qwen):
    ex, _ = _long_news_example()
    cutoff = 384
    item = encode(ex, qwen, EncodeOptions(cutoff))
    assert len(item.input_ids) <= cutoff and item.truncated and not item.response_cut
    assert trained_text(qwen2_tokenizer, item) == ["财经<|im_end|>\n"]
    text = qwen2_tokenizer.decode(item.input_ids)
    assert text.startswith("<|im_start|>system\n你是一个文本分类领域的专家")  # head kept
    assert "类型选项：['政治', '财经', '体育', '计算机']<|im_end|>\n<|im_start|>assistant\n财经" in text  # tail kept
    assert item.original_tokens > 1000

    # The seeds' recipe: concatenate, then input_ids[:MAX_LENGTH] — the answer is gone.
    full = encode(ex, qwen, EncodeOptions(100_000))
    seed_labels = full.labels[:cutoff]
    assert all(label == IGNORE_INDEX for label in seed_labels)


def test_long_answer_is_cut_and_counted(qwen2_tokenizer, qwen):
    ex = Example([{"role": "user", "content": "写一篇文章"}, {"role": "assistant", "content": "很长的文章。" * 300}])
    item = encode(ex, qwen, EncodeOptions(128))
    assert len(item.input_ids) == 128 and item.response_cut
    assert item.prompt_tokens + item.response_tokens == 128 and item.response_tokens > 90  # prompt kept whole


def test_summary_counts_and_drops(qwen2_tokenizer, qwen, lf_dataset_dir):
    args = DataArgs(dataset=["alpaca_zh_demo"], dataset_dir=str(lf_dataset_dir), cutoff_len=64, max_samples=200)
    examples = load_examples(args.dataset, args, seed=1)
    assert len(examples) == 200
    out = tokenize_examples("train", examples, args, qwen)
    assert out.summary.kept == len(out.rows) == 200
    assert out.summary.truncated > 0 and all(len(r["input_ids"]) <= 64 for r in out.rows)
    lines = out.summary.lines("train")
    assert lines[0].startswith("train: 200 samples kept, 0 dropped;") and "truncated to cutoff_len" in lines[3]


@pytest.mark.parametrize("name", ["alpaca_zh_demo", "alpaca_en_demo", "identity", "glaive_toolcall_zh_demo"])
def test_llamafactory_demo_files_tokenize(qwen2_tokenizer, qwen, lf_dataset_dir, name):
    args = DataArgs(dataset=[name], dataset_dir=str(lf_dataset_dir), cutoff_len=1024, max_samples=120,
                    dataset_placeholders={"name": "Tern", "author": "instill"})
    examples = load_examples(args.dataset, args, seed=0)
    out = tokenize_examples(name, examples, args, qwen)
    assert out.summary.kept == len(examples) > 0
    for row in out.rows:
        assert any(label != IGNORE_INDEX for label in row["labels"])
    if name == "identity":
        assert all("{{" not in m["content"] for ex in examples for m in ex.messages)
        assert any("Tern" in m["content"] for ex in examples for m in ex.messages)


def test_parallel_tokenization_matches_serial(qwen2_tokenizer, qwen, lf_dataset_dir, monkeypatch):
    import instill.data.dataset as dataset

    monkeypatch.setattr(dataset, "_MIN_PARALLEL", 10)
    args = DataArgs(dataset=["glaive_toolcall_zh_demo"], dataset_dir=str(lf_dataset_dir), cutoff_len=256, max_samples=60)
    examples = load_examples(args.dataset, args, seed=0)
    serial = tokenize_examples("train", examples, args, qwen)
    parallel = tokenize_examples("train", examples, args.model_copy(update={"preprocessing_num_workers": 2}), qwen)
    assert parallel.rows.to_dict() == serial.rows.to_dict()
    assert parallel.summary.truncated == serial.summary.truncated > 0
