"""Headless Debian Chromium for tests: the flags this machine needs, a DOM dump and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
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
