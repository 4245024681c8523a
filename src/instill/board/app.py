"""The board's HTTP side: the page at GET /, a JSON API under /api, a run's report at GET /report.

Safety: bound to a loopback address, only requests naming a loopback host are served (no DNS rebinding);
bound elsewhere, every request needs the token (cookie set by /?token=T, or the X-Board-Token header).
File access: run files under the workspace (or the output_dir of a run the board started), configs
saved into <workspace>/configs/, and the model and data paths the user types into the form.
"""

from __future__ import annotations

import io
import secrets
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from instill.board import runs as runs_mod
from instill.board.jobs import Jobs, check_name, free_port
from instill.board.schema import form_schema, form_values, to_yaml, validate
from instill.config import RunConfig, build_config
from instill.errors import ConfigError, InstillError
from instill.infer.serve.server import LOCAL_HOSTS

COOKIE = "instill_board"
_PATH_KEYS = ("model_name_or_path", "dataset_dir", "output_dir", "adapter_name_or_path")


class BoardError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def is_loopback(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def in_workspace(values: dict[str, Any], workspace: Path) -> dict[str, Any]:
    """Relative paths the form holds, made absolute against the workspace where such a file exists there
    (the subprocesses run in the workspace; the board's own process may not)."""
    out = dict(values)
    for key in _PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and not value.startswith("pkg:") \
                and (key in ("output_dir", "dataset_dir") or (workspace / value).exists()):
            out[key] = str(workspace / value)
    return out


@lru_cache(maxsize=4)
def _template(model: str, template: str, cache_dir: str | None, trust_remote_code: bool) -> Any:
    from instill.config import ModelArgs
    from instill.data.templates import get_template
    from instill.hub import resolve_model_args
    from instill.model.load import load_tokenizer

    args = ModelArgs(model_name_or_path=model, cache_dir=cache_dir, trust_remote_code=trust_remote_code)
    return get_template(template, load_tokenizer(args, resolve_model_args(args)))


def preview(config: RunConfig, n: int = 3) -> list[dict]:
    """The first `n` loadable training rows as training encodes them: [(text, trained), ...] per sample."""
    from itertools import islice

    from instill.data.registry import resolve
    from instill.data.tokenize import EncodeOptions, encode
    from instill.doctor.data import loadable_examples
    from instill.doctor.template import mask_segments
    from instill.train.stages import STAGES

    if STAGES[config.method.stage].data_kind != "conversation":
        raise ConfigError(f"the sample preview shows conversation data; stage {config.method.stage} reads "
                          f"{STAGES[config.method.stage].data_kind} rows")
    m = config.model
    template = _template(m.model_name_or_path, config.data.template, m.cache_dir, m.trust_remote_code)
    options = EncodeOptions.from_args(config.data)
    samples = []
    for spec in resolve(config.data.dataset or [], config.data.dataset_dir):
        for example in islice(loadable_examples(spec, config), n - len(samples)):
            encoded = encode(example, template, options)
            segments = mask_segments(encoded.input_ids, encoded.labels, template.tokenizer, limit=2000)
            samples.append({"source": example.source, "tokens": len(encoded.input_ids),
                            "trained": sum(label != -100 for label in encoded.labels), "segments": segments})
        if len(samples) >= n:
            break
    return samples


def doctor_rows(config_path: Path) -> dict:
    """`instill doctor CONFIG --no-generate`, in this process: its table as rows, and its text."""
    from contextlib import redirect_stderr

    from instill.doctor.run import diagnose
    from instill.doctor.table import exit_code, render, summary

    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err):
        checks = diagnose(str(config_path), generate=False, out=out)
    return {"rows": [c.__dict__ for c in checks], "table": render(checks), "summary": summary(checks),
            "exit_code": exit_code(checks), "sample": out.getvalue()}


