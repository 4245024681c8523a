"""The demo's tuned model in llama.cpp: the GGUF `instill export` wrote answers the held-out headlines.

    instill export examples/export_demo.yaml export_format=gguf export_gguf_type=f16 export_dtype=float16 \\
        export_dir=saves/demo-gguf
    python examples/demo_gguf.py saves/demo-gguf

Prints the GGUF and Modelfile paths and the two ollama commands. Where llama-cpp-python is installed
(`pip install 'instill[llamacpp]'`), llama.cpp loads the GGUF and answers the held-out headlines greedily
through its own chat completion (the tokenizer and chat template it reads from the file); the answers are
compared with instill's, greedy, on the merged model in the same folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from instill.config import ModelArgs
from instill.evaluate.classify import normalize
from instill.infer.engine import load_generator

DATA = Path(__file__).resolve().parent / "data" / "demo_headlines_test.json"
MAX_NEW_TOKENS = 16


def main(export_dir: str) -> int:
    folder = Path(export_dir)
    ggufs = sorted(folder.glob("model-*.gguf"))
    if not ggufs:
        print(f"{folder}: no model-*.gguf; run instill export with export_format=gguf first", file=sys.stderr)
        return 2
    gguf = ggufs[0]
    print(f"GGUF: {gguf} ({gguf.stat().st_size / 2**20:.0f} MiB); Ollama: {folder / 'Modelfile'}")
    print(f"  ollama create {folder.name} -f {folder / 'Modelfile'} && ollama run {folder.name}")
    if importlib.util.find_spec("llama_cpp") is None:
        print("llama.cpp check skipped: llama-cpp-python is not installed (pip install 'instill[llamacpp]')")
        return 0
    import llama_cpp

    rows = json.loads(DATA.read_text(encoding="utf-8"))
    conversations = [[{"role": "user", "content": f"{r['instruction']}\n{r['input']}"}] for r in rows]
    labels = [r["output"] for r in rows]

    started = time.perf_counter()
    ours = load_generator(ModelArgs(model_name_or_path=str(folder))).generate(conversations,
                                                                             max_new_tokens=MAX_NEW_TOKENS)
    ours_s = time.perf_counter() - started
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=os.cpu_count(), verbose=False)
    started = time.perf_counter()
    theirs = [llm.create_chat_completion(messages=c, max_tokens=MAX_NEW_TOKENS, temperature=0.0, top_k=1)
              ["choices"][0]["message"]["content"] for c in conversations]
    theirs_s = time.perf_counter() - started
    llm.close()

    for conversation, a, b in list(zip(conversations, ours, theirs))[:5]:
        headline = conversation[0]["content"].split("\n")[-1][:50]
        print(f"  {headline:<50} | instill: {a.strip()[:20]:<20} | llama.cpp: {b.strip()[:20]}")
    same = sum(a.strip() == b.strip() for a, b in zip(ours, theirs))
    right = [sum(normalize(p) == normalize(y) for p, y in zip(answers, labels)) for answers in (ours, theirs)]
    n = len(rows)
    print(f"llama.cpp on {gguf.name}: {same}/{n} greedy answers identical to instill's on the merged model; "
          f"right label: llama.cpp {right[1]}/{n}, instill {right[0]}/{n} ({theirs_s:.1f} s vs {ours_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "saves/demo-gguf"))
