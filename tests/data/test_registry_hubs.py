"""Datasets on the Hugging Face Hub and ModelScope: offline behaviour, errors, load arguments (no network)."""

from __future__ import annotations

import sys
import types

import pytest

from instill.errors import DataError
from tests.data.test_registry import rows_of, write_info


@pytest.fixture
def hub_registry(tmp_path, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "USE_MODELSCOPE_HUB"):
        monkeypatch.delenv(name, raising=False)
    return write_info(
        tmp_path,
        {
            "hf": {"hf_hub_url": "llamafactory/alpaca_en", "subset": "en", "split": "validation", "folder": "data"},
            "both": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en_ms"},
            "ms": {"ms_hub_url": "AI-ModelScope/adgen", "split": "train"},
        },
    )


def fail_if_called(*args, **kwargs):
    raise AssertionError("the hub must not be contacted")


def test_hf_offline_fails_fast_without_network(hub_registry, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fail_if_called)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        rows_of("hf", hub_registry)
    assert str(err.value) == (
        "dataset 'hf': cannot reach the Hugging Face Hub (offline?) to fetch 'llamafactory/alpaca_en'; "
        "download it and point file_name at the local copy"
    )


def test_hf_connection_error_becomes_offline_message(hub_registry, monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        try:
            raise OSError("[Errno -3] Temporary failure in name resolution")
        except OSError as cause:
            raise ConnectionError("Couldn't reach 'llamafactory/alpaca_en' on the Hub") from cause

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match=r"cannot reach the Hugging Face Hub \(offline\?\) to fetch 'llamafactory/alpaca_en'"):
        rows_of("hf", hub_registry)


def test_hf_other_failure_is_one_line(hub_registry, monkeypatch):
    import datasets

    def bad_split(*args, **kwargs):
        raise ValueError('Unknown split "validation". Should be one of [\'train\'].\nmore detail')

    monkeypatch.setattr(datasets, "load_dataset", bad_split)
    with pytest.raises(DataError) as err:
        rows_of("hf", hub_registry)
    assert str(err.value) == (
        "dataset 'hf': cannot load 'llamafactory/alpaca_en' from the Hugging Face Hub: "
        "ValueError: Unknown split \"validation\". Should be one of ['train']."
    )


def test_hf_rows_and_load_arguments(hub_registry, monkeypatch):
    import datasets

    calls = []

    def fake_load(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_list([{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": "a2"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = rows_of("hf", hub_registry)
    assert calls == [("llamafactory/alpaca_en", {"name": "en", "split": "validation", "data_dir": "data", "revision": None})]
    assert rows[1] == ("llamafactory/alpaca_en[validation]:#1", {"instruction": "q2", "output": "a2"})


def test_modelscope_not_installed(hub_registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # makes `import modelscope` fail
    with pytest.raises(DataError, match="'AI-ModelScope/adgen' is on ModelScope but the modelscope package is not installed"):
        rows_of("ms", hub_registry)


def test_modelscope_chosen_by_env_and_loaded(hub_registry, monkeypatch):
    import datasets

    calls = []
    fake = types.ModuleType("modelscope")

    class MsDataset:
        @staticmethod
        def load(name, **kwargs):
            calls.append((name, kwargs))
            return [{"instruction": "q", "output": "a"}]

    fake.MsDataset = MsDataset
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    monkeypatch.setattr(datasets, "load_dataset", fail_if_called)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    rows = rows_of("both", hub_registry)
    assert calls == [("llamafactory/alpaca_en_ms", {"subset_name": None, "data_dir": None, "split": "train"})]
    assert rows == [("llamafactory/alpaca_en_ms[train]:#0", {"instruction": "q", "output": "a"})]
