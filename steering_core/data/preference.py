"""The preference format's lines (OpenAI's DPO files), torch-free: ``input.messages`` is the
prompt, ``preferred_output`` and ``non_preferred_output`` one assistant message each
(:mod:`steering_core.data.formats` describes the format)."""

from __future__ import annotations

from typing import Any

from steering_core.data.examples import ChatMessage, PreferenceExample
from steering_core.data.json_fields import FieldErrors, json_type, message_fields

PREFERENCE_OUTPUTS = ("preferred_output", "non_preferred_output")

_NO_WEIGHT = "preference messages take no weight (the input is context, the outputs are trained)"


def parse_preference_input(obj: dict[str, Any], errors: FieldErrors) -> list[ChatMessage]:
    """The prompt: the input's messages, assistant ones as context (weight 0), the last the
    user's."""
    if "input" not in obj:
        errors.append(("input", "missing required field"))
        return []
    raw = obj["input"]
    if not isinstance(raw, dict):
        errors.append(("input", f"expected an object, got {json_type(raw)}"))
        return []
    tools = raw.get("tools")
    if isinstance(tools, list) and tools:
        errors.append(("input.tools", "tools are not supported (leave it out or empty)"))
    elif tools is not None and not isinstance(tools, list):
        errors.append(("input.tools", f"expected an array, got {json_type(tools)}"))
    if "messages" not in raw:
        errors.append(("input.messages", "missing required field"))
        return []
    items = raw["messages"]
    if not isinstance(items, list):
        errors.append(("input.messages", f"expected an array of messages, got {json_type(items)}"))
        return []
    if not items:
        errors.append(("input.messages", "no messages (a preference answers a user message)"))
        return []
    prompt: list[ChatMessage] = []
    for index, item in enumerate(items):
        path = f"input.messages[{index}]"
        fields = message_fields(item, path, errors)
        if isinstance(item, dict) and "weight" in item:
            errors.append((f"{path}.weight", _NO_WEIGHT))
        elif fields is not None:
            role, content = fields
            prompt.append(ChatMessage(role, content, 0 if role == "assistant" else 1))
    if len(prompt) == len(items) and prompt[-1].role != "user":
        errors.append(
            (
                f"input.messages[{len(items) - 1}].role",
                f"the last input message must be the user's (a preference answers a user "
                f"turn), got {prompt[-1].role!r}",
            )
        )
    return prompt


def parse_preference_output(
    obj: dict[str, Any], key: str, errors: FieldErrors
) -> ChatMessage | None:
    """``obj[key]``'s one non-empty assistant message (weight 1), or None."""
    if key not in obj:
        errors.append((key, "missing required field"))
        return None
    raw = obj[key]
    if not isinstance(raw, list):
        errors.append((key, f"expected an array of one message, got {json_type(raw)}"))
        return None
    if len(raw) != 1:
        errors.append((key, f"expected exactly one message, got {len(raw)}"))
        return None
    path = f"{key}[0]"
    fields = message_fields(raw[0], path, errors, roles=("assistant",))
    if isinstance(raw[0], dict) and "weight" in raw[0]:
        errors.append((f"{path}.weight", _NO_WEIGHT))
        return None
    if fields is None:
        return None
    if fields[1] == "":
        errors.append((f"{path}.content", "must not be empty (an answer to prefer or reject)"))
        return None
    return ChatMessage("assistant", fields[1], 1)


def parse_preference(obj: dict[str, Any], errors: FieldErrors) -> PreferenceExample:
    """A preference line as a pair (an output with problems stands in as an empty message)."""
    prompt = parse_preference_input(obj, errors)
    preferred, non_preferred = (parse_preference_output(obj, k, errors) for k in PREFERENCE_OUTPUTS)
    if (
        preferred is not None
        and non_preferred is not None
        and preferred.content == non_preferred.content
    ):
        errors.append(
            (
                "non_preferred_output[0].content",
                "equals the preferred output's content, so the pair teaches nothing",
            )
        )
    missing = ChatMessage("assistant", "")  # stands in for an output with problems
    return PreferenceExample(prompt, preferred or missing, non_preferred or missing)


__all__ = [
    "PREFERENCE_OUTPUTS",
    "parse_preference",
    "parse_preference_input",
    "parse_preference_output",
]
