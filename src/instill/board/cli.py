"""`instill board [--workspace DIR] [--host 127.0.0.1] [--port 7860] [--token T]`."""

from __future__ import annotations

import argparse
import os


def _board(args: argparse.Namespace) -> int:
    import secrets
    from pathlib import Path

    import uvicorn

    from instill.board.app import build_app, is_loopback
    from instill.console import say
    from instill.errors import ConfigError
    from instill.infer.cli import port_free

    workspace = Path(args.workspace).resolve()
    if workspace.exists() and not workspace.is_dir():
        raise ConfigError(f"--workspace {workspace} is a file, not a folder")
    token = args.token or os.environ.get("INSTILL_BOARD_TOKEN") or None
    if token is None and not is_loopback(args.host):
        token = secrets.token_urlsafe(24)
        say(f"listening on {args.host}: a token is required; this one was made for you: {token}")
    port_free(args.host, args.port)
    app = build_app(workspace, token, args.host)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    say(f"board for workspace {workspace}: http://{shown}:{args.port}/" + (f"?token={token}" if token else ""))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="off")
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises it again for the caller
        pass
    finally:
        servers = app.state.jobs.stop_servers()
    if servers:
        say(f"stopped {len(servers)} chat server{'s' * (len(servers) != 1)} it opened")
    say("board stopped; runs it started go on (a new `instill board` on this workspace finds them)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill board`."""
    board = subparsers.add_parser(
        "board", help="the browser front end: build configs, launch and watch runs, compare, evaluate, chat",
        description="Open a page that builds a training YAML from the config schema, previews samples with the\n"
                    "trained tokens highlighted, runs the doctor, starts `instill train` and shows every run of the\n"
                    "workspace (CLI-started ones too) with its curves; compare runs, evaluate, chat, export.",
        epilog="examples:\n  instill board\n  instill board --workspace ~/runs --port 7861\n"
               "  instill board --host 0.0.0.0 --token s3cret   # reachable from other machines, token required",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    board.add_argument("--workspace", default=".", metavar="DIR",
                       help="the folder whose runs are listed; configs are saved in DIR/configs (default: here)")
    board.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    board.add_argument("--port", type=int, default=7860)
    board.add_argument("--token", help="required on every request (default: none on 127.0.0.1; made for you "
                                       "elsewhere); also INSTILL_BOARD_TOKEN")
    board.set_defaults(func=_board)
