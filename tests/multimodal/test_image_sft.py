"""Image SFT on a tiny random-init Qwen2-VL: LLaMA-Factory's mllm_demo, unchanged, trains with LoRA on the
language model only; the adapter reloads with equal logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml

from instill.cli import main
from instill.config import load_config
from instill.data.collate import PadCollator
from instill.data.multimodal import ImageCollator
from instill.train.run import run_training
from tests.multimodal.conftest import MLLM_DEMO

JPG = MLLM_DEMO / "mllm_demo_data" / "1.jpg"


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mllm_lora.yaml"


def mllm_config(model_dir, out_dir):
    """examples/mllm_lora.yaml (LLaMA-Factory's qwen2vl_lora_sft.yaml) with the tiny model, the shared demo data
    and a CPU-sized schedule."""
    overrides = {
        "model_name_or_path": model_dir, "dataset_dir": MLLM_DEMO, "output_dir": out_dir, "cutoff_len": 512,
        "image_max_pixels": 112 * 112, "image_min_pixels": 56 * 56, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "learning_rate": 2e-2, "max_steps": 12, "logging_steps": 3,
        "lr_scheduler_type": "constant", "warmup_ratio": 0, "save_strategy": '"no"', "bf16": False, "lora_rank": 16,
        "seed": 7, "preprocessing_num_workers": 1, "dataloader_num_workers": 0, "plot_loss": False,
    }
    return load_config(EXAMPLE, [f"{k}={v}" for k, v in overrides.items()])


def test_mllm_demo_lora_trains_and_reloads(tiny_qwen2_vl, tmp_path):
    out = tmp_path / "vl-lora"
    result = run_training(mllm_config(tiny_qwen2_vl, out))
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in log if "loss" in r]
    assert train_losses[-1] < train_losses[0] - 0.5, train_losses

    # LoRA sits on the language model only: nothing in the vision tower or projector trains.
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["target_modules"] and not any("visual" in t for t in adapter["target_modules"])
    trained = result.trainer.model.eval()
    assert {n for n, p in trained.named_parameters() if p.requires_grad and "visual" in n} == set()
    assert (out / "preprocessor_config.json").is_file()

    # The saved adapter on a fresh base gives the trained model's logits on an image batch.
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    rows = result.trainer.train_dataset
    media = result.trainer.data_collator.media
    batch = ImageCollator(PadCollator(tokenizer.pad_token_id), media)([rows[0], rows[1]])
    assert batch["pixel_values"].shape[0] > 0 and batch["mm_token_type_ids"].sum() > 0
    reloaded = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_qwen2_vl), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained(**batch).logits, rtol=1e-5, atol=1e-5)

    # instill predict reads LLaMA-Factory-style rows with images (paths beside the input file) and generates.
    shutil.copy(JPG, tmp_path / "photo.jpg")
    rows = [{"messages": [{"role": "user", "content": "<image>Who are they?"}], "images": ["photo.jpg"]},
            {"messages": [{"role": "user", "content": "No picture here."}]}]
    (tmp_path / "ask.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(mllm_config(tiny_qwen2_vl, out).flat()))
    assert main(["predict", str(tmp_path / "run.yaml"), "--input", str(tmp_path / "ask.jsonl"),
                 "--output", str(tmp_path / "pred"), "max_new_tokens=4", "do_sample=false"]) == 0
    predictions = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 and all(isinstance(p["prediction"], str) for p in predictions), predictions

    # instill export merges the adapter into a standalone vision-language model, image processor included.
    merged_dir = tmp_path / "merged"
    assert main(["export", str(tmp_path / "run.yaml"), f"adapter_name_or_path={out}", f"export_dir={merged_dir}",
                 "export_dtype=float32"]) == 0
    assert (merged_dir / "preprocessor_config.json").is_file()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, trained(**batch).logits, rtol=1e-4, atol=1e-4)
