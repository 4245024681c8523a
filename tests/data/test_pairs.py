"""Preference and KTO rows: LLaMA-Factory's demo files load unchanged, ids equal SFT's, pair truncation,
and every bad row is one file:row error."""

from __future__ import annotations

import pytest

from instill.config import DataArgs
from instill.data.dataset import prepare_datasets
from instill.data.example import Example
from instill.data.pairs import PairItem, closing_tokens, encode_items, iter_items, truncate
from instill.data.templates import get_template
from instill.data.tokenize import EncodeOptions, encode
from instill.errors import DataError
from tests.conftest import SHARED_DATA, write_dataset

# As LLaMA-Factory's data/dataset_info.json writes them.
LF_PREFERENCE = {
    "dpo_zh_demo": {
        "file_name": str(SHARED_DATA / "llamafactory_dpo_zh_demo/dpo_zh_demo.json"),
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    "kto_en_demo": {
        "file_name": str(SHARED_DATA / "llamafactory_kto_en_demo/kto_en_demo.json"),
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    },
}
ALPACA_RANKING = {"ranking": True, "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                               "rejected": "rejected"}}


@pytest.fixture(scope="module")
def qwen(qwen2_tokenizer):
    return get_template("qwen", qwen2_tokenizer)


def _info(tmp_path, entries):
    import json

    (tmp_path / "dataset_info.json").write_text(json.dumps(entries))
    return str(tmp_path)


def test_shared_demo_files_load_unchanged_and_ids_equal_sft(qwen, tmp_path):
    tok, end = qwen.tokenizer, "<|im_end|>\n"
    dataset_dir = _info(tmp_path, LF_PREFERENCE)
    pairs = list(iter_items(["dpo_zh_demo"], dataset_dir, None, 1, "pairs"))
    assert len(pairs) == 300 and sum(p.chosen.messages[0]["role"] == "system" for p in pairs) == 64
    columns, summary = encode_items(pairs[:20], qwen, EncodeOptions(100_000), "pairs")
    assert summary.kept == 20 and summary.truncated == 0
    for item, prompt, chosen, rejected in zip(pairs, columns["prompt_ids"], columns["chosen_ids"],
                                              columns["rejected_ids"]):
        sft = encode(item.chosen, qwen, EncodeOptions(100_000))
        assert prompt + chosen == sft.input_ids  # the SFT ids of the chosen conversation, exactly
        assert [t for t in sft.labels if t != -100] == chosen  # and the answer is what SFT trains
        assert prompt + rejected == encode(item.rejected, qwen, EncodeOptions(100_000)).input_ids
        assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
        assert tok.decode(chosen).endswith(end) and tok.decode(rejected).endswith(end)

    kto = list(iter_items(["kto_en_demo"], dataset_dir, None, 1, "kto"))
    assert len(kto) == 300 and sum(k.label for k in kto) == 150
    columns, _ = encode_items(kto[:5], qwen, EncodeOptions(100_000), "kto")
    assert columns["label"] == [k.label for k in kto[:5]]
    assert all(tok.decode(c).endswith(end) for c in columns["completion_ids"])


def test_pair_truncation_cuts_the_prompt_first_and_keeps_end_of_turn(qwen, tmp_path):
    closing = closing_tokens(qwen)
    assert closing == 2  # <|im_end|> and the newline after it
    prompt, answers = list(range(100)), [list(range(1000, 1010)), list(range(2000, 2030))]
    cut_prompt, cut_answers, truncated, answer_cut = truncate(prompt, answers, 64, closing)
    assert truncated and not answer_cut and cut_answers == answers and len(cut_prompt) == 34
    assert cut_prompt[:17] == prompt[:17] and cut_prompt[-17:] == prompt[-17:]  # the middle goes
    # Both long: the longer answer keeps its share (SFT's infer_seqlen) and its two closing tokens.
    cut_prompt, (short, long_), _, answer_cut = truncate(prompt, [list(range(10)), list(range(200))], 64, closing)
    assert answer_cut and short == list(range(10)) and len(long_) == 42 and long_[-2:] == [198, 199]
    assert len(cut_prompt) + len(long_) == 64

    rows = [{"instruction": "q " * 200, "input": "", "chosen": "yes " * 5, "rejected": "no " * 300}]
    write_dataset(tmp_path, "long", rows, **ALPACA_RANKING)
    train, _ = prepare_datasets(DataArgs(dataset=["long"], dataset_dir=str(tmp_path), cutoff_len=64), qwen, 1,
                                "pairs")
    row = train.rows[0]
    assert len(row["prompt_ids"]) + len(row["rejected_ids"]) <= 64
    assert qwen.tokenizer.decode(row["rejected_ids"]).endswith("<|im_end|>\n")
    assert train.summary.truncated == 1 and train.summary.response_cut == 1


GOOD = {"instruction": "Pick a colour", "input": "", "chosen": "Blue.", "rejected": "Red."}
SHAREGPT_RANKING = {"ranking": True, "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}
SHAREGPT_PAIR = {"conversations": [{"from": "human", "value": "hi"}], "chosen": {"from": "gpt", "value": "Hello."},
                 "rejected": {"from": "gpt", "value": "Go away."}}
KTO_ENTRY = {"formatting": "sharegpt", "columns": {"messages": "messages", "kto_tag": "label"}}
KTO_ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "label": True}


@pytest.mark.parametrize("good, bad, kind, entry, message", [
    (GOOD, {k: v for k, v in GOOD.items() if k != "rejected"}, "pairs", ALPACA_RANKING, "missing column 'rejected'"),
    (GOOD, {**GOOD, "rejected": "Blue."}, "pairs", ALPACA_RANKING, "the chosen and rejected answers are identical"),
    (GOOD, {**GOOD, "chosen": "  "}, "pairs", ALPACA_RANKING, "empty answer in column 'chosen'"),
    (SHAREGPT_PAIR, {**SHAREGPT_PAIR, "rejected": {"from": "gpt", "value": ""}}, "pairs", SHAREGPT_RANKING,
     "empty answer in column 'rejected'"),
    (KTO_ROW, {**KTO_ROW, "label": "yes"}, "kto", KTO_ENTRY, "column 'label' (kto_tag) must be true or false, got 'yes'"),
])
def test_bad_rows_are_one_line_with_their_source(qwen, tmp_path, good, bad, kind, entry, message):
    write_dataset(tmp_path, "bad", [good, bad], **entry)
    with pytest.raises(DataError) as err:
        prepare_datasets(DataArgs(dataset=["bad"], dataset_dir=str(tmp_path), cutoff_len=64), qwen, 1, kind)
    text = str(err.value)
    assert message in text and "bad.json:#1:" in text and "\n" not in text  # the second record: file and row


@pytest.mark.parametrize("row, entry, kind, message", [
    (GOOD, ALPACA_RANKING, "conversation", "is preference data (ranking: true): train it with stage: dpo or rm"),
    (KTO_ROW, KTO_ENTRY, "conversation", "is KTO data (columns.kto_tag): train it with stage: kto"),
    ({"instruction": "hi", "input": "", "output": "yo"}, {}, "pairs", "is not preference data"),
    (GOOD, ALPACA_RANKING, "kto", "is not KTO data"),
])
def test_a_dataset_given_to_the_wrong_stage(qwen, tmp_path, row, entry, kind, message):
    write_dataset(tmp_path, "data", [row], **entry)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_datasets(DataArgs(dataset=["data"], dataset_dir=str(tmp_path), cutoff_len=64), qwen, 1, kind)


def test_pairs_split_prompt_from_sft_example(qwen):
    """Tokens are shared up to the answer even when the answers start differently."""
    base = [{"role": "user", "content": "Say it"}]
    items = [PairItem(Example(base + [{"role": "assistant", "content": "Yes."}]),
                      Example(base + [{"role": "assistant", "content": "No."}]))]
    columns, _ = encode_items(items, qwen, EncodeOptions(64), "pairs")
    assert qwen.tokenizer.decode(columns["chosen_ids"][0]) == "Yes.<|im_end|>\n"
    assert qwen.tokenizer.decode(columns["rejected_ids"][0]) == "No.<|im_end|>\n"


def test_doctor_checks_preference_rows(qwen, tmp_path):
    from instill.config import build_config
    from instill.doctor.data import data_checks

    write_dataset(tmp_path, "prefs", [GOOD, GOOD], **ALPACA_RANKING)
    write_dataset(tmp_path, "bad", [GOOD, {**GOOD, "rejected": "Blue."}], **ALPACA_RANKING)
    for name, status, detail in (("prefs", "PASS", "2 preference pairs read from prefs"),
                                 ("bad", "FAIL", "bad.json:#1: the chosen and rejected answers are identical")):
        config = build_config({"model_name_or_path": "m", "stage": "dpo", "dataset": name,
                               "dataset_dir": str(tmp_path)})
        (check,) = data_checks(config, qwen).checks
        assert check.status == status and detail in check.detail
