"""`instill chat` and `instill serve`.

    instill chat  config.yaml [key=value ...] [--model auto|base|tuned]
    instill serve config.yaml [key=value ...] [--model auto|base|tuned] [--host 127.0.0.1] [--port 8000]
                  [--api-key KEY] [--max-concurrency 8] [--batching continuous|static] [--max-queue 64] [--max-tokens N] [--max-model-len N]

Both read the training config (do_train is ignored) and pick the model as `instill eval` does.
"""

from __future__ import annotations

import argparse
import os


def _config(args: argparse.Namespace):
    from instill.config import build_config, load_yaml

    return build_config({**load_yaml(args.config), "do_train": False}, args.overrides, source=str(args.config))


def _chat(args: argparse.Namespace) -> int:
    from instill.infer.chat import run_chat

    run_chat(_config(args), args.model)
    return 0


def port_free(host: str, port: int) -> None:
    """Fail in one line, before the model loads, when the address cannot be bound."""
    import socket

    from instill.errors import ConfigError

    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ConfigError(f"--host {host}: {err.strerror}") from None
    with socket.socket(info[0], socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(info[4])
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port") from None


def _serve(args: argparse.Namespace) -> int:
    from instill.console import say
    from instill.errors import ConfigError
    from instill.infer.engine import check_streamable
    from instill.infer.serve.served import load_served
    from instill.infer.serve.server import Limits, exposure_warning, run_server

    config = _config(args)
    if config.model.infer_backend == "vllm":
        raise ConfigError("instill serve batches on transformers; infer_backend: vllm is for chat, predict and eval "
                          "generation (set infer_backend=huggingface, or serve with `vllm serve`)")
    api_key = args.api_key or os.environ.get("INSTILL_API_KEY") or None
    for flag in ("max_concurrency", "max_queue", "max_tokens", "max_model_len"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "max_queue" else 1):
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least {0 if flag == 'max_queue' else 1}")
    warning = exposure_warning(args.host, api_key)
    if warning:
        say(f"warning: {warning}")
    port_free(args.host, args.port)
    check_streamable(config.eval, "instill serve")
    served = load_served(config, args.model, args.max_model_len)
    e = config.eval
    limits = Limits(max_tokens=args.max_tokens or e.max_new_tokens or 512,
                    temperature=e.temperature if e.do_sample else 0.0, top_p=e.top_p if e.do_sample else 1.0,
                    top_k=e.top_k if e.do_sample else None, repetition_penalty=e.repetition_penalty,
                    skip_special_tokens=e.skip_special_tokens)
    say(f"serving {served.describe()}")
    say(f"models: {', '.join(served.models)} · context {served.context} tokens · at most {limits.max_tokens} "
        f"tokens an answer · {args.batching} batching of up to {args.max_concurrency} requests, "
        f"{args.max_queue} more may wait")
    say(f"OpenAI API at http://{args.host}:{args.port}/v1 · chat page at http://{args.host}:{args.port}/"
        + (" · API key required" if api_key else ""))
    run_server(served, args.host, args.port, api_key, args.max_concurrency, args.max_queue, limits,
               batching=args.batching)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML file with LLaMA-Factory style keys (the one you trained with)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="override config keys")
    parser.add_argument("--model", choices=("auto", "base", "tuned"), default="auto",
                        help="auto: the tuned model if there is one (adapter_name_or_path or output_dir), else the base")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill chat` and `instill serve`."""
    chat = subparsers.add_parser("chat", help="chat with the model in the terminal (streamed answers)",
                                 epilog="examples:\n  instill chat examples/demo_lora.yaml\n"
                                        "  instill chat examples/demo_lora.yaml --model base",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(chat)
    chat.set_defaults(func=_chat)

    # `api` and `webchat`: LLaMA-Factory's names for the same server and its chat page.
    serve = subparsers.add_parser(
        "serve", aliases=["api", "webchat"], help="OpenAI-compatible API and a chat page for the model",
        description="Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, "
                    "/v1/models) with a chat page at /. Each adapter in adapter_name_or_path is served beside "
                    "the base under its directory's name.",
        epilog="examples:\n  instill serve examples/demo_lora.yaml\n"
               "  INSTILL_API_KEY=s3cret instill serve examples/demo_lora.yaml --port 9000 --max-concurrency 16\n"
               "  instill api examples/demo_lora.yaml      # LLaMA-Factory's name for the same server\n"
               "  instill webchat examples/demo_lora.yaml  # the same; open the chat page it prints",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument("--api-key", metavar="KEY",
                       help="require 'Authorization: Bearer KEY' (default: the INSTILL_API_KEY environment variable, "
                            "which, unlike this option, other users cannot read in `ps`)")
    serve.add_argument("--max-concurrency", type=int, default=8, metavar="N",
                       help="requests generated together (default 8)")
    serve.add_argument("--batching", choices=("continuous", "static"), default="continuous",
                       help="continuous (default): requests join the running batch at every step and leave as "
                            "they finish; static: a batch runs until its longest answer ends")
    serve.add_argument("--max-queue", type=int, default=64, metavar="N",
                       help="requests that may wait for a batch; beyond that the answer is 429 (default 64)")
    serve.add_argument("--max-tokens", type=int, metavar="N",
                       help="most tokens one answer may have, and the default (default: max_new_tokens, else 512)")
    serve.add_argument("--max-model-len", type=int, metavar="N",
                       help="cap the context (prompt + answer) below the model's own")
    serve.set_defaults(func=_serve)
