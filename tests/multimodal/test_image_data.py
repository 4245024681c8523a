"""Image rows: placeholder expansion equal to Qwen2-VL's processor, labels -100 on every image token, and
one-line errors for count mismatches, URLs, paths out of dataset_dir, missing files and corrupt images."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import yaml

from instill.cli import main
from instill.config import DataArgs, ModelArgs
from instill.data.dataset import load_examples
from instill.data.multimodal import encode_images
from instill.data.templates import get_template
from instill.data.tokenize import IGNORE_INDEX, EncodeOptions
from instill.errors import DataError
from instill.model.load import load_tokenizer
from instill.model.processor import load_image_inputs
from tests.conftest import write_dataset
from tests.fixtures.qwen2_vl import IMAGE_PAD, VISION_END, VISION_START
from tests.multimodal.conftest import MLLM_DEMO

JPG = MLLM_DEMO / "mllm_demo_data" / "1.jpg"
COLUMNS = {"columns": {"messages": "messages", "images": "images"}, "formatting": "sharegpt",
           "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


@pytest.fixture(scope="module")
def vl(tiny_qwen2_vl):
    args = ModelArgs(model_name_or_path=str(tiny_qwen2_vl), image_max_pixels=112 * 112, image_min_pixels=56 * 56)
    tokenizer = load_tokenizer(args, tiny_qwen2_vl)
    return SimpleNamespace(tokenizer=tokenizer, template=get_template("auto", tokenizer),
                           media=load_image_inputs(args, tiny_qwen2_vl, tokenizer))


def demo_examples():
    return load_examples(["mllm_demo"], DataArgs(dataset_dir=str(MLLM_DEMO)), seed=0)


def test_mllm_demo_expands_like_the_qwen2_vl_processor_and_masks_images(vl):
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

    examples = demo_examples()
    assert len(examples) == 6 and [len(e.images) for e in examples][:2] == [2, 1]
    for example in examples:
        encoded = encode_images(example, vl.template, vl.media, EncodeOptions(1024))
        # Reference: the whole conversation rendered with Qwen2-VL's image markup, each <|image_pad|> expanded by
        # the processor's own replace_image_token, tokenized in one call.
        full = vl.template.render(example.messages).replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")
        from PIL import Image

        pixels = vl.media.processor(images=[Image.open(p).convert("RGB") for p in example.images], return_tensors="pt")
        processor = SimpleNamespace(image_processor=vl.media.processor, image_token="<|image_pad|>")
        parts = full.split("<|image_pad|>")
        text = parts[0] + "".join(Qwen2VLProcessor.replace_image_token(processor, pixels, i) + part
                                  for i, part in enumerate(parts[1:]))
        assert encoded.input_ids == vl.tokenizer(text, add_special_tokens=False)["input_ids"], example.source
        ids = encoded.input_ids
        image_positions = [i for i, t in enumerate(ids) if t in (IMAGE_PAD, VISION_START, VISION_END)]
        assert ids.count(IMAGE_PAD) == int(pixels["image_grid_thw"].prod(-1).sum()) // 4
        assert ids.count(VISION_START) == ids.count(VISION_END) == len(example.images)
        assert all(encoded.labels[i] == IGNORE_INDEX for i in image_positions)
        assert encoded.response_tokens > 0  # the answers are trained
        with_prompt = encode_images(example, vl.template, vl.media, EncodeOptions(1024, train_on_prompt=True))
        assert all(with_prompt.labels[i] == IGNORE_INDEX for i in image_positions)
        assert sum(label != IGNORE_INDEX for label in with_prompt.labels) == len(ids) - len(image_positions)


def bad_rows(tmp_path, images, text="<image>What is it?"):
    rows = [{"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "A picture."}],
             "images": images}]
    return write_dataset(tmp_path / "data", "bad", rows, **COLUMNS)


@pytest.mark.parametrize("images, text, needle", [
    ([str(JPG)], "<image><image>Two?", "bad.json:#0: 2 <image> placeholders but 1 image"),
    ([str(JPG), str(JPG)], "<image>One?", "bad.json:#0: 1 <image> placeholder but 2 images"),
    (["pics/none.jpg"], "<image>?", "bad.json:#0: images[0]: 'pics/none.jpg' not found"),
    (["https://example.com/a.jpg"], "<image>?", "images[0]: 'https://example.com/a.jpg' is a URL"),
    (["../outside.jpg"], "<image>?", "'../outside.jpg' climbs out of dataset_dir"),
    (["corrupt.jpg"], "<image>?", "images[0]: 'corrupt.jpg' is not a readable image"),
])
def test_bad_image_rows_are_one_line_errors(tmp_path, images, text, needle):
    data = bad_rows(tmp_path, images, text)
    (data / "corrupt.jpg").write_bytes(JPG.read_bytes()[:300])  # a truncated JPEG
    shutil.copy(JPG, tmp_path / "outside.jpg")
    with pytest.raises(DataError) as err:
        load_examples(["bad"], DataArgs(dataset_dir=str(data)), seed=0)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_absolute_image_path_outside_dataset_dir_is_read(tmp_path):
    data = bad_rows(tmp_path, [str(JPG)])
    [example] = load_examples(["bad"], DataArgs(dataset_dir=str(data)), seed=0)
    assert example.images == [str(JPG)] and "images" not in example.extras


def test_cli_train_stops_on_a_count_mismatch_in_one_line(tiny_qwen2_vl, tmp_path, capsys):
    data = bad_rows(tmp_path, [str(JPG)], "<image><image>Two?")
    config = tmp_path / "vl.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_qwen2_vl), "dataset": "bad",
                                      "dataset_dir": str(data), "output_dir": str(tmp_path / "out")}))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json:#0: 2 <image> placeholders but 1 image" in err[0], err


def test_video_entries_are_refused_in_one_line(tmp_path):
    with pytest.raises(DataError) as err:
        load_examples(["mllm_video_demo"], DataArgs(dataset_dir=str(MLLM_DEMO)), seed=0)
    assert "dataset 'mllm_video_demo' has videos columns" in str(err.value) and "torchvision" in str(err.value)


def test_torchvision_if_present_imports():
    """The package index's only torchvision build is a CUDA one; beside this CPU torch it fails at import, and
    transformers, which believes it present, then fails to import even text models (README: never install it)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        import torchvision.ops  # noqa: F401  (raises on the CUDA build)
    from transformers import Qwen2ForCausalLM, Qwen2VLForConditionalGeneration  # noqa: F401
