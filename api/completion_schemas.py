"""Request bodies of the generation endpoints: OpenAI's chat/completions shapes, plus
``steering_strength`` and ``steering`` (several adapters at their strengths). Unknown fields are
refused by name, so a typo is never silently ignored; booleans are not numbers and text must be
valid Unicode (:class:`~steering_core.spec.method_config.InputModel`: a lone surrogate would fail
the
tokenizer). An empty prompt is a 400 naming ``prompt``: the model would have nothing to continue."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from steering_core.spec.method_config import InputModel

MAX_STOPS = 4
MAX_CHOICES = 16
MAX_LOGIT_BIAS = 300
MAX_TOP_LOGPROBS = 20


class _Request(InputModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Request):
    type: Literal["text"]
    text: str = Field(max_length=200_000)


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]  # developer: a system message
    content: str | list[TextPart] = Field(max_length=200_000)
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


MAX_STEERING = 8


class SteeringEntry(_Request):
    adapter: str = Field(min_length=1, max_length=256, description="adapter id or name@version")
    strength: float = Field(default=1.0, ge=-10.0, le=10.0)


class StreamOptions(_Request):
    include_usage: bool = False


def _unsupported(name: str, why: str) -> Any:
    """A field OpenAI's clients send that generation here cannot honour: refused, saying why."""

    def check(value: Any) -> Any:
        if value is not None and value is not False:
            raise ValueError(f"{name} is not supported: {why}")
        return value

    return check


class _Sampling(_Request):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(
        default=1,
        ge=1,
        le=MAX_CHOICES,
        description="choices to generate for the prompt (each its own row; with a seed, "
        "choice i samples with seed + i)",
    )
    stream: bool = False
    stream_options: StreamOptions | None = Field(
        default=None, description="include_usage: a last chunk with the usage, choices empty"
    )
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(
        default=None, description="token id (as a string) -> bias added to its logit, -100..100"
    )
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    user: str | None = Field(default=None, max_length=256)
    steering_strength: float = Field(
        default=1.0,
        ge=-10.0,
        le=10.0,
        description="scale of the adapter's steering shift for this request (1: as trained, "
        "0: off); ignored for a base model",
    )
    inference_mode: Literal["all", "lora_only", "adapter_only"] = Field(
        default="all",
        description="for joint adapters: all (as trained), lora_only (its LoRA half alone) or "
        "adapter_only (its steering half alone)",
    )
    steering: list[SteeringEntry] | None = Field(
        default=None,
        max_length=MAX_STEERING,
        description="adapters whose shifts are added for this request, each at its strength; "
        "they must share the base model of ``model``",
    )

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if not value:
            return value
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} token ids")
        for token, bias in value.items():
            if not token.isascii() or not token.isdigit():
                raise ValueError(f"{token!r} is not a token id (a non-negative integer)")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"the bias of token {token} is {bias}: it must be in -100..100")
        return value

    def token_biases(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items())

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        if any(not s or len(s) > 256 for s in stops):
            raise ValueError("each stop sequence must be 1..256 characters")
        return value

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ResponseFormat(InputModel):
    model_config = ConfigDict(extra="allow")
    type: str

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value != "text":
            raise ValueError(
                f"response_format {value!r} is not supported: generation here is free text "
                "(no constrained decoding for JSON mode or a JSON schema); use 'text'"
            )
        return value


_NO_TOOLS = "the models served here generate plain text; there is no tool calling"


class ChatCompletionCreate(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = Field(default=False, description="each token's log-probability")
    top_logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="alternatives per token; needs logprobs",
    )
    response_format: ResponseFormat | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None

    _tools = field_validator("tools")(_unsupported("tools", _NO_TOOLS))
    _tool_choice = field_validator("tool_choice")(_unsupported("tool_choice", _NO_TOOLS))
    _functions = field_validator("functions")(_unsupported("functions", _NO_TOOLS))
    _function_call = field_validator("function_call")(_unsupported("function_call", _NO_TOOLS))
    _parallel = field_validator("parallel_tool_calls")(
        _unsupported("parallel_tool_calls", _NO_TOOLS)
    )

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    def logprobs_wanted(self) -> int | None:
        """Alternatives per token when log-probabilities are asked for, else None."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionCreate(_Sampling):
    prompt: str | list[str] = Field(description="one prompt (a list of one is accepted)")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description="log-probabilities of each token and this many most likely alternatives",
    )
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    _echo = field_validator("echo")(
        _unsupported("echo", "the answer holds the completion only, not the prompt")
    )
    _suffix = field_validator("suffix")(
        _unsupported("suffix", "text is generated after the prompt only (no insertion)")
    )

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError(
                "best_of is not supported: ask for n choices and pick among them yourself"
            )
        return value

    def logprobs_wanted(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request")
        text = value if isinstance(value, str) else value[0]
        if not text:
            raise ValueError("the prompt is empty: give the text for the model to continue")
        if len(text) > 200_000:
            raise ValueError("the prompt is longer than 200000 characters")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
