"""Chat backends for generating data: a local model through the batched engine, or any
OpenAI-compatible server through a plain HTTP POST to ``{api_base}/chat/completions``
(stdlib ``urllib``; retries on 429/5xx and connection errors; failures are one-line
``InstillError``s naming the URL)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

from instill.errors import InstillError


class ChatBackend(Protocol):
    name: str

    def chat(self, conversations: list[list[dict]]) -> list[str]:
        """One reply per conversation."""


@dataclass
class Sampling:
    temperature: float = 0.9
    top_p: float = 0.95
    max_new_tokens: int = 1024


class OpenAIBackend:
    """Any server speaking OpenAI's ``POST /chat/completions`` (vLLM, llama.cpp, our own, OpenAI itself)."""

    def __init__(self, api_base: str, model: str, api_key: str | None, sampling: Sampling,
                 timeout: float = 120.0, retries: int = 2) -> None:
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.name, self.api_key, self.sampling = model, api_key, sampling
        self.timeout, self.retries = timeout, retries

    def chat(self, conversations: list[list[dict]]) -> list[str]:
        return [self._one(messages) for messages in conversations]

    def _one(self, messages: list[dict]) -> str:
        body = json.dumps({
            "model": self.name, "messages": messages, "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p, "max_tokens": self.sampling.max_new_tokens,
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return _reply_text(json.loads(response.read().decode("utf-8")), self.url)
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace")[:200]
                if err.code in (429, 500, 502, 503, 504) and attempt < self.retries:
                    time.sleep(1.0 * (attempt + 1))
                    continue
                raise InstillError(f"{self.url}: HTTP {err.code} {err.reason}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt < self.retries:
                    time.sleep(1.0 * (attempt + 1))
                    continue
                reason = getattr(err, "reason", err)
                raise InstillError(f"{self.url}: cannot reach the server ({reason})") from None
            except json.JSONDecodeError:
                raise InstillError(f"{self.url}: the reply is not JSON") from None
        raise AssertionError("unreachable")


def _reply_text(payload: Any, url: str) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise InstillError(f"{url}: not a chat completion reply (no choices[0].message.content): "
                           f"{json.dumps(payload, ensure_ascii=False)[:200]}") from None
    return content or ""


class LocalBackend:
    """A local model directory through the batched engine (the tokenizer's chat template)."""

    def __init__(self, model_path: str, sampling: Sampling, template: str = "auto", batch_size: int = 8,
                 seed: int = 42) -> None:
        from instill.config import ModelArgs
        from instill.infer.engine import load_generator

        self.name = model_path
        self.generator = load_generator(ModelArgs(model_name_or_path=model_path), template)
        self.sampling, self.batch_size, self.seed, self.calls = sampling, batch_size, seed, 0

    def chat(self, conversations: list[list[dict]]) -> list[str]:
        import torch

        torch.manual_seed(self.seed + self.calls)  # reproducible sampling, different in every round
        self.calls += 1
        s = self.sampling
        return self.generator.generate(conversations, max_new_tokens=s.max_new_tokens, batch_size=self.batch_size,
                                       temperature=s.temperature, top_p=s.top_p)
