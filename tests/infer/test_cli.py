"""`instill serve` and `instill chat` as a user runs them: separate processes, a real terminal for chat."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from tests.infer.conftest import free_port, write_yaml

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}


def instill(*args: str) -> list[str]:
    return [sys.executable, "-m", "instill.cli", *args]


def wait_healthy(url: str, proc: subprocess.Popen, log, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"instill serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"instill serve did not come up:\n{log.read_text()[-3000:]}")


def test_instill_serve_with_an_api_key_from_the_environment(serve_yaml, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(instill("serve", str(serve_yaml), "--port", str(port), "--max-model-len", "256"),
                                stdout=out, stderr=subprocess.STDOUT, env={**ENV, "INSTILL_API_KEY": "k3y"})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k3y", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny", "alpha", "beta"]
        answer = client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=3, temperature=0)
        assert answer.usage.completion_tokens == 3 and answer.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="guess", max_retries=0).models.list()
        # an idle keep-alive connection outlives the clients' own expiry (httpx's 5 s), so none sends on a closing one
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        assert connection.getresponse().read()
        sock = connection.sock
        time.sleep(6)
        connection.request("GET", "/health")
        assert connection.getresponse().read() and connection.sock is sock  # the same connection, still open
        connection.close()

        # a second server on the same port fails in one line, before loading anything
        busy = subprocess.run(instill("serve", str(serve_yaml), "--port", str(port)), env=ENV, capture_output=True,
                              text=True, timeout=120)
        assert busy.returncode == 2 and "Traceback" not in busy.stderr
        assert busy.stderr.strip() == f"instill: error: cannot listen on 127.0.0.1:{port} (Address already in use); " \
                                      "choose another --port"
        # listening beyond this machine without a key: a warning first (here the port is taken, so it stops)
        exposed = subprocess.run(instill("serve", str(serve_yaml), "--host", "0.0.0.0", "--port", str(port)),
                                 env=ENV, capture_output=True, text=True, timeout=120)
        assert exposed.returncode == 2 and "warning: listening on 0.0.0.0 without an API key" in exposed.stdout
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "[instill] server stopped: 1 requests in 1 batches (largest 1), 3 tokens generated" in text
    assert "[instill] models: tiny, alpha, beta · context 256 tokens" in text
    assert "API key required" in text and "answer of 3 tokens (length)" in text


def test_instill_serve_user_mistakes_are_one_line(serve_yaml, tmp_path):
    for args, message in [
        (("serve", str(tmp_path / "missing.yaml")), "config file not found"),
        (("serve", str(serve_yaml), "--max-concurrency", "0"), "--max-concurrency must be at least 1"),
        (("serve", str(serve_yaml), "--model", "tuned", "adapter_name_or_path=null"), "no tuned model"),
        (("chat", str(serve_yaml), "learning_rat=1"), "unknown key 'learning_rat'"),
        (("chat", str(serve_yaml), "num_beams=2"), "num_beams: 2: instill chat streams each token"),
    ]:
        done = subprocess.run(instill(*args), env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


ANSWER = re.compile(r"assistant> (.*?)(?: \[max tokens\])?\n", re.S)


def test_instill_chat_in_a_terminal(tiny_qwen2, adapters, tmp_path):
    """Questions and streamed answers, history, /system, /reset, /exit — through a pseudo-terminal.

    Each answer must be what eval's generator says for the conversation so far (greedy, same model)."""
    pexpect = pytest.importorskip("pexpect")
    from instill.config import ModelArgs
    from instill.infer.engine import load_generator

    config = write_yaml(tmp_path / "chat.yaml", model_name_or_path=str(tiny_qwen2), template="auto",
                        adapter_name_or_path=str(adapters["alpha"]), output_dir=str(tmp_path / "out"),
                        max_new_tokens=60)
    generator = load_generator(ModelArgs(model_name_or_path=str(tiny_qwen2)), "auto", adapters["alpha"])
    child = pexpect.spawn(sys.executable, ["-m", "instill.cli", "chat", str(config)], env=ENV, encoding="utf-8",
                          timeout=120, dimensions=(50, 250))
    try:
        child.expect_exact("/reset clears the history")
        child.expect_exact("you> ")

        def turn(line: str) -> str:
            """What the terminal shows after `line` is entered, up to the next prompt."""
            child.sendline(line)
            child.expect_exact("you> ")
            return child.before.replace("\r\n", "\n").removeprefix(line + "\n")

        def ask(question: str) -> str:
            shown = turn(question)
            match = ANSWER.fullmatch(shown)
            assert match, shown
            return match.group(1)

        def expected(conversation: list[dict]) -> str:
            return generator.generate([conversation], max_new_tokens=60)[0]

        first = ask("Hello there")
        assert first.strip() == expected([{"role": "user", "content": "Hello there"}]) != ""
        second = ask("And then?")
        assert second.strip() == expected([{"role": "user", "content": "Hello there"},
                                           {"role": "assistant", "content": first},
                                           {"role": "user", "content": "And then?"}])
        assert turn("/reset") == "[instill] history cleared\n"
        assert turn("/system Answer briefly.") == "[instill] system prompt set: Answer briefly.\n"
        third = ask("Hello there")
        assert third.strip() == expected([{"role": "system", "content": "Answer briefly."},
                                          {"role": "user", "content": "Hello there"}])
        assert third != first  # the system prompt is part of the prompt
        assert turn("/nonsense").startswith("[instill] unknown command /nonsense;")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def test_ctrl_c_stops_the_answer_not_the_program(tiny_qwen2, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    config = write_yaml(tmp_path / "chat.yaml", model_name_or_path=str(tiny_qwen2), template="auto",
                        output_dir=str(tmp_path / "out"), max_new_tokens=1500)
    child = pexpect.spawn(sys.executable, ["-m", "instill.cli", "chat", str(config)], env=ENV, encoding="utf-8",
                          timeout=120, dimensions=(50, 250))
    try:
        for question in ("Tell me everything.", "And more."):
            child.expect_exact("you> ")
            child.sendline(question)
            child.expect_exact("assistant> ")
            child.expect(r"\S")  # streamed text is on the screen: the answer is under way
            # " [stopped]" is written only when Ctrl-C ended the answer (not at its end of turn or token budget).
            # On a loaded machine a ^C typed right after the answer starts was once not delivered as SIGINT;
            # a user presses it again, and so does this test (a few times, a second apart).
            for _ in range(5):
                child.sendintr()
                if child.expect([r" \[stopped\]\r\n", r" \[max tokens\]", pexpect.TIMEOUT], timeout=1) != 2:
                    break
            assert child.after != pexpect.TIMEOUT and "stopped" in child.after, child.before[-200:]
        child.expect_exact("you> ")
        child.sendintr()  # at the prompt, Ctrl-C only clears the line
        child.expect_exact("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
