"""A training run, whatever the stage: config -> model + data -> Trainer -> outputs, top to bottom.

Stages (`train/stages.py`) differ in the data they read and the Trainer they build; everything
else lives here once. output_dir receives: the adapter (or full weights) as safetensors, the
tokenizer with the chat template it was trained with, run_config.yaml (the fully resolved config),
data_summary.json, trainer_log.jsonl, all_results.json, run_info.json, report.html and, with
plot_loss, training_loss.png.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.trainer_callback import ProgressCallback

from instill.config import TRAINER_PASSTHROUGH, RunConfig, TrainArgs, check_training, save_config
from instill.console import say
from instill.data.dataset import TokenizedSet, iterable_dataset, prepare_datasets
from instill.data.templates import TemplateChoice, get_template
from instill.errors import ConfigError
from instill.evaluate.runner import task_metrics_callback
from instill.hub import check_hub_upload, hub_token_env, resolve_model_args
from instill.model.adapters import apply_method, check_adapters, count_parameters, describe_parameters
from instill.model.footprint import check_free_disk, checkpoint_bytes
from instill.model.load import Precision, check_precision, check_speed_flags, device_type, load_model, load_tokenizer
from instill.model.lora_dropout import fuse_lora_dropout
from instill.model.processor import load_image_inputs
from instill.model.rope import save_rope, training_rope
from instill.model.vocab import embedding_modules
from instill.ranks import is_main, world_size
from instill.ranks import start as start_ranks
from instill.report.data_summary import write_data_summary
from instill.report.html import try_write_report
from instill.report.plots import plot_loss, plot_rewards
from instill.stage_facts import eval_losses
from instill.tracking.compute import set_torch_threads
from instill.tracking.trackers import check_trackers, finish_run, log_summary, tracker_callbacks
from instill.train.callbacks import (
    AdaLoraCallback,
    JsonlLogCallback,
    LogLineProgress,
    ModuleTimingCallback,
    TorchProfilerCallback,
)
from instill.train.checkpoint import atomic_checkpoints, last_complete_checkpoint, save_failures
from instill.train.distributed import (
    check_parallel,
    check_world_size,
    parallel_arguments,
    peers_watched,
    rank0_lock,
)
from instill.train.interrupt import GracefulStop, TrainingInterrupted, signals_to
from instill.train.lock import LOCK_NAME
from instill.train.optimizers import check_optimizer
from instill.train.patches import push_saved_output, save_model
from instill.train.stage import Stage, StageInputs
from instill.train.stages import STAGES
from instill.train.throughput import (
    TrainClock,
    expected_padding,
    padding_line,
    throughput,
    throughput_text,
    train_time_text,
)


def resolve_resume(args: TrainArgs) -> str | None:
    """The checkpoint to resume from: true = the newest complete one in output_dir; a path = that one."""
    value = args.resume_from_checkpoint
    if value in (None, False):
        return None
    if value is True:
        last = last_complete_checkpoint(args.output_dir)
        if last is None:
            raise ConfigError(f"resume_from_checkpoint: true but {args.output_dir} has no complete checkpoint-* "
                              "directory (one holding trainer_state.json)")
        return last
    if not Path(value).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {value} is not a directory")
    return str(value)


def check_resumable(checkpoint: str) -> None:
    """A checkpoint written with save_only_model: true holds no optimizer, scheduler or RNG state: transformers
    would start those afresh (and the resumed run would differ from an uninterrupted one). One line instead."""
    path = Path(checkpoint)
    if not any((path / name).exists() for name in ("optimizer.pt", "optimizer.bin", "pytorch_model_fsdp_0")) \
            and not any(path.glob("global_step*")) and not any(path.glob("optimizer*")):
        raise ConfigError(f"resume_from_checkpoint: {checkpoint} holds no optimizer state (it was saved with "
                          "save_only_model: true) and cannot be resumed; to train on from its weights, start a new "
                          "run with them as adapter_name_or_path (LoRA) or model_name_or_path (full)")


def check_output_dir(args: TrainArgs, resume: str | None) -> None:
    out = Path(args.output_dir)
    contents = [p for p in out.iterdir() if p.name != LOCK_NAME] if out.is_dir() else []
    if contents and not args.overwrite_output_dir and resume is None:
        raise ConfigError(
            f"output_dir {out} is not empty; set overwrite_output_dir: true to write into it, "
            "or resume_from_checkpoint: true to continue the run there"
        )


def total_optimizer_steps(n_samples: int | None, args: TrainArgs) -> int:
    """Optimizer steps the Trainer will run (a last partial accumulation counts as a step)."""
    if args.max_steps > 0 or n_samples is None:
        return args.max_steps
    batches = math.ceil(n_samples / args.per_device_train_batch_size)
    per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    return math.ceil(per_epoch * args.num_train_epochs)


def check_disk(model: Any, config: RunConfig, total_steps: int, resume: str | None) -> None:
    """Before training starts: refuse in one line when output_dir's disk cannot hold the final weights and the
    checkpoints still to come (model/footprint.py's estimate, the doctor's too)."""
    trainable, total = count_parameters(model)
    out = Path(config.train.output_dir)
    kept = sum(1 for p in out.glob("checkpoint-*") if p.is_dir()) if out.is_dir() else 0
    done = re.fullmatch(r"checkpoint-(\d+)", Path(resume).name) if resume else None
    left = max(total_steps - int(done.group(1)), 0) if done else total_steps
    check_free_disk(out, *checkpoint_bytes(total, trainable, config, left, kept))


def _train_new_rows(config: RunConfig, model: Any) -> RunConfig:
    """New tokens with an adapter method: the embeddings and LM head join additional_target (trained and saved
    whole), as LLaMA-Factory does when resize_vocab is set and additional_target is not."""
    m, method = config.model, config.method
    if not (m.resize_vocab or m.add_tokens or m.add_special_tokens or m.new_special_tokens_config):
        return config
    if method.finetuning_type not in ("lora", "adalora", "oft") or method.additional_target is not None:
        return config
    if m.adapter_name_or_path and not method.create_new_adapter:
        return config  # the resumed adapter keeps its own modules_to_save
    names = embedding_modules(model)
    say(f"new tokens: {', '.join(names)} are trained whole beside the adapter (additional_target)")
    return config.model_copy(update={"method": method.model_copy(update={"additional_target": names})})


def _save_pissa_init(model: Any, config: RunConfig, out: Path) -> Path | None:
    """PiSSA's initial adapter, needed at the end to convert the trained one (see peft's PiSSA docs)."""
    if not config.method.pissa_init or config.model.adapter_name_or_path:
        return None
    init_dir = out / "pissa_init"
    model.peft_config["default"].init_lora_weights = True  # reloading it must not run the SVD again
    model.save_pretrained(init_dir)
    return init_dir


def _task_metrics(config: RunConfig, stage: Stage, tokenizer: Any, template: Any, has_eval: bool,
                  media: Any = None) -> list[Any]:
    """With do_eval, every evaluation also runs the eval task (accuracy, entity F1, ...)."""
    if not (config.eval.do_eval and stage.task_metrics and has_eval and config.train.eval_strategy != "no"):
        return []
    return [task_metrics_callback(config, tokenizer, template, media)]


def training_arguments(args: TrainArgs, has_eval: bool, finetuning_type: str = "full", shuffle: bool = True) -> Any:
    """transformers' TrainingArguments for this run; a value it refuses is a one-line ConfigError. `shuffle`
    false (disable_shuffling): the train sampler is sequential (transformers' train_sampling_strategy)."""
    from transformers import TrainingArguments

    on_cpu = device_type() == "cpu"
    try:
        return _training_arguments(TrainingArguments, args, has_eval, finetuning_type, on_cpu, shuffle)
    except (ValueError, TypeError, ImportError) as err:  # e.g. tf32 without an Ampere GPU, a bad optim_args
        raise ConfigError(f"the training arguments: {' '.join(str(err).split())}") from None


def _training_arguments(cls: type, args: TrainArgs, has_eval: bool, finetuning_type: str, on_cpu: bool,
                        shuffle: bool = True) -> Any:
    sampling = "sequential" if not shuffle else "group_by_length" if args.group_by_length else "random"
    passed = {key: getattr(args, key) for key in TRAINER_PASSTHROUGH}
    if args.early_stopping_steps and passed["metric_for_best_model"] is None:
        passed["metric_for_best_model"] = "loss"  # what load_best_model_at_end compares by default
    return cls(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        lr_scheduler_type=args.lr_scheduler_type,
        # transformers 5 folds warmup_ratio into warmup_steps: a float < 1 is a ratio of total steps.
        warmup_steps=args.warmup_steps or args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        optim=args.optim,
        # bf16: auto resolved for this hardware; pure_bf16 trains bf16 weights without autocast
        bf16=bool(Precision(args.bf16, args.fp16).bf16) and not args.pure_bf16,
        fp16=args.fp16,
        use_cpu=on_cpu,
        logging_steps=args.logging_steps,
        logging_first_step=args.logging_first_step,
        save_strategy=args.save_strategy,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        eval_strategy=args.eval_strategy if has_eval else "no",
        eval_steps=args.eval_steps or (args.save_steps if args.eval_strategy == "steps" else None),
        # eval loss only: full-vocab logits of every eval batch would fill memory (compute_accuracy needs them)
        prediction_loss_only=not args.compute_accuracy,
        seed=args.seed,
        data_seed=args.seed if args.data_seed is None else args.data_seed,
        train_sampling_strategy=sampling,
        torch_compile=args.torch_compile,
        use_liger_kernel=args.enable_liger_kernel,
        report_to="none",  # trackers are ours (tracking/trackers.py): transformers' swanlab one fails with swanlab 0.10
        run_name=args.run_name,
        **parallel_arguments(args, finetuning_type),  # ddp_timeout, deepspeed, fsdp (train/distributed.py)
        dataloader_num_workers=args.dataloader_num_workers,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        disable_tqdm=False,
        **passed,
    )


@dataclass
class RunResult:
    metrics: dict[str, Any]
    trainer: Any  # the transformers Trainer, holding the trained model


def _data(config: RunConfig, stage: Stage, template: Any, media: Any = None
          ) -> tuple[Any, Any, TokenizedSet | None]:
    """(train rows, eval rows, the tokenized train set with its summary; None when streaming)."""
    d, seed = config.data, config.train.seed
    if d.streaming:
        say("streaming: rows are read and tokenized as training consumes them (no cache, no counts up front)")
        train = iterable_dataset(d, template, seed, stage.data_kind)
        evaluation = None
        if d.eval_dataset:
            _, evaluation = prepare_datasets(d.model_copy(update={"dataset": [], "streaming": False}), template,
                                             seed, stage.data_kind)
        return train, _rows(evaluation), None
    train_set, eval_set = prepare_datasets(d, template, seed, stage.data_kind, media)
    eval_sets = eval_set if isinstance(eval_set, dict) else {"eval": eval_set}  # eval_on_each_dataset: by name
    for part in (train_set, *eval_sets.values()):
        if part is not None:
            for line in part.summary.lines(part.name):
                say(line)
    batching = expected_padding(config, train_set.summary)
    say(padding_line(batching))
    out = Path(config.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_main():
        write_data_summary(out / "data_summary.json",
                           {"train": train_set.summary, **{("eval" if name == "eval" else f"eval {name}"):
                                                           part.summary if part else None
                                                           for name, part in eval_sets.items()}},
                           d.cutoff_len, batching)
    return train_set.rows, _rows(eval_set), train_set


def _rows(part: Any) -> Any:
    """A tokenized set's rows; {name: rows} for eval_on_each_dataset's sets (the Trainer evaluates each)."""
    if isinstance(part, dict):
        return {name: one.rows for name, one in part.items()}
    return part.rows if part is not None else None


def run_training(config: RunConfig) -> RunResult:
    """Train as configured; return the final metrics (also in all_results.json) and the trainer.

    Holds output_dir's lock for the whole run; raises TrainingInterrupted after a Ctrl-C/SIGTERM has
    saved a checkpoint."""
    started = time.perf_counter()
    t, precision = config.train, Precision(config.train.bf16, config.train.fp16, config.train.pure_bf16)
    stage = STAGES[config.method.stage]
    if not stage.facts.has_input_ids and t.group_by_length:
        # transformers' length-grouped sampler reads input_ids, which pair and prompt rows do not have: random order,
        # and the data summary, the saved run_config.yaml and the Trainer all say so.
        t = t.model_copy(update={"group_by_length": False})
        config = config.model_copy(update={"train": t})
    if config.data.disable_shuffling and t.group_by_length:  # rows in order: no length grouping (LF's sampler)
        t = t.model_copy(update={"group_by_length": False})
        config = config.model_copy(update={"train": t})
    check_precision(precision)
    check_speed_flags(config.train.torch_compile, config.train.enable_liger_kernel)
    check_training(config)
    if config.model.quantization_device_map:  # as LLaMA-Factory: device maps are for inference
        raise ConfigError("quantization_device_map: auto spreads a 4-bit model for inference (chat, predict, serve, "
                          "eval); training places it on this process's device: remove it")
    check_trackers(t)
    check_parallel(config)
    check_optimizer(config)
    if t.push_to_hub:  # before anything loads: a run must not learn at its end that it cannot upload
        check_hub_upload("push_to_hub", t.hub_token or config.model.hf_hub_token)
    start_ranks(t.ddp_timeout)  # under torchrun: the process group, with ddp_timeout (train/distributed.py)
    resume = resolve_resume(t)
    if resume is not None:
        check_resumable(resume)
    with rank0_lock(t.output_dir, lambda: check_output_dir(t, resume)), \
            hub_token_env(t.hub_token or config.model.hf_hub_token if t.push_to_hub else None):
        return _run_locked(config, stage, precision, resume, started)


def _run_locked(config: RunConfig, stage: Stage, precision: Precision, resume: str | None,
                started: float) -> RunResult:
    from transformers import set_seed

    t = config.train
    if device_type() == "cpu":
        say(set_torch_threads(config.model.torch_num_threads))
    set_seed(t.seed)
    for note in config.notes:
        say(note)

    # Before anything loads: a value transformers refuses stops here; with ZeRO-3 the arguments make
    # from_pretrained load the model sharded.
    expects_eval = bool(config.data.eval_dataset or config.data.val_size)
    shuffle = not config.data.disable_shuffling
    training_args = training_arguments(t, expects_eval, config.method.finetuning_type, shuffle)
    check_world_size(training_args)
    m = config.model
    check_adapters(m.adapter_name_or_path, m.adapter_folder)
    model_dir = resolve_model_args(m)  # once per run
    tokenizer = load_tokenizer(m, model_dir)
    tokenizer.padding_side = "right"
    template = get_template(TemplateChoice.of(config.data), tokenizer)
    media = load_image_inputs(m, model_dir, tokenizer)  # None for a text model
    train_rows, eval_rows, train_set = _data(config, stage, template, media)
    has_eval = eval_rows is not None
    if has_eval != expects_eval:
        training_args = training_arguments(t, has_eval, config.method.finetuning_type, shuffle)
    rope, rope_line = training_rope(m.rope_scaling, config.data.cutoff_len, model_dir, m.trust_remote_code)
    if rope_line:
        say(rope_line)
    model = load_model(m, precision, config.method.finetuning_type, model_dir, t.gradient_checkpointing,
                       head=stage.head, checkpointing_kwargs=t.gradient_checkpointing_kwargs, rope=rope,
                       tokenizer=tokenizer)
    total_steps = total_optimizer_steps(len(train_set) if train_set is not None else None, t)
    config = _train_new_rows(config, model)
    model = apply_method(model, config.method, m.adapter_name_or_path, total_steps, m.adapter_folder,
                         upcast=not t.pure_bf16)
    if device_type() == "cpu" and (fused := fuse_lora_dropout(model)):
        say(f"lora_dropout: {fused} layers draw their masks 3 elements to a 64-bit word (torch's CPU dropout "
            "draws one at a time)")
    say(f"{stage.name}, {config.method.finetuning_type}: {describe_parameters(model)}")
    if m.print_param_status and is_main():
        for name, param in model.named_parameters():
            print(f"name: {name}, dtype: {param.dtype}, device: {param.device}, trainable: {param.requires_grad}")
    check_disk(model, config, total_steps, resume)

    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pissa_init_dir = _save_pissa_init(model, config, out) if is_main() else None
    log_path = out / "trainer_log.jsonl"
    if is_main():
        save_config(config, out / "run_config.yaml")
        if resume is None and log_path.exists():
            log_path.unlink()

    clock = TrainClock()  # after the task metrics: their generation counts as evaluation, not training
    callbacks = (([AdaLoraCallback()] if config.method.finetuning_type == "adalora" else [])
                 + _task_metrics(config, stage, tokenizer, template, has_eval, media)
                 + [clock, JsonlLogCallback(log_path, stage.facts, clock.interval_rate),
                    *tracker_callbacks(config, out, clock.interval_rate)]
                 + _optional_callbacks(t, has_eval))
    trainer = stage.build_trainer(StageInputs(config, model, tokenizer, template, train_rows, eval_rows,
                                              training_args, callbacks, media))
    atomic_checkpoints(trainer)
    stop = GracefulStop()
    trainer.add_callback(stop)
    if trainer.pop_callback(ProgressCallback) is not None:  # its bars stay; its dict-printing on_log does not
        trainer.add_callback(LogLineProgress)
    with signals_to(stop), peers_watched(lambda: last_complete_checkpoint(out)):
        result = trainer.train(resume_from_checkpoint=resume)
    if stop.acted:
        raise TrainingInterrupted(trainer.state.global_step, last_complete_checkpoint(out))
    figures = throughput(trainer, clock, precision.compute_dtype, config.method.finetuning_type == "full")
    result.metrics.update(figures)  # all_results.json
    trainer.log(figures)  # trainer_log.jsonl
    log_summary(trainer, figures)
    with save_failures(out, f"the trained weights to {out}"):
        metrics = _save(trainer, config, template, tokenizer, result, pissa_init_dir, has_eval)
        if media is not None and is_main():  # the image processor (with its pixel bounds) travels with the run
            media.processor.save_pretrained(out)
        if rope and is_main() and (out / "adapter_config.json").is_file():  # a full model's config.json has it
            save_rope(rope, out)
    if t.plot_loss and is_main():
        plot = plot_loss(log_path, out)
        if plot:
            say(f"loss plot: {plot}")
        rewards = plot_rewards(log_path, out)  # stages that log rewards (preference, online RL)
        if rewards:
            say(f"reward plot: {rewards}")

    seconds = time.perf_counter() - started
    if finish_run(trainer, out, seconds):  # trackers finished, run_info.json; true on the main process
        report = try_write_report(out)
        if report:
            say(f"report: {report}")
    if t.push_to_hub:  # the whole output_dir (tokenizer, run files, report) once, at the end, as LLaMA-Factory does
        say(f"uploading {out} to the Hugging Face Hub ({trainer.hub_model_id})")
        push_saved_output(trainer, "End of training")
    _summary_line(config, stage, trainer, metrics, seconds, figures)
    return RunResult(metrics, trainer)


def _optional_callbacks(t: TrainArgs, has_eval: bool) -> list[Any]:
    """Early stopping and the profilers, as the config asks."""
    from transformers import EarlyStoppingCallback

    if t.early_stopping_steps and not has_eval:
        raise ConfigError("early_stopping_steps needs evaluation during training, and this run has no eval rows: set "
                          "val_size or eval_dataset (with eval_strategy: steps or epoch)")
    return ([EarlyStoppingCallback(early_stopping_patience=t.early_stopping_steps)] if t.early_stopping_steps else []) \
        + ([TorchProfilerCallback(t.profiler_output_dir or Path(t.output_dir) / "profiler", t)]
           if t.enable_torch_profiler else []) \
        + ([ModuleTimingCallback(t.profile_modules)] if t.profile_modules else [])


def _save(trainer: Any, config: RunConfig, template: Any, tokenizer: Any, result: Any, pissa_init_dir: Path | None,
          has_eval: bool) -> dict[str, Any]:
    """Weights/adapter, trainer state, tokenizer + template, train and final eval metrics."""
    out = config.train.output_dir
    save_model(trainer, out)  # without the Trainer's own upload: the run uploads once, at its end
    if pissa_init_dir is not None:
        # Rewrite the adapter so it applies to the original base (PiSSA trains on a residual base).
        trainer.model.save_pretrained(out, path_initial_model_for_weight_conversion=str(pissa_init_dir))
    trainer.save_state()
    tokenizer.chat_template = template.jinja  # the template training rendered with, named or the tokenizer's own
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out)
    metrics = dict(result.metrics)
    metrics["num_input_tokens_seen"] = trainer.state.num_input_tokens_seen
    trainer.save_metrics("train", metrics)
    asked = config.eval.do_eval or config.train.eval_strategy != "no"
    if has_eval and not asked:
        say("no evaluation after training: eval_strategy is 'no' and do_eval is false (set do_eval: true to score "
            "the eval set)")
    if has_eval and asked:
        # Reuse the evaluation of the final step when the schedule already ran one (it is logged once).
        step = trainer.state.global_step
        last = {k: v for h in trainer.state.log_history if h.get("step") == step for k, v in h.items()
                if k.startswith("eval_")}
        sets = trainer.eval_dataset.values() if isinstance(trainer.eval_dataset, dict) else [trainer.eval_dataset]
        if not eval_losses(last):
            say(f"final evaluation: eval loss on {sum(map(len, sets)):,} eval rows")
        eval_metrics = last if eval_losses(last) else trainer.evaluate()
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics


def _summary_line(config: RunConfig, stage: Stage, trainer: Any, metrics: dict, seconds: float,
                  figures: dict[str, float]) -> None:
    tokens = trainer.state.num_input_tokens_seen
    ranks = f" over {world_size()} processes" if world_size() > 1 else ""  # tokens and tokens/s: all ranks
    what = "adapter" if config.method.finetuning_type in ("lora", "adalora", "oft") else "weights"
    say(
        f"done ({stage.name}): {trainer.state.global_step} steps, {tokens:,} tokens, "
        f"train {train_time_text(figures)} ({throughput_text(figures)}{ranks}), "
        f"mean train loss {metrics.get('train_loss', float('nan')):.4f}, total {seconds:.0f} s; "
        f"{what} in {config.train.output_dir}"
    )
