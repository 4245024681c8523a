"""Headless Debian Chromium for tests: the flags this machine needs, a DOM dump, a screenshot, and `DevTools`
to drive a page over the DevTools protocol (a websocket)."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Root, no display, closed network (see .library/env/machines/python.md): without the
# background-networking flags Chromium keeps trying Google's hosts.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]
# Every host name fails to resolve: a page that fetches anything from the network shows it.
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND"]

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")


def chromium(profile: Path, *args: str, offline: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *(OFFLINE if offline else []), f"--user-data-dir={profile}", *args],
                          check=False, capture_output=True, text=True, timeout=180)


def dump_dom(profile: Path, url: str, budget_ms: int = 10000, offline: bool = True) -> str:
    """The DOM after load and `budget_ms` of virtual time (scripts run, single-page apps render)."""
    return chromium(profile, f"--virtual-time-budget={budget_ms}", "--dump-dom", url, offline=offline).stdout


def screenshot(profile: Path, url: str, path: Path, size: str = "1280,3000", budget_ms: int = 5000,
               offline: bool = True) -> Path:
    done = chromium(profile, f"--window-size={size}", f"--virtual-time-budget={budget_ms}", f"--screenshot={path}",
                    url, offline=offline)
    assert path.is_file(), done.stderr[-2000:]
    return path


# Every host name but this machine fails to resolve: a page that fetches anything from elsewhere shows it.
OFFLINE_BUT_LOOPBACK = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


class DevTools:
    """Just enough of the DevTools protocol: send a command, wait for its answer."""

    def __init__(self, profile, url: str, size: str = "1100,800") -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, *OFFLINE_BUT_LOOPBACK, f"--user-data-dir={profile}",
                                      f"--window-size={size}", "--remote-debugging-port=0", url], stdout=subprocess.DEVNULL,
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

    def type(self, text: str, element: str = "input") -> None:
        """Type `text` into the element with that id and press Enter."""
        self.js(f"document.getElementById('{element}').focus()")
        self.send("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        self.stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
