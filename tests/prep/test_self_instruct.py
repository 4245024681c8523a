"""`instill data generate`: through a real OpenAI-compatible HTTP server on 127.0.0.1, and a tiny local model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from instill.errors import InstillError
from instill.prep.llm_client import OpenAIBackend, Sampling
from instill.prep.self_instruct import parse_tasks
from tests.prep.conftest import read_jsonl, run

SEEDS = [
    {"instruction": "把下面的句子翻译成英文。", "input": "今天天气很好。", "output": "The weather is nice today."},
    {"instruction": "判断这条评论的情感是正面还是负面。", "input": "这家店的服务太差了。", "output": "负面"},
    {"instruction": "写一首关于春天的五言绝句。", "input": "", "output": "春风拂柳绿，细雨润花红。燕子归来早，人间处处同。"},
    {"instruction": "计算 17 乘以 23 的结果。", "input": "", "output": "391"},
]


def _task(instruction: str, output: str, input_text: str = "") -> str:
    return json.dumps({"instruction": instruction, "input": input_text, "output": output}, ensure_ascii=False)


# Replies in the order requests arrive: varied, some unusable.
CANNED = [
    _task("列举三种常见的排序算法。", "冒泡排序、快速排序、归并排序") + "\n" + _task("解释什么是光合作用。", "植物利用光能把二氧化碳和水合成有机物。"),
    "```json\n" + _task("把下面的句子翻译成英文。", "It is sunny today.", "今天阳光明媚。") + "\n"  # ROUGE-L 1.0 to seed 1
    + _task("给出一个描述勇敢的成语。", "临危不惧") + "\n```",
    "抱歉，我不知道该怎么写。",  # no JSON at all
    _task("总结下面这段话的中心思想。", "") + "\n" + _task("画一幅猫的图片。", "（图片）"),  # no output; blacklisted
    json.dumps([json.loads(_task("解释什么是光合作用。", "一个重复的任务")),  # duplicate of a kept task
                json.loads(_task("用一句话介绍长城。", "长城是中国古代修建的军事防御工程。"))], ensure_ascii=False),
]
# A second server: two new distinct tasks per request while they last, then only repeats.
DISTINCT = ["列举三种常见的排序算法。", "解释什么是光合作用。", "给出一个描述勇敢的成语。", "用一句话介绍长城。",
            "推荐两本适合初学者的编程书。", "说明水的沸点与气压的关系。"]


class ChatServer:
    """A minimal OpenAI-compatible chat completions server on 127.0.0.1, answering from ``replies``."""

    def __init__(self, replies: Iterator[str | None]) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                owner.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                content = next(replies)
                if content is None:  # the canned way to fail
                    self.send_error(503, "overloaded")
                    return
                payload = {"id": f"cmpl-{len(owner.requests)}", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}]}
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def seed_file(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in SEEDS), encoding="utf-8")
    return path


def test_self_instruct_through_a_loopback_server_keeps_only_new_parseable_tasks(tmp_path, seed_file, capsys,
                                                                               monkeypatch):
    monkeypatch.setenv("TEST_API_KEY", "sk-local-test")
    out, info = tmp_path / "gen.jsonl", tmp_path / "dataset_info.json"
    with ChatServer(iter(CANNED)) as server:
        code = run("generate", "--seed-file", seed_file, "--num", 100, "--model", "qwen-test", "--api-base", server.url,
                   "--api-key-env", "TEST_API_KEY", "--requests-per-round", 5, "--max-rounds", 1, "--demos", 2,
                   "--tasks-per-prompt", 3, "--out", out, "--register", info)
    assert code == 0
    summary = capsys.readouterr().out
    assert "generate: 8 rows in, 4 out, 4 dropped" in summary
    assert "2 too similar (ROUGE-L >= 0.7)" in summary and "1 no output" in summary
    assert "1 instruction matches the blacklist" in summary
    assert "1 rounds, 5 replies (1 without a parseable task)" in summary
    rows = read_jsonl(out)
    assert [r["instruction"] for r in rows] == ["列举三种常见的排序算法。", "解释什么是光合作用。", "给出一个描述勇敢的成语。",
                                                 "用一句话介绍长城。"]
    assert rows[1]["output"] == "植物利用光能把二氧化碳和水合成有机物。"
    # What the server saw: the model name, the key, a Chinese self-instruct prompt quoting two seed tasks.
    assert len(server.requests) == 5
    request = server.requests[0]
    assert request["model"] == "qwen-test" and request["messages"][0]["role"] == "user"
    prompt = request["messages"][0]["content"]
    assert "3 个新的" in prompt and sum(s["instruction"] in prompt for s in SEEDS) == 2
    assert server.headers[0]["Authorization"] == "Bearer sk-local-test"
    for row in rows:
        p = row["provenance"]
        assert p["method"] == "self-instruct" and p["model"] == "qwen-test" and p["round"] == 1
        assert p["rouge_l_max"] < 0.7 and len(p["demos"]) == 2 and p["demos"][0].startswith(str(seed_file))
    assert json.loads(info.read_text())["gen"] == {"file_name": "gen.jsonl"}


def _distinct_replies() -> Iterator[str]:
    for i in range(0, len(DISTINCT), 2):
        yield "\n".join(_task(t, f"关于「{t}」的回答。") for t in DISTINCT[i:i + 2])
    while True:
        yield _task(DISTINCT[0], "又一次")


def test_rounds_continue_until_nothing_new_and_later_prompts_show_generated_tasks(tmp_path, seed_file, capsys):
    out = tmp_path / "gen.jsonl"
    with ChatServer(_distinct_replies()) as server:
        assert run("generate", "--seed-file", seed_file, "--num", 100, "--model", server.url,
                   "--requests-per-round", 1, "--max-rounds", 10, "--patience", 2, "--lang", "en",
                   "--out", out) == 0
    assert "5 rounds, 5 replies (0 without a parseable task)" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert [r["instruction"] for r in rows] == DISTINCT
    assert [r["provenance"]["round"] for r in rows] == [1, 1, 2, 2, 3, 3]
    assert server.requests[0]["model"] == "default"
    assert server.requests[0]["messages"][0]["content"].startswith("Come up with 5 new")
    later = server.requests[2]["messages"][0]["content"]
    assert any(t in later for t in DISTINCT[:4])  # generated tasks serve as demonstrations
    assert any(d.startswith("generated:#") for r in rows[4:] for d in r["provenance"]["demos"])


def test_num_stops_generation(tmp_path, seed_file):
    out = tmp_path / "gen.jsonl"
    with ChatServer(_distinct_replies()) as server:
        assert run("generate", "--seed-file", seed_file, "--num", 3, "--api-base", server.url,
                   "--requests-per-round", 1, "--out", out) == 0
    assert [r["instruction"] for r in read_jsonl(out)] == DISTINCT[:3]
    assert len(server.requests) == 2


def test_template_fill_answers_each_filled_instruction(tmp_path):
    (tmp_path / "t.txt").write_text("解释{概念}在{领域}中的应用\n", encoding="utf-8")
    (tmp_path / "slots.json").write_text(json.dumps({"概念": ["注意力机制", "卷积"], "领域": ["翻译"]},
                                                    ensure_ascii=False), encoding="utf-8")
    answers = iter(["注意力机制让模型对齐源句和目标句。", "卷积可以提取局部特征。"])
    out = tmp_path / "filled.jsonl"
    with ChatServer(answers) as server:
        assert run("generate", "--template-file", tmp_path / "t.txt", "--slots", tmp_path / "slots.json",
                   "--api-base", server.url, "--out", out) == 0
    rows = read_jsonl(out)
    asked = [r["messages"][0]["content"] for r in server.requests]
    assert asked == ["解释注意力机制在翻译中的应用", "解释卷积在翻译中的应用"]
    assert [(r["instruction"], r["output"]) for r in rows] == list(zip(asked, ["注意力机制让模型对齐源句和目标句。",
                                                                                  "卷积可以提取局部特征。"]))
    assert rows[0]["provenance"] == {"method": "template-fill", "model": "default"}


def test_http_failures_are_one_line_errors(tmp_path, seed_file, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", None, Sampling(), timeout=5, retries=0)
    with pytest.raises(InstillError, match="cannot reach the server"):
        backend.chat([[{"role": "user", "content": "hi"}]])
    with ChatServer(iter(CANNED)) as server:
        code = run("generate", "--seed-file", seed_file, "--api-base", server.url.removesuffix("/v1"),
                   "--out", tmp_path / "x.jsonl")
    assert code == 2
    assert "/chat/completions: HTTP 404" in capsys.readouterr().err


def test_a_failing_server_keeps_the_rows_already_made(tmp_path, seed_file, capsys):
    replies = iter([CANNED[0], None, None])
    out = tmp_path / "gen.jsonl"
    with ChatServer(replies) as server:
        code = run("generate", "--seed-file", seed_file, "--api-base", server.url, "--requests-per-round", 1,
                   "--retries", 1, "--out", out)
    assert code == 1 and len(server.requests) == 3  # round 2: the request and its one retry both failed
    err = capsys.readouterr().err
    assert "stopped early, 2 rows saved" in err and "HTTP 503" in err
    assert [r["instruction"] for r in read_jsonl(out)] == ["列举三种常见的排序算法。", "解释什么是光合作用。"]


def test_parse_tasks_reads_fences_lists_and_glued_objects():
    text = ('好的：\n```json\n{"instruction": "a", "input": "", "output": "b"}{"instruction": "c", "output": "d"}\n```\n'
            '[{"instruction": "e", "output": "f"}, {"note": "x"}] {"instruction": "g", "output": "cut off')
    assert [t["instruction"] for t in parse_tasks(text)] == ["a", "c", "e"]


def test_generate_with_a_tiny_local_model(tmp_path, seed_file, tiny_qwen2, capsys):
    code = run("generate", "--seed-file", seed_file, "--model", tiny_qwen2, "--num", 2, "--requests-per-round", 2,
               "--max-rounds", 1, "--max-new-tokens", 8, "--batch-size", 2, "--out", tmp_path / "gen.jsonl")
    out, err = capsys.readouterr()
    # A random-init model writes no parseable task: both replies came back through the engine and were refused.
    assert code == 2 and "no generated task passed the filters" in err
    assert "1 rounds, 2 replies (2 without a parseable task)" in out
    assert not (tmp_path / "gen.jsonl").exists()
    # The local backend samples reproducibly: same seed, same replies.
    from instill.prep.llm_client import LocalBackend

    conversations = [[{"role": "user", "content": "写一首诗。"}], [{"role": "user", "content": "翻译：你好"}]]
    first = LocalBackend(str(tiny_qwen2), Sampling(0.9, 0.95, 6), batch_size=2, seed=3).chat(conversations)
    again = LocalBackend(str(tiny_qwen2), Sampling(0.9, 0.95, 6), batch_size=2, seed=3).chat(conversations)
    assert len(first) == 2 and all(isinstance(r, str) and r for r in first) and first == again
