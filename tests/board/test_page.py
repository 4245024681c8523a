"""The board in headless Chromium, on the tiny Qwen2: fill the form, see a rendered sample with its mask,
start a short run, watch its loss curve get points, see it finish with its metrics, run a second one,
compare the two, open the report. Screenshots go to tmp_path/artifacts (docs/board_*.png are these)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from tests.board.conftest import form
from tests.report.chromium import DevTools, needs_chromium


class BoardServer:
    """The board under uvicorn in a thread of the test process."""

    def __init__(self, workspace) -> None:
        import uvicorn

        from instill.board.app import build_app
        from instill.board.jobs import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(build_app(workspace), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def fill(browser: DevTools, values: dict) -> None:
    for key, value in values.items():
        browser.js(f"(() => {{ const el = document.getElementById('f-{key}'); el.value = {json.dumps(value)};"
                   " el.dispatchEvent(new Event('input', {bubbles: true})); })()")


def train(browser: DevTools, name: str) -> None:
    browser.js(f"document.getElementById('run-name').value = {json.dumps(name)}")
    browser.js("document.getElementById('btn-train').click()")
    browser.wait("document.getElementById('runs').classList.contains('on')")
    row = f"document.querySelector('#runs-table tr[data-id=\"saves/{name}\"]')"
    browser.wait(f"{row} !== null", 30)
    browser.js(f"{row}.querySelector('a.open').click()")
    # the loss curve gets points while the run goes on, then the run finishes with its metrics
    browser.wait("document.querySelector('#loss-chart polyline[data-name=loss]')?.dataset.n >= 2", 240)
    browser.wait(f"{row}.dataset.status === 'finished'", 240)


@needs_chromium
@pytest.mark.slow  # two short training processes: 60-120 s on a busy 2-core machine
def test_board_flow_in_chromium(workspace, tiny_qwen2, tmp_path):
    board = BoardServer(workspace)
    browser = DevTools(tmp_path / "profile", f"{board.url}/", size="1280,900")
    artifacts = tmp_path / "artifacts"
    try:
        browser.wait("document.getElementById('f-model_name_or_path') !== null")
        values = form(workspace, tiny_qwen2, max_steps="6", output_dir="saves/first")
        fill(browser, values)
        browser.wait("document.getElementById('yaml').textContent.includes('max_steps: 6')")
        assert browser.js("document.getElementById('form-error').textContent") == ""
        browser.wait("document.querySelector('#dataset-names a')?.textContent === 'rivers'")

        browser.js("document.getElementById('btn-preview').click()")
        browser.wait("document.querySelectorAll('#samples .sample').length === 3", 120)
        trained = browser.js("document.querySelector('#samples .sample .trained').textContent")
        assert trained.startswith("The Silverrun 0.<|im_end|>")
        assert "Name river 0." in browser.js("document.querySelector('#samples .sample .prompt').textContent")
        browser.js("document.getElementById('lang').click()")  # 中文
        assert browser.js("document.getElementById('btn-train').textContent") == "开始训练"
        browser.screenshot(artifacts / "board_config.png")
        browser.js("document.getElementById('lang').click()")

        fill(browser, {"learning_rate": "bad"})  # the CLI's own refusal, shown under the buttons
        browser.wait("document.getElementById('form-error').textContent.includes(\"invalid value for 'learning_rate'\")")
        fill(browser, {"learning_rate": values["learning_rate"]})

        train(browser, "first")
        first = json.loads(urllib.request.urlopen(f"{board.url}/api/run?id=saves/first").read())
        assert first["train_loss"] > 0 and first["tokens_per_s"] > 0 and first["step"] == 6
        cells = browser.js("[...document.querySelectorAll('#runs-table tr[data-id=\"saves/first\"] td')]"
                           ".map(td => td.textContent.trim())")
        assert cells[2:5] == ["finished", "sft", "lora"] and cells[6] != ""
        assert browser.js("document.getElementById('report-link').getAttribute('href')") == "/report?id=saves%2Ffirst"

        browser.js("document.getElementById('tab-config').click()")
        fill(browser, {"output_dir": "saves/second", "learning_rate": "3.0e-3"})
        train(browser, "second")

        for name in ("first", "second"):
            browser.js(f"document.querySelector('#runs-table tr[data-id=\"saves/{name}\"] .pick').click()")
        browser.js("document.getElementById('btn-compare').click()")
        browser.wait("document.querySelectorAll('#compare-chart polyline').length === 2")
        diff = browser.js("[...document.querySelectorAll('#compare-diff td:first-child')].map(td => td.textContent)")
        assert "learning_rate" in diff and "output_dir" in diff and "model_name_or_path" not in diff
        assert browser.js("document.querySelectorAll('#compare-metrics tr').length") > 3
        browser.screenshot(artifacts / "board_compare.png")

        browser.js("location.href = '/report?id=saves%2Ffirst'")
        browser.wait("location.pathname === '/report' && document.readyState === 'complete'")
        assert "first" in browser.js("document.body.innerText")
        assert browser.js("document.querySelectorAll('img').length") >= 1
    finally:
        browser.close()
        board.stop()
    for shot in ("board_config.png", "board_compare.png"):
        assert (artifacts / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
