"""Opaque ids with a prefix, in OpenAI's style (``file-…``, ``ftjob-…``)."""

from __future__ import annotations

import re
import secrets

ID_PATTERN = re.compile(r"^[a-z]+-[A-Za-z0-9]{1,64}$")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.fullmatch(value))
