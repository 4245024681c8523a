"""The OpenAI request bodies `instill serve` accepts, validated strictly with pydantic.

Unknown fields are refused (a typo such as `max_token` would otherwise be ignored silently). Fields
OpenAI defines but this server does not implement (penalties, logprobs, n > 1 ...) are accepted only at
their neutral value, so clients that always send them work, and anything else is a 400 naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _data_url(cls, v: str) -> str:
        """Images come inline: the server reads no files and fetches no URLs for a client."""
        if not v.startswith("data:image/") or ";base64," not in v:
            raise ValueError("image_url.url must be a base64 data URL (data:image/png;base64,...); "
                             "this server fetches no URLs and reads no files")
        return v


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class FunctionCall(_Strict):
    name: str
    arguments: str | dict[str, Any] = "{}"

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, v: str | dict[str, Any]) -> dict[str, Any]:
        """Chat templates render arguments as an object (`tojson`), so a JSON string is parsed here."""
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as err:
                raise ValueError(f"arguments must be a JSON object ({err.msg})") from None
        if not isinstance(v, dict):
            raise ValueError("arguments must be a JSON object")
        return v


class ToolCall(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _inline_images(cls, v: Any) -> Any:
        """Name a bad image_url here: the union's own error would only say that content is not a string."""
        for part in v if isinstance(v, list) else []:
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url", "") if isinstance(image, dict) else ""  # not an object: the union names it
            if isinstance(part, dict) and part.get("type") == "image_url" and isinstance(url, str):
                ImageURL._data_url(url)
        return v

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message may carry tool_calls")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates expect it: string content, dict arguments."""
        content = self.content or ""
        if isinstance(content, list):  # an image part becomes the <image> placeholder (data/multimodal.py)
            content = "".join(part.text if isinstance(part, TextPart) else "<image>" for part in content)
        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            out["tool_calls"] = [{"type": "function", "function": c.function.model_dump(), **({"id": c.id} if c.id else {})}
                                 for c in self.tool_calls]
        if self.name:
            out["name"] = self.name
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


class FunctionDef(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(_Strict):
    include_usage: bool = False


def _neutral(name: str, neutral: Any, allowed: tuple = ()):
    """A validator refusing any value of `name` but its neutral one(s): the feature is not implemented."""

    def check(cls, v: Any) -> Any:
        if v is not None and v != neutral and v not in allowed:
            raise ValueError(f"only {neutral!r} is supported by this server (or leave it unset)")
        return v

    return field_validator(name)(classmethod(check))


class _Generation(_Strict):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)  # vLLM's extra field: -1 or 0 turns the cut off
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)  # vLLM's extra field
    n: int | None = 1
    stop: Annotated[str | list[str] | None, Field(validate_default=True)] = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: float | None = 0.0
    presence_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None

    _n = _neutral("n", 1)
    _fp = _neutral("frequency_penalty", 0.0)
    _pp = _neutral("presence_penalty", 0.0)
    _lb = _neutral("logit_bias", {})

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @model_validator(mode="after")
    def _options(self) -> _Generation:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ResponseFormat(_Strict):
    type: Literal["text"]


class ChatCompletionRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto"] | None = None
    parallel_tool_calls: bool | None = None
    # Extra variables for the chat template, e.g. {"enable_thinking": false} (tokenizer templates only).
    chat_template_kwargs: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None

    _lp = _neutral("logprobs", False)
    _tlp = _neutral("top_logprobs", 0)

    @model_validator(mode="after")
    def _limits(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        self.max_tokens = self.max_tokens or self.max_completion_tokens
        return self

    def conversation(self) -> list[dict[str, Any]]:
        return [m.for_template() for m in self.messages]

    def images(self) -> list[str]:
        """The data URLs of every image part, in message order (one per <image> in `conversation`)."""
        return [part.image_url.url for m in self.messages if isinstance(m.content, list) for part in m.content
                if isinstance(part, ImagePart)]

    def tool_list(self) -> list[dict[str, Any]] | None:
        if not self.tools or self.tool_choice == "none":
            return None
        return [t.model_dump(exclude_none=True) for t in self.tools]


class CompletionRequest(_Generation):
    prompt: str | list[str]
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = 1
    logprobs: int | None = None

    _echo = _neutral("echo", False)
    _suffix = _neutral("suffix", "")
    _best_of = _neutral("best_of", 1)
    _lp = _neutral("logprobs", 0)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("give one prompt (a list of several is not supported)")
            v = v[0]
        return v
