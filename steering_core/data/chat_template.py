"""Where a chat template puts the assistant answers, torch-free: a conversation rendered by the
tokenizer's template and cut into supervised and unsupervised segments.

Each answer with weight 1 is supervised with the template's end-of-turn token (the first special
token after it). The spans are found by rendering prefixes and diffing the texts; for templates
that are not prefix-stable, by rendering once with placeholder answers. Either way the pieces
must join to exactly the full rendering, or :class:`LookupError` says why not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from steering_core.data.examples import ChatMessage, Segment


def _split_end_of_turn(rest: str, specials: Sequence[str]) -> tuple[str, str]:
    """Split what follows an answer into (up to and including the first special token, the rest).

    Without a special token in ``rest``, the answer ends at its last non-space character.
    """
    hits = [(at, -len(t)) for t in specials if (at := rest.find(t)) >= 0]
    if hits:
        at, minus_size = min(hits)  # the earliest; the longest of those starting there
        cut = at - minus_size
    else:
        cut = len(rest.rstrip())
    return rest[:cut], rest[cut:]


def _answer_segments(piece: str, message: ChatMessage, specials: Sequence[str]) -> list[Segment]:
    """An assistant turn's rendered text as [header, answer + end-of-turn, trailer].

    The answer is the first occurrence of the content that only whitespace separates from the
    end of the turn (a special token or the end of the piece), so that content such as "think"
    is not matched inside a template's ``<think>`` header.
    """
    if not message.trainable:
        return [Segment(piece, False)]
    for content in dict.fromkeys([message.content, message.content.strip()]):
        at = piece.find(content)
        while at >= 0:
            rest = piece[at + len(content) :]
            if not rest.strip() or any(rest.lstrip().startswith(t) for t in specials):
                end_of_turn, trailer = _split_end_of_turn(rest, specials)
                answer = Segment(content + end_of_turn, True)
                return [Segment(piece[:at], False), answer, Segment(trailer, False)]
            at = piece.find(content, at + 1)
    raise LookupError("assistant content not found in its rendered turn")


_Render = Callable[[Sequence[ChatMessage], bool], str]


def _segments_by_prefix(
    messages: Sequence[ChatMessage], render: _Render, specials: Sequence[str]
) -> list[Segment]:
    segments: list[Segment] = []
    done = ""
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        before = render(messages[:index], True)
        after = render(messages[: index + 1], False)
        if not before.startswith(done) or not after.startswith(before):
            raise LookupError("the chat template is not prefix-stable")
        segments.append(Segment(before[len(done) :], False))
        segments += _answer_segments(after[len(before) :], message, specials)
        done = after
    return [*segments, Segment(render(messages, False)[len(done) :], False)]


def _segments_by_placeholder(
    messages: Sequence[ChatMessage], render: _Render, specials: Sequence[str]
) -> list[Segment]:
    marks = {i: f"[[answer-{uuid.uuid4().hex}]]" for i, m in enumerate(messages) if m.trainable}
    text = render(
        [m._replace(content=marks.get(i, m.content)) for i, m in enumerate(messages)], False
    )
    segments: list[Segment] = []
    for index, mark in marks.items():
        head, found, text = text.partition(mark)
        if not found or mark in text:
            raise LookupError("an assistant answer is not rendered exactly once")
        end_of_turn, text = _split_end_of_turn(text, specials)
        segments += [Segment(head, False), Segment(messages[index].content + end_of_turn, True)]
    return [*segments, Segment(text, False)]


def chat_template_segments(
    tokenizer: Any, messages: Sequence[ChatMessage], specials: Sequence[str]
) -> list[Segment]:
    """The conversation as the template renders it, cut into supervised / unsupervised text."""

    def render(part: Sequence[ChatMessage], generation_prompt: bool) -> str:
        chat = [{"role": m.role, "content": m.content} for m in part]
        return str(
            tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=bool(generation_prompt)
            )
        )

    try:
        full = render(messages, False)
    except Exception as exc:  # jinja's raise_exception and friends
        raise LookupError(f"the chat template rejects this conversation: {exc}") from exc
    for method in (_segments_by_prefix, _segments_by_placeholder):
        try:
            segments = method(messages, render, specials)
        except Exception:  # templates raise anything (jinja errors on partial conversations)
            continue
        if "".join(s.text for s in segments) == full:
            return segments
    raise LookupError(
        "the tokenizer's chat template rewrites the messages, so the assistant answers cannot be "
        "located for answer-only masking"
    )


__all__ = ["chat_template_segments"]
