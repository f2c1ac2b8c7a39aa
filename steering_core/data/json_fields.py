"""Checks of a training line's JSON fields shared by the formats' parsers (torch-free): each
appends ``(field path, problem)`` pairs to ``errors`` and returns what it could read."""

from __future__ import annotations

from typing import Any

from steering_core.data.text_checks import lone_surrogate

CHAT_ROLES = ("system", "user", "assistant")

FieldErrors = list[tuple[str, str]]  # (field path, problem)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (``null``, ``number``, ``array``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def string_field(
    obj: dict[str, Any], key: str, path: str, errors: FieldErrors, optional: bool = False
) -> str:
    """``obj[key]`` when it is a usable string; else ``""`` (a problem unless optional and
    missing or null)."""
    if key not in obj or (optional and obj[key] is None):
        if not optional:
            errors.append((path, "missing required field"))
        return ""
    value = obj[key]
    if not isinstance(value, str):
        errors.append((path, f"expected a string, got {json_type(value)}"))
        return ""
    problem = lone_surrogate(value)  # a tokenizer fails on it, far from its line
    if problem is not None:
        errors.append((path, problem))
        return ""
    return value


def message_fields(
    item: Any, path: str, errors: FieldErrors, roles: tuple[str, ...] = CHAT_ROLES
) -> tuple[str, str] | None:
    """A message's role (one of ``roles``) and content (a string); None when either is wrong."""
    if not isinstance(item, dict):
        errors.append((path, f"expected an object, got {json_type(item)}"))
        return None
    n_before = len(errors)
    role = item.get("role")
    if "role" not in item:
        errors.append((f"{path}.role", "missing required field"))
    elif not isinstance(role, str):
        errors.append((f"{path}.role", f"expected a string, got {json_type(role)}"))
    elif role not in roles:
        expected = (
            f"is not {roles[0]!r}" if len(roles) == 1 else f"is not one of {', '.join(roles)}"
        )
        errors.append((f"{path}.role", f"{role!r} {expected}"))
    content = string_field(item, "content", f"{path}.content", errors)
    return (str(role), content) if len(errors) == n_before else None


__all__ = ["CHAT_ROLES", "FieldErrors", "json_type", "message_fields", "string_field"]