def build_app(workspace: str | Path, token: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The board for `workspace`; `token` is required on every request when set (the CLI sets one off loopback)."""
    workspace = Path(workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    jobs = Jobs(workspace)
    app = FastAPI(title="instill board", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workspace, app.state.jobs = workspace, jobs

    @app.exception_handler(BoardError)
    async def _board_error(request: Request, err: BoardError) -> JSONResponse:
        return JSONResponse({"error": err.message}, err.status)

    @app.exception_handler(InstillError)
    async def _instill_error(request: Request, err: InstillError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, 400)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if token is None:
            if is_loopback(host) and not is_loopback(_host_name(request.headers.get("host", ""))) \
                    and _host_name(request.headers.get("host", "")) != "localhost":
                return JSONResponse({"error": "this board answers only requests to 127.0.0.1 / localhost"}, 403)
            return await call_next(request)
        given = request.query_params.get("token") if request.url.path == "/" else None
        if given is not None and secrets.compare_digest(given.encode(), token.encode()):
            response = RedirectResponse("/", 303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        sent = request.headers.get("x-board-token") or request.cookies.get(COOKIE) or ""
        if not secrets.compare_digest(sent.encode(), token.encode()):
            return JSONResponse({"error": "this board needs its token: open /?token=<token> (printed when it "
                                 "started) or send the X-Board-Token header"}, 401)
        return await call_next(request)

    def known_runs() -> dict[str, Path]:
        extra = [Path(r["output_dir"]) for r in jobs.records() if r["kind"] == "train" and r.get("output_dir")]
        return {runs_mod.run_id(p, workspace): p for p in runs_mod.find_runs(workspace, extra)}

    def run_dir(run_id: str) -> Path:
        found = known_runs().get(run_id)
        if found is None:
            raise BoardError(404, f"no run {run_id!r} in workspace {workspace}")
        return found

    def run_row(out: Path, with_curves: bool = False) -> dict:
        return runs_mod.summary(out, workspace, jobs.train_job(out), with_curves)

    def run_config_file(out: Path) -> Path:
        """The YAML that started the run (the board's saved one), else the run's resolved run_config.yaml."""
        mine = jobs.train_job(out)
        if mine and Path(mine["config"]).is_file():
            return Path(mine["config"])
        if not (out / "run_config.yaml").is_file():
            raise BoardError(409, f"{out} has no run_config.yaml: it never started training")
        return out / "run_config.yaml"

    def config_of(body: dict, training: bool = True) -> tuple[dict, RunConfig]:
        values = form_values(body.get("values") or {})
        return values, validate(values, training)

    def output_dir(values: dict) -> Path:
        out = Path(str(values.get("output_dir") or "saves"))
        return (out if out.is_absolute() else workspace / out).resolve()

    # ---------------------------------------------------------------- the page

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("instill.board").joinpath("static/board.html").read_text("utf-8"))

    @app.get("/report", include_in_schema=False)
    def report(id: str) -> Response:
        path = run_dir(id) / "report.html"
        if not path.is_file():
            raise BoardError(404, f"{path} is not written yet (the run writes it when it finishes; "
                                  f"or run: instill report {run_dir(id)})")
        return FileResponse(path, media_type="text/html")

    # ---------------------------------------------------------------- building a config

    @app.get("/api/schema")
    def schema() -> dict:
        return {"fields": form_schema(), "workspace": str(workspace)}

    @app.get("/api/datasets")
    def datasets(dataset_dir: str = "data") -> dict:
        from instill.data.registry import load_registry

        folder = Path(dataset_dir) if Path(dataset_dir).is_absolute() else workspace / dataset_dir
        return {"datasets": sorted(load_registry(folder))}

    @app.post("/api/yaml")
    def to_text(body: dict = Body(...)) -> dict:
        values = form_values(body.get("values") or {})
        text = to_yaml(values)
        try:
            config = validate(values)
        except ConfigError as err:
            return {"yaml": text, "error": str(err), "notes": []}
        return {"yaml": text, "error": None, "notes": config.notes}

    @app.post("/api/save")
    def save(body: dict = Body(...)) -> dict:
        values, _ = config_of(body)
        name = check_name(body.get("name"), "config name")
        path = workspace / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml(values), encoding="utf-8")
        return {"path": str(path), "command": f"instill train {path.relative_to(workspace)}"}

    @app.post("/api/preview")
    def sample_preview(body: dict = Body(...)) -> dict:
        values = form_values(body.get("values") or {})
        config = build_config(in_workspace(values, workspace), source="form")
        n = body.get("n") or 3
        if not isinstance(n, int) or not 1 <= n <= 20:
            raise BoardError(400, "n: the number of samples to show, 1 to 20")
        return {"samples": preview(config, n)}

    @app.post("/api/check")
    def check(body: dict = Body(...)) -> dict:
        values = form_values(body.get("values") or {})
        build_config(values, source="form")
        path = workspace / ".board" / "check.yaml"
        path.write_text(to_yaml(in_workspace(values, workspace)), encoding="utf-8")
        return doctor_rows(path)

    # ---------------------------------------------------------------- training

    @app.post("/api/train")
    def train(body: dict = Body(...)) -> dict:
        values, _ = config_of(body)
        name = check_name(body.get("name"), "run name")
        jobs.busy(list(known_runs().values()))
        path = workspace / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml(values), encoding="utf-8")
        return jobs.start("train", [str(path)], output_dir(values), config=str(path))

    @app.get("/api/runs")
    def runs() -> dict:
        rows = [run_row(p) for p in known_runs().values()]
        return {"runs": sorted(rows, key=lambda r: r["mtime"], reverse=True), "workspace": str(workspace)}

    @app.get("/api/run")
    def run(id: str) -> dict:
        out = run_dir(id)
        row = run_row(out, with_curves=True)
        row["jobs"] = [r for r in jobs.records() if r.get("output_dir") == str(out) or r.get("run") == id]
        for record in row["jobs"]:
            if record["kind"] == "serve" and record["alive"]:
                record["ready"] = _answers(record["url"] + "health")
        return row

    @app.post("/api/run/stop")
    def stop(body: dict = Body(...)) -> dict:
        return {"signalled": jobs.stop_run(run_dir(str(body.get("id"))))}

    @app.post("/api/run/resume")
    def resume(body: dict = Body(...)) -> dict:
        out = run_dir(str(body.get("id")))
        jobs.busy(list(known_runs().values()))
        config = run_config_file(out)
        return jobs.start("train", [str(config), "resume_from_checkpoint=true"], out, config=str(config))

    @app.post("/api/run/eval")
    def evaluate(body: dict = Body(...)) -> dict:
        run_id = str(body.get("id"))
        out = run_dir(run_id)
        return jobs.start("eval", [str(run_config_file(out)), "--compare", "base"], run=run_id)

    @app.post("/api/run/chat")
    def chat(body: dict = Body(...)) -> dict:
        run_id = str(body.get("id"))
        out = run_dir(run_id)
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        return jobs.start("serve", [str(run_config_file(out)), "--host", "127.0.0.1", "--port", str(port)],
                          run=run_id, url=url)

    @app.post("/api/run/export")
    def export(body: dict = Body(...)) -> dict:
        run_id = str(body.get("id"))
        out = run_dir(run_id)
        config = runs_mod.run_config(out)
        name = check_name(out.name, "run folder")
        target = body.get("export_dir") or str(workspace / "exports" / name)
        adapter = (out / "adapter_config.json").is_file()
        values = {"model_name_or_path": config.get("model_name_or_path") if adapter else str(out),
                  "template": config.get("template", "auto"), "export_dir": str(target),
                  "trust_remote_code": bool(config.get("trust_remote_code", False))}
        if adapter:
            values["adapter_name_or_path"] = str(out)
        build_config(values, source="export")
        path = workspace / ".board" / f"export-{name}.yaml"
        path.write_text(yaml.safe_dump(values, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return jobs.start("export", [str(path)], run=run_id, export_dir=str(target))

    @app.get("/api/compare")
    def compare(id: list[str] = Query(...)) -> dict:  # noqa: B008
        if len(id) < 2:
            raise BoardError(400, "compare needs two or more runs")
        return runs_mod.compare([run_row(run_dir(i), with_curves=True) for i in id])

    # ---------------------------------------------------------------- jobs

    @app.get("/api/jobs")
    def job_list() -> dict:
        return {"jobs": jobs.records()}

    @app.get("/api/job")
    def job(id: str) -> dict:
        record = jobs.get(id)
        record["log_tail"] = jobs.log_tail(id)
        if record["kind"] == "eval" and record.get("run"):
            record["comparison"] = runs_mod.read_json(run_dir(record["run"]) / "eval" / "comparison.json") or None
        if record["kind"] == "serve" and record["alive"]:
            record["ready"] = _answers(record["url"] + "health")
        return record

    @app.post("/api/job/stop")
    def job_stop(body: dict = Body(...)) -> dict:
        jobs.stop_job(str(body.get("id")))
        return {"ok": True}

    return app


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
