"""What instill does with each LLaMA-Factory 0.9.5 key it does not implement: one table.

Every key a LLaMA-Factory YAML may hold has one policy (`config.policy_of`):
- **implemented**: a field of `RunConfig`'s sections (`config.py` and its `config_*.py` section modules),
  doing what LLaMA-Factory documents;
- **ignored**: accepted, and the run summary says once why it changes nothing here;
- **refused**: the run stops at the door with the reason and what to do instead.

A refused key set to LLaMA-Factory's own default asks for nothing, so it is accepted quietly: the
YAMLs LLaMA-Factory writes (and users copy) often spell out defaults such as `pure_bf16: false`.
The README's "Coming from LLaMA-Factory" tables are generated from this module
(`python -m instill.key_policy`); a test keeps them in step. Facts about LLaMA-Factory (key names,
defaults) come from its v0.9.5 source: `src/llamafactory/hparams/*.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["ignored", "refused"]


@dataclass(frozen=True)
class Policy:
    action: Action
    reason: str
    # refused keys: the LLaMA-Factory default, accepted quietly (a value that asks for nothing)
    default: Any = None



def _table(action: Action, reason: str, keys: str | dict[str, Any]) -> dict[str, Policy]:
    """One reason for several keys: "a b c" (default None/False) or {key: LLaMA-Factory default}."""
    pairs = keys.items() if isinstance(keys, dict) else ((key, None) for key in keys.split())
    return {key: Policy(action, reason, default) for key, default in pairs}


_EXTRAS = "is one of LLaMA-Factory's training extras, not built in instill yet (remove it to train without it)"
_NOT_YET = "is not built in instill yet; remove it"
_PTQ = ("a format of pre-quantized checkpoints, not an on-the-fly method (LLaMA-Factory quantizes on the fly with "
        "bnb, hqq or eetq; GPTQ / AWQ / AQLM "
        "checkpoints come quantized and need their own kernels, not built in instill); use quantization_method: bnb")
_PPO = ("PPO was removed from trl (the library instill trains on); use stage: grpo with reward_model: "
        "<your stage: rm output_dir> (or reward_funcs)")

POLICY: dict[str, Policy] = {
    # -- accepted and ignored: nothing to do here, said once in the run summary --------------------
    **_table("ignored", "tokens/s is always logged", "include_num_input_tokens_seen include_effective_tokens_per_second"),
    **_table("ignored", "TensorBoard events go to output_dir/runs", "logging_dir"),
    **_table("ignored", "progress bars are always shown (as lines when output is not a terminal)", "disable_tqdm"),
    **_table("ignored", "predictions are always generated (or scored, eval_mode: score)",
             "predict_with_generate"),
    **_table("ignored", "padding never carries a label", "ignore_pad_token_for_loss"),
    **_table("ignored", "video datasets are refused on this build (images only)",
             "video_max_pixels video_min_pixels video_fps video_maxlen"),
    **_table("ignored", "audio datasets are refused on this build (images only)",
             "use_audio_in_video audio_sampling_rate"),
    **_table("ignored", "LLaMA-Factory derives it at run time; it is not a YAML setting",
             "compute_dtype device_map model_max_length"),
    **_table("ignored", "packed sequences never see each other here (block-diagonal masks always)",
             "block_diag_attn"),
    **_table("ignored", "transformers 5 always loads weights lazily", "low_cpu_mem_usage"),
    **_table("ignored", "instill never offloads weights to disk", "offload_folder"),
    **_table("ignored", "the main process prepares the data first on every machine", "data_shared_file_system"),
    **_table("ignored", "tokenization runs in batches of 256 rows", "preprocessing_batch_size"),
    **_table("ignored", "a PiSSA adapter is always saved converted, to apply to the original base",
             "pissa_convert"),
    **_table("ignored", "evaluation computes the loss only; task metrics come from do_eval (instill eval)",
             "prediction_loss_only include_for_metrics eval_do_concat_batches eval_use_gather_object "
             "batch_eval_metrics label_names"),
    **_table("ignored", "instill's collators need every column (always false)", "remove_unused_columns"),
    **_table("ignored", "batches are length-grouped with group_by_length", "sortish_sampler length_column_name"),
    **_table("ignored", "torchrun sets it", "local_rank"),
    **_table("ignored", "training never uses the KV cache; generation always does", "use_cache use_kv_cache"),
    **_table("ignored", "generation settings are instill's eval keys (max_new_tokens, do_sample, temperature, "
             "top_p, top_k, num_beams, ...)", "generation_config"),
    **_table("ignored", "the export runs on the CPU (merging needs no accelerator)", "export_device"),
    **_table("ignored", "ModelScope / Modelers downloads use their SDK's own login (modelscope login, openmind "
             "login)", "ms_hub_token om_hub_token"),
    **_table("ignored", "LLaMA-Factory's evaluation downloads; instill reads local files", "download_mode"),
    **_table("ignored", "the Weights & Biases / trackio project; instill's trackers are swanlab and tensorboard",
             "project trackio_space_id trackio_bucket_id trackio_static_space_id"),
    **_table("ignored", "SwanLab notifications are not sent by instill", "swanlab_lark_webhook_url swanlab_lark_secret"),
    **_table("ignored", "set the key with `swanlab login` (or SWANLAB_API_KEY); instill never writes it to a file",
             "swanlab_api_key"),
    **_table("ignored", "instill decides what to pass to the Trainer's sampler (group_by_length)",
             "train_sampling_strategy"),
    **_table("ignored", "instill trains on the CPU when no GPU is visible; to force it, hide the GPUs "
             "(CUDA_VISIBLE_DEVICES=)", "use_cpu"),
    **_table("ignored", "accelerate launch sets it", "parallelism_config"),
    **_table("ignored", "lm-eval benchmarks carry their own prompts (pick cmmlu or ceval for Chinese)", "lang"),
    **_table("ignored", "instill renders earlier turns' thoughts as the data has them in every prompt, as "
             "LLaMA-Factory does with preserve_thinking: true (its false drops them from DPO/KTO/inference prompts "
             "and with mask_history; not built)", "preserve_thinking"),
    # -- refused, with the reason ---------------------------------------------------------------------
    **_table("refused", "unsloth is not supported; remove it", "use_unsloth use_unsloth_gc"),
    **_table("refused", "Megatron-Core training (mcore_adapter) is not supported; use deepspeed or fsdp for "
             "multi-GPU training", "use_mca tensor_model_parallel_size pipeline_model_parallel_size "
             "expert_model_parallel_size sequence_parallel bias_activation_fusion apply_rope_fusion "
             "use_distributed_optimizer overlap_param_gather overlap_grad_reduce moe_grouped_gemm "
             "moe_token_dispatcher_type recompute_granularity"),
    **_table("refused", "HyperParallel is not supported; use deepspeed or fsdp", "use_hyper_parallel hyper_parallel_args"),
    **_table("refused", "KTransformers (CPU-GPU hybrid MoE) is not supported", {
        "use_kt": False, "kt_weight_path": None, "kt_expert_checkpoint_path": None, "kt_use_lora_experts": None,
        "kt_lora_expert_num": None, "kt_lora_expert_intermediate_size": None}),
    **_table("refused", "Ray training is not supported; launch with torchrun or accelerate", {
        "ray_num_workers": 1, "ray_init_kwargs": None, "master_addr": None, "master_port": None,
        "ray_run_name": None, "ray_storage_path": None, "ray_storage_filesystem": None, "resources_per_worker": None,
        "placement_strategy": None}),
    **_table("refused", "fp8 training needs a CUDA GPU with fp8 (Hopper or newer) and is not built in instill; "
             "use bf16", {"fp8": False, "fp8_backend": "auto", "fp8_enable_fsdp_float8_all_gather": False}),
    **_table("refused", "the SGLang inference backend is not supported; use infer_backend: huggingface", {
        "sglang_maxlen": 4096, "sglang_mem_fraction": 0.7, "sglang_tp_size": -1, "sglang_config": None,
        "sglang_lora_backend": "triton"}),
    **_table("refused", _PPO, {
        "ppo_buffer_size": 1, "ppo_epochs": 4, "ppo_score_norm": False, "ppo_target": 6.0,
        "ppo_whiten_rewards": False, "reward_model_adapters": None,
        "reward_model_quantization_bit": None, "reward_model_type": "lora"}),
    **_table("refused", "apollo-torch reads scale_front only as a constructor argument, which transformers' apollo "
             "optimizers do not pass (LLaMA-Factory sets it in a parameter group, where apollo-torch ignores it)",
             {"apollo_scale_front": False}),
    **_table("refused", "mixture of depths (MoD) is refused: its library (mixture-of-depth) is unmaintained",
             {"mixture_of_depths": None}),
    **_table("refused", "LongLoRA's shift short attention is not supported (transformers dropped the patch it needs)",
             {"shift_attn": False}),
    **_table("refused", "LLaMA-Factory's v1 kernels are not supported; use enable_liger_kernel on CUDA",
             {"use_v1_kernels": False}),
    **_table("refused", "PyTorch .bin weights are unsafe to load (pickle); instill writes safetensors only",
             {"export_legacy_format": False}),
    **_table("refused", "vision preprocessing options for Gemma 3 / InternVL are not supported (Qwen2-VL only)", {
        "image_do_pan_and_scan": False, "crop_to_patches": False}),
}

# Values refused for keys instill implements: (key, value) -> reason.
REFUSED_VALUES: dict[tuple[str, Any], str] = {
    ("stage", "ppo"): _PPO,
    ("infer_backend", "sglang"): "the SGLang backend is not supported; use infer_backend: huggingface",
    ("infer_backend", "ktransformers"): "the KTransformers backend is not supported; use infer_backend: huggingface",
    **{("quantization_method", method): reason for method, reason in {
        "gptq": _PTQ, "awq": _PTQ, "aqlm": _PTQ,
        "quanto": "optimum-quanto is not built in instill; use quantization_method: bnb",
        "eetq": "EETQ (CUDA-only 8-bit kernels) is not built in instill; use quantization_method: bnb",
        "hqq": "HQQ is not built in instill; use quantization_method: bnb",
        "mxfp4": "MXFP4 checkpoints (gpt-oss) need Hopper GPUs and triton kernels, not built in instill; use "
                 "quantization_method: bnb",
        "fp8": "fp8 checkpoints need a CUDA GPU with fp8 (Hopper or newer) and are not built in instill; use "
               "quantization_method: bnb",
    }.items()},
}


def refusal(key: str, value: Any) -> str | None:
    """Why `key: value` is refused, or None."""
    policy = POLICY.get(key)
    if policy is not None and policy.action == "refused" and value not in (None, False) and value != policy.default:
        return policy.reason
    if isinstance(value, str | int | float | bool):
        return REFUSED_VALUES.get((key, value))
    return None


def markdown() -> str:
    """The README's tables of ignored and refused LLaMA-Factory keys, generated from POLICY."""
    lines: list[str] = []
    for action, title in (("ignored", "Accepted and ignored"), ("refused", "Refused (a run stops with the reason)")):
        by_reason: dict[str, list[str]] = {}
        for key, policy in POLICY.items():
            if policy.action == action:
                by_reason.setdefault(policy.reason, []).append(key)
        lines += [f"**{title}** ({sum(map(len, by_reason.values()))} keys)", "", "| keys | why |", "|---|---|"]
        lines += [f"| {', '.join(f'`{k}`' for k in keys)} | {reason} |" for reason, keys in by_reason.items()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
