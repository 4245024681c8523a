"""The offline Qwen2 fixtures match the real thing: tiktoken-identical ids, real special ids, ChatML, loadable model."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import unicodedata
from pathlib import Path

import pytest
import tiktoken
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from tests.fixtures.qwen2 import (
    QWEN2_PATTERN,
    QWEN2_SPECIAL_TOKENS,
    QWEN2_VOCAB_SIZE,
    QWEN25_EXTRA_TOKENS,
    build_qwen2_tokenizer,
    build_tiny_qwen2,
    load_qwen_ranks,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_qwen2_tokenizer()


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name="qwen2",
        pat_str=QWEN2_PATTERN,
        mergeable_ranks=load_qwen_ranks(),
        special_tokens={**QWEN2_SPECIAL_TOKENS, **{t: i for t, (i, _) in QWEN25_EXTRA_TOKENS.items()}},
    )


def _chinese_texts() -> list[str]:
    alpaca = json.loads((SHARED_DATA / "llamafactory_alpaca_zh_demo" / "alpaca_zh_demo.json").read_text("utf-8"))
    texts = [r[k] for r in alpaca[:60] for k in ("instruction", "input", "output") if r[k]]
    with (SHARED_DATA / "ner_ccfbdci" / "ccfbdci.jsonl").open(encoding="utf-8") as f:
        texts += [json.loads(line)["text"] for line in itertools.islice(f, 120)]
    return texts


def _english_texts() -> list[str]:
    alpaca = json.loads((SHARED_DATA / "llamafactory_alpaca_en_demo" / "alpaca_en_demo.json").read_text("utf-8"))
    return [r[k] for r in alpaca[:30] for k in ("instruction", "output") if r[k]]


HANDWRITTEN = [
    "Hello, world!",
    "I'm sure they'll say it's fine; we've seen what you'd do. DON'T SHOUT, He'S",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    'for (int i = 0; i < n; ++i) { s += a[i]; }\n// 注释\n/* block */',
    '{"key": [1, 2.5, -3e10, null, true], "中文": "值"}',
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "3.14159265358979 1,234,567 2024-11-22 12:34:56 +86-10-1234-5678 0x1F 1e-9 ２０２４年",
    "emoji 😀🎉👍🏽 👨‍👩‍👧‍👦 🇨🇳 ❤️ ✨ 🤖",
    "    leading spaces",
    "trailing spaces    ",
    "a  b   c    d\t\te\u3000f\u00a0g",
    "\n\n\nline\r\nwindows\rmac\n \n  \n",
    "",
    " ",
    "\n",
    "中英混合 mixed text：GPT-4o 与 Qwen2.5 的对比（2024）。",
    "日本語のテキストとカタカナ、한국어 텍스트, русский текст, العربية, עברית, ελληνικά",
    "Ünïcödé àccénts façade naïve résumé Zürich Straße",
    "math: ∑_{i=1}^{n} x_i² ≤ √(n·∑x_i²) → ∞; α β γ δ",
    "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text<|im_end|>",
    "<|im_start|><|im_end|><|endoftext|>",
    "<|not_special|> < |im_start| >",
    "https://example.com/path?q=1&r=2#frag user@example.com",
    "!!!???...,,,;;;:::---___===+++***&&&%%%$$$###@@@",
    "'s 's 'S 'll 'LL 're 've 'm 'd '",
    "x" * 300,
    "哈" * 200,
    " " * 50 + "\n" * 10 + "\t" * 5,
    "1234567890" * 10,
]


def _random_texts(n: int = 60, seed: int = 0) -> list[str]:
    """Seeded random strings mixing scripts, digits, punctuation, spaces and emoji (NFC, as real text is)."""
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " \t\n\r  \n\n",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里",
        "，。！？；：“”‘’（）【】《》、…—·",
        "😀😂🥲🤔🚀🌍🍜🐼🧧🎆👍🏻",
        "éèêëçàâîïôûùüÿñßøåæœ",
        "αβγδεζηθλμπσφψω∑∏∫√∞≈≠≤≥",
    ]
    texts = []
    for _ in range(n):
        length = rng.randint(1, 120)
        text = "".join(rng.choice(rng.choice(pools)) for _ in range(length))
        texts.append(unicodedata.normalize("NFC", text))
    return texts


def _corpus() -> list[str]:
    texts = _chinese_texts() + _english_texts() + HANDWRITTEN + _random_texts()
    code = (Path(__file__).resolve().parent / "fixtures" / "qwen2.py").read_text("utf-8")
    texts += [code, *code.split("\n\n")[:20]]
    return texts


def test_corpus_is_varied_and_nfc() -> None:
    texts = _corpus()
    assert len(texts) >= 300
    # The HF tokenizer NFC-normalises and tiktoken does not; they agree on NFC text, which real text is.
    assert all(unicodedata.is_normalized("NFC", t) for t in texts)


def test_matches_tiktoken(tokenizer: PreTrainedTokenizerFast, reference: tiktoken.Encoding) -> None:
    texts = _corpus()
    ours = tokenizer(texts, add_special_tokens=False)["input_ids"]
    theirs = reference.encode_batch(texts, allowed_special="all")
    mismatches = [(t[:80], a[:20], b[:20]) for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatches, f"{len(mismatches)}/{len(texts)} differ, first: {mismatches[:3]}"
    assert sum(map(len, ours)) > 20_000


def test_vocab_and_merges_sizes(tokenizer: PreTrainedTokenizerFast) -> None:
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    assert len(model["vocab"]) == 151_665  # 151,643 BPE tokens + the 22 added tokens of Qwen2.5
    assert len(model["merges"]) == 151_387  # the size of Qwen2's merges.txt
    assert len(tokenizer) == 151_665


def test_special_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    for token, (token_id, _) in QWEN25_EXTRA_TOKENS.items():
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
    for token, token_id in QWEN2_SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
        assert tokenizer.decode([token_id]) == token
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 151645
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 151643
    assert tokenizer.bos_token is None
    assert tokenizer.model_max_length == 32768
    assert "<|im_start|>" in tokenizer.all_special_tokens
    # No BOS/EOS is added by encode(), as with the real Qwen2 tokenizer.
    assert tokenizer.encode("hi") == tokenizer.encode("hi", add_special_tokens=False) == [6023]
    assert tokenizer.decode(tokenizer.encode("<|im_start|>a<|im_end|>"), skip_special_tokens=True) == "a"


def test_roundtrip(tokenizer: PreTrainedTokenizerFast) -> None:
    for text in _corpus():
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_chat_template(tokenizer: PreTrainedTokenizerFast) -> None:
    conversation = [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！有什么可以帮你？"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    expected = (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n你好！有什么可以帮你？<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
    )
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == expected
    prompt = tokenizer.apply_chat_template(conversation[:3], tokenize=False, add_generation_prompt=True)
    assert prompt == expected.split("<|im_start|>assistant\n4")[0] + "<|im_start|>assistant\n"
    with_system = [{"role": "system", "content": "Be brief."}, *conversation[:2]]
    assert tokenizer.apply_chat_template(with_system, tokenize=False).startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    )
    ids = tokenizer.encode(expected, add_special_tokens=False)
    assert ids[0] == 151644 and ids.count(151644) == 5 and ids.count(151645) == 5 and ids[-2:] == [151645, 198]


def test_cache_roundtrip(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    built = build_qwen2_tokenizer(tmp_path)
    [entry] = list(tmp_path.iterdir())  # one keyed directory, no temp leftovers
    assert (entry / "tokenizer.json").is_file()
    cached = build_qwen2_tokenizer(tmp_path)
    text = "缓存 cache 🤖 <|im_end|>\n\n  x"
    assert built.encode(text) == cached.encode(text) == tokenizer.encode(text)
    assert cached.chat_template == tokenizer.chat_template


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


def test_tiny_qwen2_reloads_and_runs(tiny_dir: Path) -> None:
    assert (tiny_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.vocab_size == QWEN2_VOCAB_SIZE and model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert model.generation_config.eos_token_id == [151645, 151643]
    assert model.generation_config.pad_token_id == 151643
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643

    batch = tok(["你好，世界", "hello"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape == (2, batch["input_ids"].shape[1], QWEN2_VOCAB_SIZE)
    assert torch.isfinite(out.logits).all()
    gen = model.generate(**tok("hi", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert gen.shape[1] <= 1 + 3


def test_tiny_qwen2_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    def digest(d: Path) -> str:
        return hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()

    assert digest(build_tiny_qwen2(tmp_path / "again")) == digest(tiny_dir)
    assert digest(build_tiny_qwen2(tmp_path / "other", seed=1)) != digest(tiny_dir)
