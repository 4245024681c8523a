"""The chat page at GET / in headless Chromium: pick a model, type, watch the answer stream, clear.

Chromium is driven over the DevTools protocol (a websocket), offline: every host name fails to
resolve, so the page works only if it needs nothing beyond this server. The screenshot is kept in
the test's tmp_path.
"""

from __future__ import annotations

import json
import re
import urllib.request

from tests.report.chromium import DevTools, needs_chromium


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

        shot = browser.screenshot(tmp_path / "chat_page.png")
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
