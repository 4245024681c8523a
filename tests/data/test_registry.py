"""dataset_info.json parsing, dataset lookup and row reading (local files and hubs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instill.data.registry import DatasetSpec, load_registry, read_rows, resolve
from instill.errors import DataError
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA
ALPACA_ZH = SHARED / "llamafactory_alpaca_zh_demo/alpaca_zh_demo.json"
ALPACA_EN = SHARED / "llamafactory_alpaca_en_demo/alpaca_en_demo.json"
IDENTITY = SHARED / "llamafactory_identity/identity.json"
GLAIVE = SHARED / "llamafactory_glaive_toolcall_zh_demo/glaive_toolcall_zh_demo.json"
FUDAN = SHARED / "cls_fudan_derived_msswiftlearn/fudan_news_4class__val.jsonl"

# Entries copied in shape from LLaMA-Factory's data/dataset_info.json (SFT, hub, DPO, KTO, multimodal, pretrain).
LLAMAFACTORY_ENTRIES = {
    "identity": {"file_name": "identity.json"},
    "glaive_toolcall_zh_demo": {
        "file_name": "glaive_toolcall_zh_demo.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "tools": "tools"},
    },
    "mllm_demo": {
        "file_name": "mllm_demo.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    },
    "mllm_video_demo": {
        "file_name": "mllm_video_demo.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "videos": "videos"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    },
    "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en", "om_hub_url": "HaM/alpaca_en"},
    "openorca": {
        "hf_hub_url": "Open-Orca/OpenOrca",
        "ms_hub_url": "AI-ModelScope/OpenOrca",
        "columns": {"prompt": "question", "response": "response", "system": "system_prompt"},
    },
    "adgen_eval": {
        "hf_hub_url": "HasturOfficial/adgen",
        "ms_hub_url": "AI-ModelScope/adgen",
        "split": "validation",
        "columns": {"prompt": "content", "response": "summary"},
    },
    "ultrachat_200k": {
        "hf_hub_url": "HuggingFaceH4/ultrachat_200k",
        "split": "train_sft",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    },
    "llava_1k_en": {
        "hf_hub_url": "BUAADreamer/llava-en-zh-2k",
        "subset": "en",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    },
    "dpo_zh_demo": {
        "file_name": "dpo_zh_demo.json",
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    "kto_en_demo": {
        "file_name": "kto_en_demo.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    },
    "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
    "starcoder_python": {
        "hf_hub_url": "bigcode/starcoderdata",
        "ms_hub_url": "AI-ModelScope/starcoderdata",
        "columns": {"prompt": "content"},
        "folder": "python",
    },
}


def write_info(folder: Path, entries: dict | str) -> Path:
    text = entries if isinstance(entries, str) else json.dumps(entries, ensure_ascii=False, indent=2)
    (folder / "dataset_info.json").write_text(text, encoding="utf-8")
    return folder


def rows_of(name: str, folder: Path, **kwargs) -> list[tuple[str, dict]]:
    (spec,) = resolve([name], folder)
    return list(read_rows(spec, folder, **kwargs))


# ---------------------------------------------------------------- load_registry


def test_llamafactory_dataset_info_loads_unchanged(tmp_path):
    registry = load_registry(write_info(tmp_path, LLAMAFACTORY_ENTRIES))
    assert set(registry) == set(LLAMAFACTORY_ENTRIES)
    identity = registry["identity"]
    assert identity.formatting == "alpaca" and identity.split == "train" and identity.file_name == "identity.json"
    assert identity.columns == {"prompt": "instruction", "query": "input", "response": "output"}
    glaive = registry["glaive_toolcall_zh_demo"]
    assert glaive.columns == {"messages": "conversations", "tools": "tools"}
    assert glaive.tags["role_tag"] == "from" and glaive.tags["function_tag"] == "function_call"
    ultrachat = registry["ultrachat_200k"]
    assert ultrachat.tags["role_tag"] == "role" and ultrachat.tags["observation_tag"] == "observation"
    assert ultrachat.split == "train_sft"
    orca = registry["openorca"]
    assert orca.columns == {"prompt": "question", "query": "input", "response": "response", "system": "system_prompt"}
    assert registry["llava_1k_en"].subset == "en" and registry["starcoder_python"].folder == "python"
    assert registry["dpo_zh_demo"].ranking is True


def test_missing_registry_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset_info\.json: not found"):
        load_registry(tmp_path)


def test_bad_json_names_line_and_column(tmp_path):
    write_info(tmp_path, '{\n  "a": {"file_name": "a.json"},\n  "b": {"file_name": "b.json",}\n}\n')
    with pytest.raises(DataError) as err:
        load_registry(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'dataset_info.json'}:3:")
    assert "invalid JSON" in str(err.value)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"formatting": "alpaca"}, "dataset 'x': no source; set one of file_name, hf_hub_url"),
        ({"file_name": "a.json", "formatting": "sharegtp"}, "unknown formatting 'sharegtp' (did you mean 'sharegpt'?)"),
        ({"file_nme": "a.json", "hf_hub_url": "a/b"}, "unknown key 'file_nme' (did you mean 'file_name'?)"),
        ({"file_name": "a.json", "columns": {"respose": "out"}}, "unknown columns key 'respose' (did you mean 'response'?)"),
        (
            {"file_name": "a.json", "formatting": "sharegpt", "tags": {"role_tg": "role"}},
            "unknown tags key 'role_tg' (did you mean 'role_tag'?)",
        ),
        ({"file_name": "a.json", "columns": {"messages": "m"}}, "columns.messages does not apply to alpaca formatting"),
        ({"file_name": "a.json", "tags": {"role_tag": "role"}}, "'tags' only applies to sharegpt/openai formatting"),
        ({"file_name": "a.json", "num_samples": 0}, "'num_samples' must be a positive integer, got 0"),
        ({"file_name": "a.json", "ranking": "yes"}, "'ranking' must be true or false"),
        ({"file_name": "a.json", "columns": {"prompt": 3}}, "columns.prompt must be a non-empty string, got 3"),
        ("a.json", "entry must be a JSON object, got str"),
    ],
)
def test_bad_entries_name_file_and_entry(tmp_path, entry, message):
    write_info(tmp_path, {"ok": {"file_name": "ok.json"}, "x": entry})
    with pytest.raises(DataError) as err:
        load_registry(tmp_path)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'dataset_info.json'}: dataset 'x': ")
    assert message in text
    assert "\n" not in text


def test_openai_formatting_defaults(tmp_path):
    spec = load_registry(write_info(tmp_path, {"o": {"file_name": "o.jsonl", "formatting": "openai"}}))["o"]
    assert spec.columns == {"messages": "messages", "tools": "tools"}
    assert spec.tags["role_tag"] == "role" and spec.tags["observation_tag"] == "tool"


def test_spec_rejects_unknown_formatting_in_code():
    with pytest.raises(DataError, match="unknown formatting 'chatml'"):
        DatasetSpec(name="x", file_name="a.json", formatting="chatml")


# ---------------------------------------------------------------- resolve


def test_resolve_keeps_order_and_rejects_unknown_names(tmp_path):
    write_info(tmp_path, LLAMAFACTORY_ENTRIES)
    specs = resolve(["glaive_toolcall_zh_demo", "identity"], tmp_path)
    assert [s.name for s in specs] == ["glaive_toolcall_zh_demo", "identity"]
    with pytest.raises(DataError) as err:
        resolve(["identity", "glaive_toolcall_demo"], tmp_path)
    assert "no dataset named 'glaive_toolcall_demo'" in str(err.value)
    assert "nearest: glaive_toolcall_zh_demo" in str(err.value)
    assert [s.name for s in resolve("identity, glaive_toolcall_zh_demo", tmp_path)] == ["identity", "glaive_toolcall_zh_demo"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("dpo_zh_demo", "train it with stage: dpo or rm, not sft/pt"),
        ("kto_en_demo", "train it with stage: kto, not sft/pt"),
        ("mllm_video_demo", "has videos columns; video and audio inputs are not built (images are)"),
    ],
)
def test_resolve_refuses_stages_sft_cannot_run(tmp_path, name, message):
    write_info(tmp_path, LLAMAFACTORY_ENTRIES)
    with pytest.raises(DataError) as err:
        resolve([name], tmp_path)
    assert f"dataset '{name}'" in str(err.value) and message in str(err.value)


# ---------------------------------------------------------------- local files


@pytest.fixture
def shared_registry(tmp_path):
    return write_info(
        tmp_path,
        {
            "alpaca_zh_demo": {"file_name": str(ALPACA_ZH)},
            "alpaca_en_demo": {"file_name": str(ALPACA_EN)},
            "identity": {"file_name": str(IDENTITY)},
            "glaive": {"file_name": str(GLAIVE), "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}},
            "fudan": {"file_name": str(FUDAN), "formatting": "openai"},
            "alpaca_zh_10": {"file_name": str(ALPACA_ZH), "num_samples": 10},
        },
    )


@pytest.mark.parametrize(
    "name, count",
    # alpaca_en_demo.json holds 999 records (its SOURCE.txt agrees), not 1000.
    [("alpaca_zh_demo", 1000), ("alpaca_en_demo", 999), ("identity", 91), ("glaive", 300), ("fudan", 320)],
)
def test_real_files_row_counts(shared_registry, name, count):
    assert len(rows_of(name, shared_registry)) == count


def test_json_array_sources_are_record_indexes(shared_registry):
    rows = rows_of("alpaca_zh_demo", shared_registry)
    assert rows[0][0] == f"{ALPACA_ZH}:#0" and rows[999][0] == f"{ALPACA_ZH}:#999"
    assert rows[1][1]["input"] == "输入：俄克拉荷马城雷霆队，芝加哥公牛队，布鲁克林网队。"


def test_jsonl_sources_are_line_numbers(shared_registry):
    rows = rows_of("fudan", shared_registry)
    assert rows[0][0] == f"{FUDAN}:1" and rows[-1][0] == f"{FUDAN}:320"
    assert rows[0][1]["record_id"] == "Economy-val-0024"


def test_relative_file_name_is_under_dataset_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/a.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    write_info(tmp_path, {"a": {"file_name": "sub/a.jsonl"}})
    assert rows_of("a", tmp_path) == [(f"{tmp_path / 'sub/a.jsonl'}:1", {"instruction": "q", "output": "a"})]


def test_jsonl_bad_json_names_line_after_blank_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "q", "output": "a"}\n\n{"instruction": "q", "output": }\n{"a": 1}\n')
    write_info(tmp_path, {"bad": {"file_name": "bad.jsonl"}})
    (spec,) = resolve(["bad"], tmp_path)
    rows = read_rows(spec, tmp_path)
    assert next(rows)[0] == f"{path}:1"
    with pytest.raises(DataError) as err:
        next(rows)
    assert str(err.value).startswith(f"{path}:3: invalid JSON: Expecting value")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n[1, 2]\n')
    write_info(tmp_path, {"a": {"file_name": "a.jsonl"}})
    with pytest.raises(DataError, match=r"a\.jsonl:2: expected a JSON object \(one row\), got list"):
        rows_of("a", tmp_path)


def test_json_array_bad_json_names_line_and_column(tmp_path):
    (tmp_path / "a.json").write_text('[\n  {"instruction": "q", "output": "a"},\n  {"instruction": "q" "output": "b"}\n]\n')
    write_info(tmp_path, {"a": {"file_name": "a.json"}})
    with pytest.raises(DataError) as err:
        rows_of("a", tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'a.json'}:3:23: invalid JSON: Expecting ',' delimiter")


def test_json_array_element_not_object_names_index(tmp_path):
    (tmp_path / "a.json").write_text('[{"x": 1}, {"x": 2}, "oops"]')
    write_info(tmp_path, {"a": {"file_name": "a.json"}})
    with pytest.raises(DataError, match=r"a\.json:#2: expected a JSON object"):
        rows_of("a", tmp_path)


def test_json_extension_holding_json_lines(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}\n{"x": 2}\n')
    write_info(tmp_path, {"a": {"file_name": "a.json"}})
    assert rows_of("a", tmp_path) == [(f"{tmp_path / 'a.json'}:1", {"x": 1}), (f"{tmp_path / 'a.json'}:2", {"x": 2})]


def test_csv_sources_are_file_lines(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('instruction,input,output\nq1,,a1\n"multi\nline q2",,a2\n\nq3,x,a3\n', encoding="utf-8")
    write_info(tmp_path, {"a": {"file_name": "a.csv"}})
    rows = rows_of("a", tmp_path)
    assert [s for s, _ in rows] == [f"{path}:2", f"{path}:3", f"{path}:6"]
    assert rows[1][1] == {"instruction": "multi\nline q2", "input": "", "output": "a2"}


def test_csv_wrong_field_count_names_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("instruction,input,output\nq1,,a1\nq2,a2\n")
    write_info(tmp_path, {"a": {"file_name": "a.csv"}})
    with pytest.raises(DataError, match=rf"^{path}:3: 2 fields but the header has 3$"):
        rows_of("a", tmp_path)


def test_parquet_sources_are_record_indexes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"instruction": ["q0", "q1", "q2"], "output": ["a0", "a1", "a2"]}), path, row_group_size=2)
    write_info(tmp_path, {"a": {"file_name": "a.parquet"}})
    rows = rows_of("a", tmp_path)
    assert rows == [(f"{path}:#{i}", {"instruction": f"q{i}", "output": f"a{i}"}) for i in range(3)]


def test_corrupt_parquet(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"not parquet at all")
    write_info(tmp_path, {"a": {"file_name": "a.parquet"}})
    with pytest.raises(DataError, match=r"a\.parquet: cannot read parquet"):
        rows_of("a", tmp_path)


def test_folder_reads_data_files_sorted(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "b.jsonl").write_text('{"x": "b1"}\n{"x": "b2"}\n')
    (folder / "a.json").write_text('[{"x": "a0"}]')
    (folder / "README.md").write_text("# not data")
    (folder / ".cache.json").write_text("[{]")
    (folder / "nested").mkdir()
    write_info(tmp_path, {"p": {"file_name": "parts"}})
    rows = rows_of("p", tmp_path)
    assert rows == [
        (f"{folder / 'a.json'}:#0", {"x": "a0"}),
        (f"{folder / 'b.jsonl'}:1", {"x": "b1"}),
        (f"{folder / 'b.jsonl'}:2", {"x": "b2"}),
    ]


def test_folder_without_data_files(tmp_path):
    (tmp_path / "empty").mkdir()
    write_info(tmp_path, {"e": {"file_name": "empty"}})
    with pytest.raises(DataError, match="folder .*empty has no data files"):
        rows_of("e", tmp_path)


@pytest.mark.parametrize(
    "files, entry, message",
    [
        ({}, {"file_name": "nope.json"}, "dataset 'd': file_name '.*nope.json' does not exist"),
        ({"a.txt": "hello\n"}, {"file_name": "a.txt"}, r"a\.txt: unsupported file type '\.txt'"),
        ({"a.jsonl": "\n\n"}, {"file_name": "a.jsonl"}, r"a.jsonl: empty file \(no rows\) \(dataset 'd'\)"),
        ({"a.json": '[{"x": 1}]'}, {"file_name": "a.json", "split": "test"}, "split 'test' only applies to hub datasets"),
        ({}, {"script_url": "my_loader.py"}, "is a loading script"),
        ({}, {"om_hub_url": "HaM/alpaca_en"}, "OpenMind hub is not supported"),
    ],
)
def test_local_source_errors(tmp_path, files, entry, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    write_info(tmp_path, {"d": entry})
    with pytest.raises(DataError, match=message):
        rows_of("d", tmp_path)


def test_script_url_folder_is_read_like_a_local_folder(tmp_path):
    (tmp_path / "scripted").mkdir()
    (tmp_path / "scripted/data.jsonl").write_text('{"x": 1}\n')
    write_info(tmp_path, {"s": {"script_url": "scripted"}})
    assert [r for _, r in rows_of("s", tmp_path)] == [{"x": 1}]


def test_local_file_wins_over_hub_url(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n')
    write_info(tmp_path, {"a": {"file_name": "a.jsonl", "hf_hub_url": "someone/a"}})
    assert [r for _, r in rows_of("a", tmp_path)] == [{"x": 1}]


# ---------------------------------------------------------------- num_samples


def test_num_samples_is_a_seeded_subset_in_file_order(shared_registry):
    rows = rows_of("alpaca_zh_10", shared_registry)
    assert len(rows) == 10
    indexes = [int(s.rsplit("#", 1)[1]) for s, _ in rows]
    assert indexes == sorted(indexes) and len(set(indexes)) == 10
    assert rows == rows_of("alpaca_zh_10", shared_registry)  # deterministic
    other = rows_of("alpaca_zh_10", shared_registry, seed=7)
    assert [s for s, _ in other] != [s for s, _ in rows]
    assert indexes != list(range(10))  # a sample, not the head


def test_num_samples_larger_than_data_upsamples(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(3)))
    write_info(tmp_path, {"a": {"file_name": "a.jsonl", "num_samples": 8}})
    rows = rows_of("a", tmp_path)
    assert len(rows) == 8
    assert [r["i"] for _, r in rows[:3]] == [0, 1, 2]  # every row once, then repeats
    assert {r["i"] for _, r in rows[3:]} <= {0, 1, 2}
