"""media_dir (LLaMA-Factory's key): relative image paths are found there instead of in dataset_dir."""

from __future__ import annotations

import shutil

import pytest

from instill.config import DataArgs
from instill.data.dataset import load_examples
from instill.errors import DataError
from tests.conftest import SHARED_DATA, write_dataset

IMAGE = SHARED_DATA / "llamafactory_mllm_demo" / "mllm_demo_data" / "2.jpg"


@pytest.fixture()
def split_dirs(tmp_path):
    data, media = tmp_path / "data", tmp_path / "media"
    (media / "pics").mkdir(parents=True)
    shutil.copy(IMAGE, media / "pics" / "cat.jpg")
    row = {"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "A cat."}],
           "images": ["pics/cat.jpg"]}
    entry = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
    write_dataset(data, "pics", [row], **entry)
    write_dataset(data, "climb", [{**row, "images": ["../cat.jpg"]}], **entry)
    return data, media


def test_relative_images_are_found_in_media_dir(split_dirs):
    data, media = split_dirs
    [example] = load_examples(["pics"], DataArgs(dataset=["pics"], dataset_dir=str(data), media_dir=str(media)), 0)
    assert example.images == [str((media / "pics" / "cat.jpg").resolve())]


def test_without_media_dir_they_are_looked_for_in_dataset_dir(split_dirs):
    data, _ = split_dirs
    with pytest.raises(DataError, match="'pics/cat.jpg' not found"):
        load_examples(["pics"], DataArgs(dataset=["pics"], dataset_dir=str(data)), 0)


def test_a_path_climbing_out_names_media_dir(split_dirs):
    data, media = split_dirs
    with pytest.raises(DataError, match="'../cat.jpg' climbs out of media_dir"):
        load_examples(["climb"], DataArgs(dataset=["climb"], dataset_dir=str(data), media_dir=str(media)), 0)
