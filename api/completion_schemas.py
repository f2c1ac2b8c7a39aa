"""Request bodies of the generation endpoints: OpenAI's chat/completions shapes, plus
``steering_strength`` and ``steering`` (several adapters at their strengths). Unknown fields are
refused by name, so a typo is never silently ignored; booleans are not numbers and text must be
valid Unicode (:class:`~steering_core.config.InputModel`: a lone surrogate would fail the
tokenizer). An empty prompt is a 400 naming ``prompt``: the model would have nothing to continue."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from steering_core.config import InputModel

MAX_STOPS = 4


class _Request(InputModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Request):
    type: Literal["text"]
    text: str = Field(max_length=200_000)


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant"]
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


class _Sampling(_Request):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: Literal[1] = Field(default=1, description="one choice per request")
    stream: bool = False
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
    steering: list[SteeringEntry] | None = Field(
        default=None,
        max_length=MAX_STEERING,
        description="adapters whose shifts are added for this request, each at its strength; "
        "they must share the base model of ``model``",
    )

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


class ChatCompletionCreate(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionCreate(_Sampling):
    prompt: str | list[str] = Field(description="one prompt (a list of one is accepted)")

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
