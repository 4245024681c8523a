"""`instill doctor` on a healthy config and on each planted fault (tiny Qwen2, offline)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instill.cli import main
from instill.doctor import environment, resources
from instill.doctor.environment import Device, precision_check
from instill.doctor.run import diagnose
from instill.doctor.table import FAIL, PASS, SKIP, WARN, Check, exit_code, render
from tests.conftest import SMOLLM2, write_dataset
from tests.train.test_sft import FACTS as SFT_FACTS

ROOT = Path(__file__).resolve().parents[1]
FACTS = SFT_FACTS + [
    ("Which road leads north?", "The Old Salt Road."),
    ("谁住在山上？", "一位老木匠。"),
    ("How far is the sea?", "Two days on foot."),
    ("What is the ferry called?", "The Gull."),
]


@pytest.fixture()
def data_dir(tmp_path) -> Path:
    rows = [{"instruction": q, "input": "", "output": a} for q, a in FACTS]
    return write_dataset(tmp_path / "data", "memo", rows)


def write_config(path: Path, model_dir: Path, data_dir: Path, out_dir: Path, **keys) -> Path:
    raw = {
        "model_name_or_path": str(model_dir), "template": "auto", "dataset": "memo", "dataset_dir": str(data_dir),
        "output_dir": str(out_dir), "cutoff_len": 64, "per_device_train_batch_size": 2, "learning_rate": 1e-4,
        "max_steps": 2, "logging_steps": 1, "save_strategy": "no", "lora_rank": 4, "report_to": "none",
    }
    raw.update(keys)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def run(config: Path, **kwargs) -> tuple[list[Check], str]:
    out = io.StringIO()
    checks = diagnose(str(config), generate=False, out=out, **kwargs)
    return checks, out.getvalue()


def row(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, (name, [c.name for c in checks])
    return found[0]


def problems(checks: list[Check]) -> list[str]:
    return [f"{c.status} {c.name}: {c.detail}" for c in checks if c.status in (WARN, FAIL)]


def test_healthy_config_all_pass(tiny_qwen2, data_dir, tmp_path):
    checks, printed = run(write_config(tmp_path / "ok.yaml", tiny_qwen2, data_dir, tmp_path / "out"))
    assert exit_code(checks) == 0, problems(checks)
    assert {c.name for c in checks if c.status == SKIP} == {"saved template", "stops"}  # nothing trained; --no-generate
    for name in ("versions", "device", "precision", "threads", "memory", "disk", "template", "prefix-stable",
                 "stop token", "eos / pad", "rows memo", "cutoff memo", "learning rate", "batch"):
        assert row(checks, name).status == PASS, name
    assert "'<|im_end|>' (id 151645) is one token and trained" in row(checks, "stop token").detail
    # The sample as training sees it: only the answer and its end-of-turn token are trained.
    assert "⟦Coral City.<|im_end|>\n⟧" in printed
    trained = [part.split("⟧")[0] for part in printed.split("⟦")[1:]]
    assert trained and all(t.rstrip("\n").endswith("<|im_end|>") for t in trained)
    assert "What is the capital" not in "".join(trained)


def test_stop_token_not_a_token_of_this_tokenizer(tiny_qwen2, data_dir, tmp_path):
    # llama3's end of turn `<|eot_id|>` is not a Qwen2 token: it is trained as text pieces and nothing stops.
    config = write_config(tmp_path / "c.yaml", tiny_qwen2, data_dir, tmp_path / "out", template="llama3")
    checks, _ = run(config)
    stop = row(checks, "stop token")
    assert stop.status == FAIL and "splits into" in stop.detail and "<|eot_id|>" in stop.detail
    assert "template: auto" in stop.fix or "auto" in stop.fix
    assert exit_code(checks) == 2


def test_template_that_never_ends_a_turn(tiny_qwen2, data_dir, tmp_path):
    # A hand-written template that writes <|im_end|> at the start of the *next* turn: the last answer never ends.
    model = tmp_path / "model"
    shutil.copytree(tiny_qwen2, model, ignore=shutil.ignore_patterns("*.safetensors"))
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if not loop.first %}<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n"
        "{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|im_end|>\n<|im_start|>assistant\n{% endif %}")
    checks, _ = run(write_config(tmp_path / "c.yaml", model, data_dir, tmp_path / "out"))
    template = row(checks, "template")
    assert template.status == FAIL and "never learns to stop" in template.detail
    assert "set template:" in template.fix
    assert exit_code(checks) == 2


@pytest.fixture(scope="module")
def finished_run(tiny_qwen2, tmp_path_factory) -> tuple[Path, Path]:
    """A real (tiny) training run through the CLI: (config, output_dir)."""
    base = tmp_path_factory.mktemp("finished")
    data = write_dataset(base / "data", "memo", [{"instruction": q, "input": "", "output": a} for q, a in FACTS])
    config = write_config(base / "run.yaml", tiny_qwen2, data, base / "out")
    assert main(["train", str(config)]) == 0
    return config, base / "out"


def test_finished_run_template_matches(finished_run):
    config, out = finished_run
    checks, _ = run(config)
    assert row(checks, "saved template").status == PASS, problems(checks)


def test_finished_run_with_edited_template_fails(finished_run, tmp_path):
    config, out = finished_run
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    jinja = edited / "chat_template.jinja"
    assert jinja.is_file()
    # Someone "fixes" the default system prompt after training.
    text = jinja.read_text()
    assert "You are Qwen, created by Alibaba Cloud." in text
    jinja.write_text(text.replace("You are Qwen, created by Alibaba Cloud.", "You are Tern."))
    checks, _ = run(config, output_dir=str(edited))
    saved = row(checks, "saved template")
    assert saved.status == FAIL and "renders differently" in saved.detail and "You are Tern" in saved.detail
    assert "copy the base model's chat template" in saved.fix
    assert exit_code(checks) == 2


def test_finished_run_trained_with_another_template_name(finished_run):
    config, out = finished_run
    checks, _ = run(config, overrides=["template=qwen"])
    name = row(checks, "template name")
    assert name.status == FAIL and "template: auto" in name.fix


def test_bf16_on_a_gpu_without_it(tiny_qwen2, data_dir, tmp_path, monkeypatch):
    v100 = Device("cuda", "Tesla V100-SXM2-32GB", bf16=False, fp16=True, detail="compute capability 7.0, 32 GiB",
                  memory_free=30 * 2**30)
    monkeypatch.setattr(environment, "probe_device", lambda: v100)
    checks, _ = run(write_config(tmp_path / "c.yaml", tiny_qwen2, data_dir, tmp_path / "out", bf16=True))
    precision = row(checks, "precision")
    assert precision.status == FAIL and "V100" in precision.detail and "fp16: true" in precision.fix
    assert "free memory on Tesla V100" in row(checks, "memory").detail  # VRAM, not RAM, on a GPU


def test_bf16_on_a_cpu_without_it():
    old_cpu = Device("cpu", "Old CPU", bf16=False, fp16=False, detail="no AMX or AVX512-BF16 (AVX2)")
    check = precision_check(old_cpu, bf16=True, fp16=False)
    assert check.status == FAIL and "remove bf16" in check.fix
    amx = Device("cpu", "Xeon", bf16=True, fp16=False, detail="AMX, AVX512-BF16")
    assert precision_check(amx, bf16=True, fp16=False).status == PASS
    assert precision_check(amx, bf16=False, fp16=True).status == FAIL  # fp16 needs CUDA


def test_cpu_bf16_probe_reports_flags_and_timing():
    native, detail = environment._cpu_bf16()
    assert "fp32" in detail and ("AMX" in detail or "AVX512-BF16" in detail or not native or "faster" in detail)


def test_memory_estimate_above_available_ram(tiny_qwen2, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "available_ram", lambda: 64 * 2**20)
    checks, _ = run(write_config(tmp_path / "c.yaml", tiny_qwen2, data_dir, tmp_path / "out"))
    memory = row(checks, "memory")
    assert memory.status == WARN and "estimate" in memory.detail and "64 MiB of available RAM" in memory.detail
    assert "per_device_train_batch_size" in memory.fix and "gradient_checkpointing" in memory.fix
    assert exit_code(checks) == 1


def test_memory_estimate_terms(tiny_qwen2, tmp_path):
    from transformers import AutoModelForCausalLM

    from instill.config import build_config
    from instill.model.adapters import apply_method, count_parameters

    cpu = Device("cpu", "cpu", True, False, "")
    config = build_config({"model_name_or_path": str(tiny_qwen2), "lora_rank": 8, "per_device_train_batch_size": 4})
    shape = resources.model_shape(tiny_qwen2, config, 10)
    # The weightless count equals the count on the real model with the method applied.
    real = apply_method(AutoModelForCausalLM.from_pretrained(tiny_qwen2), config.method)
    assert (shape.trainable, shape.with_method) == count_parameters(real)
    plain = resources.estimate_memory(shape, config, 64, cpu)
    recompute = config.model_copy(update={"train": config.train.model_copy(update={"gradient_checkpointing": True})})
    checkpointed = resources.estimate_memory(shape, recompute, 64, cpu)
    assert checkpointed.activations < plain.activations and checkpointed.weights == plain.weights
    deep = dataclasses.replace(shape, layers=30)  # checkpointing keeps one layer's input per layer, not all of it
    assert (resources.estimate_memory(deep, recompute, 64, cpu).activations
            < resources.estimate_memory(deep, config, 64, cpu).activations / 5)
    assert resources.estimate_memory(shape, config, 128, cpu).logits == 2 * plain.logits
    full = config.model_copy(update={"method": config.method.model_copy(update={"finetuning_type": "full"})})
    full_shape = resources.model_shape(tiny_qwen2, full, 10)
    assert full_shape.trainable == full_shape.base_params == shape.base_params
    assert resources.estimate_memory(full_shape, full, 64, cpu).trainable == full_shape.trainable * 16


def test_bad_rows_fail_with_file_and_line(tiny_qwen2, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    lines = [json.dumps({"instruction": q, "input": "", "output": a}, ensure_ascii=False) for q, a in FACTS]
    lines[2] = '{"instruction": "broken", "output": '  # line 3: not JSON
    lines[5] = json.dumps({"instruction": "no answer", "input": "", "output": ""})  # line 6: empty response
    (data / "memo.jsonl").write_text("\n".join(lines) + "\n")
    (data / "dataset_info.json").write_text(json.dumps({"memo": {"file_name": "memo.jsonl"}}))
    checks, _ = run(write_config(tmp_path / "c.yaml", tiny_qwen2, data, tmp_path / "out"))
    rows = row(checks, "rows memo")
    assert rows.status == FAIL and "2 of 12 rows are bad" in rows.detail
    assert f"{data / 'memo.jsonl'}:3: invalid JSON" in rows.detail and f"{data / 'memo.jsonl'}:6:" in rows.detail
    assert "instill data check" in rows.fix


def test_answers_lost_to_cutoff(tiny_qwen2, tmp_path):
    rows = [{"instruction": "Summarise: " + "word " * 60, "input": "", "output": "A long answer " * 20}] * 4
    data = write_dataset(tmp_path / "data", "memo", rows)
    checks, _ = run(write_config(tmp_path / "c.yaml", tiny_qwen2, data, tmp_path / "out", cutoff_len=32))
    cutoff = row(checks, "cutoff memo")
    assert cutoff.status == WARN and "answer shortened in 4" in cutoff.detail and "raise cutoff_len" in cutoff.fix


def test_config_smells(tiny_qwen2, data_dir, tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_qwen2, data_dir, tmp_path / "out", learning_rate=0.5,
                          val_size=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8)
    checks, _ = run(config)
    lr = row(checks, "learning rate")
    assert lr.status == WARN and "far above" in lr.detail and "1e-3" in lr.fix
    val = row(checks, "val_size")
    assert val.status == WARN and "holds out 1 of 12" in val.detail
    batch = row(checks, "batch")
    assert batch.status == WARN and "= 32" in batch.detail and "has 11" in batch.detail


def test_bf16_and_fp16_together_fail_at_the_config(tiny_qwen2, data_dir, tmp_path):
    checks, _ = run(write_config(tmp_path / "c.yaml", tiny_qwen2, data_dir, tmp_path / "out", bf16=True, fp16=True))
    config = row(checks, "config")
    assert config.status == FAIL and "bf16 and fp16 are both true" in config.detail


def test_reasoning_template_without_thinking_data(tiny_qwen2, data_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_qwen2, model, ignore=shutil.ignore_patterns("*.safetensors"))
    # Qwen3-style: answers without reasoning get an empty <think></think> block in front.
    (model / "chat_template.jinja").write_text(
        "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' }}"
        "{%- if message.role == 'assistant' and '<think>' not in message.content %}"
        "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{{- message.content + '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
    jinja = model / "chat_template.jinja"
    assert "<think>" in jinja.read_text()
    checks, _ = run(write_config(tmp_path / "c.yaml", model, data_dir, tmp_path / "out"))
    assert row(checks, "prefix-stable").status == PASS and row(checks, "stop token").status == PASS
    reasoning = row(checks, "reasoning")
    assert reasoning.status == WARN and "<think>" in reasoning.detail
    thinking = [{"instruction": q, "input": "", "output": f"<think>recall</think>{a}"} for q, a in FACTS]
    write_dataset(data_dir, "memo", thinking)
    checks, _ = run(write_config(tmp_path / "c.yaml", model, data_dir, tmp_path / "out"))
    assert row(checks, "reasoning").status == PASS


def test_table_and_exit_codes():
    checks = [Check(PASS, "environment", "a", "fine"), Check(WARN, "data", "b", "hmm", "do x")]
    assert exit_code(checks) == 1 and exit_code(checks[:1]) == 0
    assert exit_code([*checks, Check(FAIL, "config", "c", "bad", "do y")]) == 2
    assert exit_code([Check(SKIP, "generation", "d", "skipped")]) == 0
    text = render(checks)
    assert text.splitlines()[1].startswith("WARN  data") and text.splitlines()[2].strip() == "fix: do x"
    assert "\x1b[" not in text and "\x1b[33mWARN" in render(checks, colour=True)


def test_cli_prints_table_and_exit_status(tiny_qwen2, data_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_qwen2, data_dir, tmp_path / "out", learning_rate=0.5)
    assert main(["doctor", str(config), "--no-generate"]) == 1
    out = capsys.readouterr().out
    assert "[instill] doctor: " in out and "WARN  config" in out and "fix: try learning_rate" in out
    assert main(["doctor", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"instill: error: config file not found: {tmp_path / 'missing.yaml'}"


@pytest.mark.slow
def test_demo_config_on_smollm2_all_pass_and_stops(tmp_path):
    """The demo config is healthy (bf16 off: not every CPU has it; one thread: not every machine has two),
    and SmolLM2 stops at <|im_end|>."""
    run_ = subprocess.run(
        [sys.executable, "-m", "instill.cli", "doctor", str(ROOT / "examples/demo_lora.yaml"), "bf16=false", "torch_num_threads=1",
         f"output_dir={tmp_path / 'demo'}", f"dataset_dir={ROOT / 'examples/data'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert run_.returncode == 0, run_.stdout[-3000:] + run_.stderr[-3000:]
    assert SMOLLM2 in run_.stdout
    stops = [line for line in run_.stdout.splitlines() if line.startswith("PASS  generation")]
    assert stops and "stopped at '<|im_end|>'" in stops[0]
    assert not any(line.startswith(("WARN", "FAIL")) for line in run_.stdout.splitlines())


def test_exported_model_that_does_not_stop(finished_run, tmp_path):
    config, out = finished_run
    export_dir = tmp_path / "merged"
    assert main(["export", str(config), f"adapter_name_or_path={out}", f"export_dir={export_dir}"]) == 0
    checks, _ = run(config, overrides=[f"export_dir={export_dir}"])
    assert row(checks, "exported template").status == PASS and row(checks, "export stop").status == PASS
    generation = json.loads((export_dir / "generation_config.json").read_text())
    generation["eos_token_id"] = 151643  # <|endoftext|> only: plain `generate` runs past <|im_end|>
    (export_dir / "generation_config.json").write_text(json.dumps(generation))
    checks, _ = run(config, overrides=[f"export_dir={export_dir}"])
    stop = row(checks, "export stop")
    assert stop.status == FAIL and "'<|im_end|>' (id 151645)" in stop.detail and "151645" in stop.fix


def test_generation_that_never_stops_fails_for_a_tuned_model(finished_run):
    config, out = finished_run
    checks = diagnose(str(config), generate=True, out=io.StringIO())
    stops = row(checks, "stops")
    # A random-init model trained two steps does not produce <|im_end|>: the check must say so.
    assert stops.status == FAIL and "the tuned model wrote 256 tokens" in stops.detail and "template" in stops.fix


def test_environment_rows(tiny_qwen2, data_dir, tmp_path, monkeypatch):
    real_version = environment.version
    monkeypatch.setattr(environment, "version", lambda name: "4.40.0" if name == "transformers" else real_version(name))
    assert environment.versions_check().status == FAIL
    npu = Device("npu", "Ascend 910B", True, True, "Ascend NPU")
    assert environment.device_check(npu).status == WARN and "CPU" in environment.device_check(npu).detail
    assert precision_check(npu, bf16=False, fp16=True).status == FAIL  # the run goes to the CPU
    config = write_config(tmp_path / "c.yaml", tiny_qwen2, data_dir, tmp_path / "out",
                          torch_num_threads=environment.available_cores() + 2)
    monkeypatch.setattr(resources.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    checks, _ = run(config)
    assert row(checks, "threads").status == WARN and "torch_num_threads:" in row(checks, "threads").fix
    assert row(checks, "disk").status == FAIL and "save_total_limit" in row(checks, "disk").fix


def test_mask_view_in_colour(tiny_qwen2, qwen2_tokenizer):
    from instill.config import build_config
    from instill.data.templates import get_template
    from instill.doctor.template import PROBE, mask_view

    config = build_config({"model_name_or_path": str(tiny_qwen2)})
    view = mask_view(PROBE, get_template("auto", qwen2_tokenizer), config, colour=True)
    assert "\x1b[1;32mI am a helpful assistant.<|im_end|>\n\x1b[0m" in view
    assert "\x1b[2m<|im_start|>system" in view and "⟦" not in view


def test_mask_view_is_trainings_when_data_may_spell_special_tokens(tiny_qwen2, qwen2_tokenizer):
    """With allow_special_tokens_in_data the doctor shows the ids training trains (it once escaped them, so a
    dozen typed <|im_end|> took 60 tokens, not 12, and the view cut an answer training keeps whole)."""
    from instill.config import build_config
    from instill.data.dataset import tokenize_examples
    from instill.data.example import Example
    from instill.data.templates import get_template
    from instill.doctor.template import mask_view, render_mask

    config = build_config({"model_name_or_path": str(tiny_qwen2), "cutoff_len": 64,
                           "allow_special_tokens_in_data": True})
    template = get_template("auto", qwen2_tokenizer)
    example = Example([{"role": "user", "content": "Say it"},
                       {"role": "assistant", "content": "<|im_end|>" * 12 + " done"}], source="typed")
    row = tokenize_examples("train", [example], config.data, template).rows[0]
    view = mask_view(example, template, config, colour=False)
    assert view == render_mask(row["input_ids"], row["labels"], qwen2_tokenizer, colour=False)
    assert view.endswith("<|im_end|>" * 12 + " done<|im_end|>\n⟧")


def test_template_that_is_not_prefix_stable(tiny_qwen2, data_dir, tmp_path, capsys):
    # Marks only the *last* answer: rendering a shorter conversation is not a prefix of the longer one.
    model = tmp_path / "model"
    shutil.copytree(tiny_qwen2, model, ignore=shutil.ignore_patterns("*.safetensors"))
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% if loop.last and m['role'] == 'assistant' %} [end]{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = write_config(tmp_path / "c.yaml", model, data_dir, tmp_path / "out")
    assert main(["doctor", str(config), "--no-generate"]) == 2  # the table is printed, no traceback
    out = capsys.readouterr().out
    assert re.search(r"^FAIL\s+template\s+prefix-stable\s.*not prefix-stable", out, re.M), out


def test_memory_estimate_counts_a_frozen_reference_copy(tiny_qwen2):
    """DPO with full fine-tuning keeps a frozen copy of the model (trl's reference); LoRA disables the adapter
    instead, and SimPO needs no reference."""
    from instill.config import build_config

    cpu = Device("cpu", "cpu", True, False, "")

    def reference(**keys):
        config = build_config({"model_name_or_path": str(tiny_qwen2), **keys})
        shape = resources.model_shape(tiny_qwen2, config, 10)
        estimate = resources.estimate_memory(shape, config, 64, cpu)
        return shape, estimate

    shape, estimate = reference(stage="dpo", finetuning_type="full")
    assert shape.reference == shape.base_params * 4 and "frozen reference copy" in estimate.parts()
    assert estimate.total == pytest.approx(reference(stage="sft", finetuning_type="full")[1].total + shape.reference)
    assert reference(stage="dpo", finetuning_type="lora")[0].reference == 0
    assert reference(stage="dpo", finetuning_type="full", pref_loss="simpo")[0].reference == 0
    assert reference(stage="sft", finetuning_type="full", use_asft_loss=True)[0].reference > 0
