"""The chat page at GET / in headless Chromium: pick a model, type, watch the answer stream, clear.

Chromium is driven over the DevTools protocol (a websocket), offline: every host name fails to
resolve, so the page works only if it needs nothing beyond this server. The screenshot is kept in
the test's tmp_path.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import subprocess
import time
import urllib.request

from tests.report.chromium import CHROMIUM, FLAGS, needs_chromium

# Every host name but this machine fails to resolve: a page that fetches anything from elsewhere shows it.
OFFLINE_BUT_LOOPBACK = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


class DevTools:
    """Just enough of the DevTools protocol: send a command, wait for its answer."""

    def __init__(self, profile, url: str) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, *OFFLINE_BUT_LOOPBACK, f"--user-data-dir={profile}", "--window-size=1100,800",
                                      "--remote-debugging-port=0", url], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        try:
            for line in self.proc.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
                found = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
                if found:
                    break
            else:
                raise RuntimeError("Chromium did not open a DevTools port")
            with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/json/list", timeout=10) as response:
                page = next(t for t in json.loads(response.read()) if t["type"] == "page")
            self.stack = contextlib.ExitStack()
            self.ws = self.stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        self.ids = itertools.count(1)

    def send(self, method: str, **params):
        call = next(self.ids)
        self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        for _ in range(100):
            try:
                result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
                break
            except RuntimeError as err:  # the page is still loading
                if "execution context" not in str(err):
                    raise
                time.sleep(0.1)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait(self, expression: str, seconds: float = 60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for: {expression}")

    def type(self, text: str) -> None:
        self.js("document.getElementById('input').focus()")
        self.send("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def close(self) -> None:
        self.stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@needs_chromium
def test_chat_page_streams_answers_in_chromium(serve_app, tmp_path):
    app = serve_app(max_tokens=24)
    client = app.client()
    browser = DevTools(tmp_path / "profile", f"{app.url}/")
    try:
        assert browser.wait("document.querySelectorAll('#model option').length === 3 && "
                            "[...document.querySelectorAll('#model option')].map(o => o.value).join()") == \
            "tiny,alpha,beta"
        browser.js("document.getElementById('model').value = 'beta'")
        # record every length the answer's text has on screen, to see it grow piece by piece
        browser.js("""window.lengths = [];
            new MutationObserver(() => {
              const answers = document.querySelectorAll('.assistant');
              if (answers.length) window.lengths.push(answers[answers.length - 1].textContent.length);
            }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});""")

        browser.type("Hello there")
        browser.wait("document.querySelector('.assistant')?.dataset.state === 'done'")
        first = browser.js("document.querySelector('.assistant').textContent")
        lengths = browser.js("window.lengths")
        expected = client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "Hello there"}],
                                                  temperature=0).choices[0].message.content
        assert first == expected and first
        assert len(set(lengths)) >= 3, lengths  # the text arrived in pieces, not at once

        browser.type("And then?")  # the history goes with the second question
        browser.wait("document.querySelectorAll('.assistant')[1]?.dataset.state === 'done'")
        second = browser.js("document.querySelectorAll('.assistant')[1].textContent")
        assert second == client.chat.completions.create(model="beta", temperature=0, messages=[
            {"role": "user", "content": "Hello there"}, {"role": "assistant", "content": first},
            {"role": "user", "content": "And then?"}]).choices[0].message.content
        assert browser.js("document.querySelector('.user').textContent") == "Hello there"

        shot = tmp_path / "chat_page.png"
        shot.write_bytes(base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"]))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

        browser.js("document.getElementById('clear').click()")
        assert browser.js("document.querySelectorAll('.assistant').length") == 0
        assert browser.js("document.getElementById('log').textContent") == "history cleared"
    finally:
        browser.close()
    metrics = json.loads(urllib.request.urlopen(f"{app.url}/metrics").read())
    assert metrics["requests"] == 4  # two from the page, two from the client


def test_chat_page_is_served_without_external_resources(serve_app):
    app = serve_app()
    with urllib.request.urlopen(f"{app.url}/") as response:
        assert response.headers["content-type"].startswith("text/html")
        html = response.read().decode()
    assert "/v1/chat/completions" in html and "/v1/models" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the page must not load anything from elsewhere"
