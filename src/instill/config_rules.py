"""The config's rules across keys: one function each, returning what is wrong (or None).

`RunConfig` runs every rule in `CROSS_RULES` when it is built, so a bad config fails at the door,
before anything loads. A rule that spans sections or stages lives here; a rule about one key is a
validator on its field, in its section's module (`config_model.py`, `config_data.py`, ...).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from instill.stage_facts import STAGE_FACTS
from instill.textfile import printable

if TYPE_CHECKING:
    from instill.config import MethodArgs, RunConfig


def precision_is_one(c: RunConfig) -> str | None:
    if c.train.bf16 is True and c.train.fp16:
        return "bf16 and fp16 are both true; choose one"
    return None


def one_eval_source(c: RunConfig) -> str | None:
    if c.data.val_size and c.data.eval_dataset:
        return "give either val_size or eval_dataset, not both"
    return None


def eval_strategy_has_data(c: RunConfig) -> str | None:
    if c.train.eval_strategy != "no" and not (c.data.val_size or c.data.eval_dataset):
        return f"eval_strategy is '{c.train.eval_strategy}' but there is no val_size or eval_dataset"
    return None


def eval_on_each_fits(c: RunConfig) -> str | None:
    if not c.data.eval_on_each_dataset:
        return None
    if not STAGE_FACTS[c.method.stage].has_input_ids:
        return (f"eval_on_each_dataset evaluates each eval dataset apart for stage sft and pt; stage {c.method.stage} "
                "evaluates them together here (remove it)")
    compares = c.train.load_best_model_at_end or c.train.early_stopping_steps
    if compares and c.train.metric_for_best_model in (None, "loss", "eval_loss"):
        first = (c.data.eval_dataset or ["<dataset>"])[0]
        return (f"eval_on_each_dataset logs one loss per eval dataset (eval_{first}_loss, ...): set "
                f"metric_for_best_model to the one load_best_model_at_end / early_stopping_steps compares, "
                f"e.g. eval_{first}_loss")
    return None


def token_accuracy_fits(c: RunConfig) -> str | None:
    if not c.train.compute_accuracy:
        return None
    if c.method.stage != "sft":
        return f"compute_accuracy (token accuracy) is computed for stage sft (as LLaMA-Factory does), not {c.method.stage}"
    if c.eval.do_eval and c.eval.eval_task == "classification":
        return ("compute_accuracy logs token accuracy as eval_accuracy, the name do_eval's classification accuracy "
                "logs too; keep one of them")
    return None


def quantization_fits_method(c: RunConfig) -> str | None:
    if c.model.quantization_bit and c.method.finetuning_type == "oft":
        return (f"'quantization_bit: {c.model.quantization_bit}' with finetuning_type: oft: peft has no 4/8-bit OFT "
                "layers (quantized OFT is not built); remove quantization_bit")
    if c.model.quantization_bit and c.method.finetuning_type not in ("lora", "adalora"):
        return "quantization_bit (QLoRA) needs finetuning_type lora or adalora: quantized weights cannot be trained"
    if c.model.quantization_bit and c.method.pissa_init:
        return "pissa_init needs full-precision base weights; remove quantization_bit"
    return None


def streaming_fits(c: RunConfig) -> str | None:
    d = c.data
    if d.streaming and c.train.max_steps < 0:
        return "streaming: true needs max_steps (a stream has no length to count epochs by)"
    if d.streaming and d.val_size:
        return "streaming: true cannot hold out val_size; give eval_dataset instead"
    if d.streaming and not STAGE_FACTS[c.method.stage].streamable:
        return f"streaming: true is not for stage {c.method.stage}, which reads its rows up front"
    return None


def masking_is_one(c: RunConfig) -> str | None:
    if c.data.mask_history and c.data.train_on_prompt:
        return "mask_history and train_on_prompt cannot both be true"
    return None


def reference_fits_method(c: RunConfig) -> str | None:
    if c.method.ref_model and c.method.finetuning_type in ("lora", "adalora", "oft"):
        return ("ref_model: with LoRA the reference is the base with the adapter disabled; remove ref_model "
                "(or train with finetuning_type: full)")
    return None


def reference_options_have_a_reference(c: RunConfig) -> str | None:
    m = c.method
    for key in ("ref_model_adapters", "ref_model_quantization_bit"):
        if getattr(m, key) and not m.ref_model:
            return f"{key} applies to ref_model, which is not set; set ref_model (full or freeze fine-tuning)"
    return None


def vocabulary_fits(c: RunConfig) -> str | None:
    m = c.model
    if m.resize_vocab and m.quantization_bit:
        return "resize_vocab with quantization_bit: quantized embeddings cannot grow; remove one of them"
    if m.init_special_tokens != "noise_init" and not m.new_special_tokens_config:
        return (f"init_special_tokens: {m.init_special_tokens} starts each token at its description's embedding, "
                "which new_special_tokens_config gives ({'<token>': 'description'}); set it, or use noise_init")
    if m.split_special_tokens and c.data.allow_special_tokens_in_data:
        return ("split_special_tokens: true keeps special-token text in the data as text, and "
                "allow_special_tokens_in_data: true makes it control tokens; choose one")
    return None


def model_loading_fits(c: RunConfig) -> str | None:
    m = c.model
    if m.quantization_device_map and m.quantization_bit != 4:
        return "quantization_device_map: auto places a 4-bit model; set quantization_bit: 4 (or remove it)"
    if m.train_from_scratch and c.model.adapter_name_or_path:
        return "train_from_scratch starts from random weights, so adapter_name_or_path has nothing to apply to"
    if c.method.create_new_adapter and c.method.finetuning_type not in ("lora", "adalora", "oft"):
        return "create_new_adapter makes a new adapter: it needs finetuning_type lora, adalora or oft"
    if c.train.pure_bf16 and c.train.fp16:
        return "pure_bf16 and fp16 are both true; choose one"
    return None


def bco_and_ld_fit_the_loss(c: RunConfig) -> str | None:
    m = c.method
    extras = [k for k in ("pref_bco_weight", "ld_alpha") if getattr(m, k)]
    if extras and m.pref_loss in ("orpo", "simpo"):
        return f"'{extras[0]}' mixes into DPO's own losses (sigmoid, ipo, hinge), not pref_loss: {m.pref_loss}"
    return None


def predict_has_data(c: RunConfig) -> str | None:
    if c.eval.do_predict and not (c.data.eval_dataset or (c.data.val_size and c.data.dataset)):
        return "do_predict needs eval_dataset (or val_size with dataset) to predict on"
    return None


def best_model_has_evaluation(c: RunConfig) -> str | None:
    if c.train.early_stopping_steps and c.train.eval_strategy == "no":
        return ("early_stopping_steps needs evaluation during training: set eval_strategy (steps or epoch) and "
                "val_size or eval_dataset")
    if c.train.load_best_model_at_end and c.train.eval_strategy == "no":
        return "load_best_model_at_end needs evaluation: set eval_strategy (steps or epoch) and eval data"
    if c.train.load_best_model_at_end and c.train.save_strategy != c.train.eval_strategy:
        return "load_best_model_at_end needs save_strategy equal to eval_strategy"
    return None


# Optimizers beyond `optim` (train/optimizers.py): one at a time, on the methods LLaMA-Factory allows them.
OPTIMIZER_KEYS = ("use_galore", "use_apollo", "use_badam", "use_adam_mini", "use_muon", "loraplus_lr_ratio")
# The `optim` values each low-rank optimizer runs on (transformers' galore_* / apollo_* variants of them).
LOW_RANK_BASES = {"galore": ("adamw_torch", "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "adafactor"),
                  "apollo": ("adamw_torch",)}


def chosen_optimizer(m: MethodArgs) -> str | None:
    """The key of MethodArgs that chooses the optimizer (use_galore, ..., loraplus_lr_ratio), or None."""
    return next((key for key in OPTIMIZER_KEYS if getattr(m, key) not in (None, False)), None)


def one_optimizer(c: RunConfig) -> str | None:
    keys = [key for key in OPTIMIZER_KEYS if getattr(c.method, key) not in (None, False)]
    if len(keys) > 1:
        return f"{keys[0]} and {keys[1]} each choose the optimizer; keep one"
    return None


def optimizer_fits_method(c: RunConfig) -> str | None:
    m = c.method
    for key in ("use_galore", "use_apollo", "use_badam"):
        if getattr(m, key) and m.finetuning_type not in ("full", "freeze"):
            return (f"{key} optimizes full weights: it needs finetuning_type full or freeze, not "
                    f"{m.finetuning_type} (as in LLaMA-Factory)")
    if m.loraplus_lr_ratio is not None and m.finetuning_type != "lora":
        return "loraplus_lr_ratio sets the learning rate of LoRA's B matrices; it needs finetuning_type: lora"
    return None


def optimizer_fits_training(c: RunConfig) -> str | None:
    m, t = c.method, c.train
    for name in ("galore", "apollo"):
        if not getattr(m, f"use_{name}"):
            continue
        if getattr(m, f"{name}_layerwise") and t.gradient_accumulation_steps != 1:
            return (f"{name}_layerwise steps each parameter as soon as its gradient is ready, so it needs "
                    "gradient_accumulation_steps: 1")
        if t.deepspeed:
            return f"use_{name} does not work with DeepSpeed (as in LLaMA-Factory); remove deepspeed"
        if t.weight_decay:
            return f"use_{name}: transformers' {name} optimizers apply no weight decay; set weight_decay: 0"
        if t.optim not in LOW_RANK_BASES[name]:
            return f"optim: {t.optim}: use_{name} runs on optim {' / '.join(LOW_RANK_BASES[name])}"
    key = "use_adam_mini" if m.use_adam_mini else "use_muon" if m.use_muon else None
    if key and t.optim != "adamw_torch":
        return f"optim: {t.optim}: {key} is the optimizer; remove optim"
    return None


def sft_loss_fits(c: RunConfig) -> str | None:
    m = c.method
    chosen = [key for key in ("use_dft_loss", "use_eaft_loss", "use_asft_loss") if getattr(m, key)]
    if len(chosen) > 1:
        return f"{' and '.join(chosen)} are all losses; choose one"
    if chosen and c.train.label_smoothing_factor:
        return f"{chosen[0]} replaces the cross-entropy; remove label_smoothing_factor"
    if m.stage == "sft" and m.ref_model and not m.use_asft_loss:
        return "ref_model in stage sft is the ASFT loss's reference; set use_asft_loss: true or remove ref_model"
    return None


def llama_pro_fits(c: RunConfig) -> str | None:
    m = c.method
    if m.use_llama_pro and m.finetuning_type not in ("freeze", "lora", "oft"):
        return f"use_llama_pro trains the expanded blocks with freeze, lora or oft, not {m.finetuning_type}"
    if m.use_llama_pro and m.freeze_trainable_layers < 0:
        return "use_llama_pro: freeze_trainable_layers is the number of expanded blocks; it must be positive"
    return None


def sampling_keys_apply(c: RunConfig) -> str | None:
    # Non-default values only, so a resolved run_config.yaml (which lists every key) loads back.
    changed = [name for name in ("temperature", "top_p") if getattr(c.eval, name) != 1.0]
    if c.eval.top_k not in (None, 50):  # 50: LLaMA-Factory's default, which asks for nothing
        changed.append("top_k")
    if changed and not c.eval.do_sample and not STAGE_FACTS[c.method.stage].generates:
        return f"'{changed[0]}' applies only when sampling; set do_sample: true (greedy otherwise)"
    if c.eval.length_penalty != 1.0 and max(c.eval.num_beams, c.eval.eval_num_beams or 1) == 1:
        return "length_penalty applies to beam search only; set num_beams (or eval_num_beams) above 1"
    return None


# reward_funcs' built-in names (train/rewards.py implements them; a test keeps the two in step).
REWARD_NAMES = ("label_match", "entity_f1", "accuracy", "format", "think_format", "length", "json_valid",
                "repetition")


def distill_beta_is_a_mix(c: RunConfig) -> str | None:
    if "teacher_model_name_or_path" in STAGE_FACTS[c.method.stage].own_keys and (c.method.beta or 0) > 1:
        return "beta: for distill it mixes forward KL (0) and reverse KL (1); give a value in [0, 1]"
    return None


# The GGUF weight types instill writes itself: those the gguf package quantizes (it has no K-quant quantizer).
GGUF_TYPES = ("f16", "bf16", "q8_0", "q4_0")
# K-quants: written as f16 first, then quantized by llama.cpp's own quantizer (the `llamacpp` extra).
GGUF_K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")


def gguf_type_is_written(c: RunConfig) -> str | None:
    e = c.export
    if e.export_gguf_type not in (*GGUF_TYPES, *GGUF_K_QUANTS):
        return (f"export_gguf_type '{printable(e.export_gguf_type)}' is not written by instill; choose one of "
                f"{', '.join((*GGUF_TYPES, *GGUF_K_QUANTS))}")
    if e.export_gguf_type != "f16" and e.export_format != "gguf":  # not the default: the user meant a GGUF
        return "export_gguf_type is set but export_format is not gguf; add export_format: gguf"
    if e.export_gguf_type in GGUF_K_QUANTS and importlib.util.find_spec("llama_cpp") is None:
        return (f"export_gguf_type '{e.export_gguf_type}' is quantized by llama.cpp, which is not installed; "
                "install the llamacpp extra (pip install 'instill[llamacpp]') or choose f16, bf16, q8_0 or q4_0")
    return None


def quantized_export_fits(c: RunConfig) -> str | None:
    e = c.export
    if e.export_quantization_bit is None:
        return None
    if e.export_quantization_method == "gptq" and not e.export_quantization_dataset:
        return ("export_quantization_bit: GPTQ needs export_quantization_dataset (calibration text with a 'text' "
                "column), as in LLaMA-Factory; or set export_quantization_method: bnb")
    if e.export_quantization_method == "bnb" and e.export_quantization_bit not in (4, 8):
        return f"export_quantization_bit: {e.export_quantization_bit}: export_quantization_method: bnb writes 4 or 8 bits"
    if c.model.adapter_name_or_path:
        return ("export_quantization_bit quantizes a merged model: export with the adapters merged first (without "
                "export_quantization_bit), then quantize that directory")
    if e.export_format == "gguf":
        return "export_quantization_bit and export_format: gguf do not combine; a GGUF has its own export_gguf_type"
    return None


def vllm_fits_eval(c: RunConfig) -> str | None:
    if c.model.infer_backend != "vllm":
        return None
    if c.eval.eval_mode == "score":
        return ("eval_mode: score ranks labels by likelihood on the transformers model; infer_backend: vllm "
                "generates (use eval_mode: generate, or infer_backend: huggingface)")
    if c.eval.eval_task == "preference":
        return ("eval_task: preference scores pairs by likelihood on the transformers model; use infer_backend: "
                "huggingface")
    return None


def rewards_are_given(c: RunConfig) -> str | None:
    m = c.method
    if "reward_funcs" not in STAGE_FACTS[m.stage].own_keys:
        return None
    if not m.reward_funcs and not m.reward_model:
        return (f"stage: {m.stage} needs reward_funcs (e.g. label_match; built in: {', '.join(REWARD_NAMES)}; "
                "or file.py:function) or reward_model")
    unknown = [f for f in m.reward_funcs if f not in REWARD_NAMES and ".py:" not in f]
    if unknown:
        return (f"reward_funcs: unknown '{unknown[0]}' (built in: {', '.join(REWARD_NAMES)}; "
                "or your own as file.py:function)")
    count = len(m.reward_funcs) + bool(m.reward_model)
    if m.reward_weights is not None and len(m.reward_weights) != count:
        return f"reward_weights has {len(m.reward_weights)} values for {count} rewards (reward_funcs, reward_model)"
    if "length" in m.reward_funcs and m.length_range is None:
        return "reward_funcs: length needs length_range: [min, max] (completion tokens)"
    return None


CROSS_RULES = (precision_is_one, one_eval_source, eval_strategy_has_data, eval_on_each_fits, token_accuracy_fits,
               quantization_fits_method, streaming_fits,
               masking_is_one, reference_fits_method, reference_options_have_a_reference, vocabulary_fits,
               model_loading_fits, bco_and_ld_fit_the_loss, predict_has_data,
               best_model_has_evaluation, one_optimizer, optimizer_fits_method, optimizer_fits_training,
               sft_loss_fits, llama_pro_fits, sampling_keys_apply, rewards_are_given, distill_beta_is_a_mix,
               gguf_type_is_written, quantized_export_fits, vllm_fits_eval)
