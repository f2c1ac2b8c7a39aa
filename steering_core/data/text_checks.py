"""Text that cannot be used: shared by configs, request models and training-file validation.

A JSON string may hold a lone surrogate (``"\\ud800"``, half of a UTF-16 pair): Python decodes
it, but it is not Unicode text. UTF-8 cannot encode it, so a tokenizer, a database driver or a
JSON response that meets it fails far from where it came in. It is refused where it enters.
"""

from __future__ import annotations


def lone_surrogate(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (its first lone surrogate, escaped), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # starts with the escape, not a word (a word may be read as a field's name)
        return (
            f"\\u{ord(text[exc.start]):04x} at position {exc.start} is a lone surrogate (half of "
            "a UTF-16 pair): not valid Unicode text"
        )
    return None


def shown(text: str) -> str:
    """``text`` as it can be quoted in a message: as is when printable, else its Python repr
    (NUL and lone surrogates escaped, so the message itself can be stored and sent)."""
    return text if text.isprintable() else repr(text)
