"""`instill chat`: talk to the model in the terminal, the answer streamed token by token.

The model is chosen as `instill eval` chooses it and prompts render with its training template
(`load_generator`). Greedy unless the config sets do_sample (then temperature/top_k/top_p), with its
repetition_penalty; answers stop at the template's end of turn or after max_new_tokens (default 512; with
max_length and no max_new_tokens, when prompt + answer reach max_length). Generation runs on a worker thread
so that Ctrl-C, which Python delivers to the main thread, stops the answer and not the program.
With infer_backend: vllm the answer comes whole from vLLM (infer/vllm_engine.py), not streamed.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
from typing import Any, Callable, TextIO

from instill.config import RunConfig
from instill.console import say
from instill.data.templates import TemplateChoice
from instill.infer.serve.rows import Row, generate_rows

HELP = "/reset clears the history, /system <text> sets the system prompt, /exit quits; Ctrl-C stops an answer"


def stream_answer(generator: Any, prompt: list[int], row_args: dict, write: Callable[[str], None]) -> tuple[str, str]:
    """Generate one answer, writing text as it comes; (text, finish_reason). Ctrl-C stops it ("stopped")."""
    events: queue.Queue = queue.Queue()
    row = Row(prompt, generator.tokenizer, frozenset(generator.stop_ids), emit=lambda k, v: events.put((k, v)),
              **row_args)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            generate_rows(generator.model, [row], generator.pad_id)
        except Exception as err:  # reported through the row's "error" event
            failure.append(err)

    worker = threading.Thread(target=work, name="instill-chat", daemon=True)
    worker.start()
    parts: list[str] = []
    try:
        while True:
            kind, value = events.get()
            if kind == "text":
                parts.append(value)
                write(value)
            elif kind == "end":
                return "".join(parts), value
            else:
                return "".join(parts), f"error: {value}"
    except KeyboardInterrupt:
        row.cancel()
        return "".join(parts), "stopped"
    finally:
        worker.join()


def run_chat(config: RunConfig, which: str = "auto", read: Callable[[str], str] = input,
             out: TextIO | None = None) -> None:
    """The read-answer loop; returns on /exit or end of input. `out` defaults to sys.stdout at call time."""
    from instill.infer.engine import Decoding, check_streamable, load_generator
    from instill.infer.vllm_engine import load_vllm_generator
    from instill.model.choice import choose_model
    from instill.model.load import Precision

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C stops an answer: Python leaves SIGINT ignored when it started so (a job started in the background)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if config.model.torch_num_threads:
        import torch

        torch.set_num_threads(config.model.torch_num_threads)
    check_streamable(config.eval, "instill chat")
    choice = choose_model(config, which)
    precision = Precision(config.train.bf16, config.train.fp16)
    vllm = config.model.infer_backend == "vllm"
    if vllm:
        generator = load_vllm_generator(choice.model_args, TemplateChoice.of(config.data), choice.adapters, precision)
        context = config.model.vllm_maxlen
    else:
        generator = load_generator(choice.model_args, TemplateChoice.of(config.data), choice.adapters, precision)
        context = (getattr(generator.model.config, "max_position_embeddings", None)
                   or generator.tokenizer.model_max_length)
    e = config.eval
    row_args = {"max_new_tokens": e.max_new_tokens or 512, "temperature": e.temperature if e.do_sample else 0.0,
                "top_p": e.top_p if e.do_sample else 1.0, "top_k": e.top_k if e.do_sample else None,
                "repetition_penalty": e.repetition_penalty, "skip_special_tokens": e.skip_special_tokens}
    by_length = e.max_new_tokens is None and e.max_length is not None  # max_length bounds prompt + answer

    stream = out if out is not None else sys.stdout

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    mode = f"sampling at temperature {e.temperature}, top_p {e.top_p}" if e.do_sample else "greedy"
    say(f"chatting with {choice.describe()} (template {generator.template.name}, {mode}, "
        + (f"prompt + answer at most {e.max_length} tokens)" if by_length
           else f"at most {row_args['max_new_tokens']} tokens an answer)"))
    say(HELP)
    history: list[dict] = []
    system: str | None = None
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            write("\n")
            return
        except KeyboardInterrupt:  # at the prompt, Ctrl-C clears the line, as in a shell
            write("\n")
            continue
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            if command in ("/exit", "/quit"):
                return
            if command == "/reset":
                history.clear()
                say("history cleared")
            elif command == "/system":
                system = arg.strip() or None
                say(f"system prompt set: {system}" if system else "system prompt removed")
            else:
                say(f"unknown command {command}; {HELP}")
            continue
        messages = ([{"role": "system", "content": system}] if system else []) + history
        messages.append({"role": "user", "content": line})
        prompt = generator.encode_prompts([messages])[0][0]
        room = (min(context, e.max_length) if by_length else context) - len(prompt)
        if room < 1:
            say(f"the conversation is {len(prompt)} tokens, the model's context {context}"
                + (f" and max_length {e.max_length}" if by_length else "") + "; /reset to start over")
            continue
        write("assistant> ")
        budget = room if by_length else min(row_args["max_new_tokens"], room)
        if vllm:  # vLLM's offline engine answers whole (no token stream, no Ctrl-C stop)
            answer = generator.generate_ids([prompt], budget, 1, row_args["temperature"], row_args["top_p"],
                                            decoding=Decoding.of(e))[0]
            write(answer)
            finish = "stop"
        else:
            answer, finish = stream_answer(generator, prompt, {**row_args, "max_new_tokens": budget}, write)
        if finish == "stopped":
            write(" [stopped]")
        elif finish == "length":
            write(" [max tokens]")
        elif finish.startswith("error"):
            write(f"\n[{finish}]")
        write("\n")
        if not finish.startswith("error"):
            history += [{"role": "user", "content": line}, {"role": "assistant", "content": answer}]
