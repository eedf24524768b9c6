"""Chat formatting: the tokenizer's chat template, or a plain-text fallback from prompts/."""

from __future__ import annotations

from typing import Any

from interp.prompts import load_prompt

Message = dict[str, str]


def to_messages(user: str, system: str | None = None) -> list[Message]:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return [*msgs, {"role": "user", "content": user}]


def format_chat(
    tokenizer: Any,
    messages: list[Message] | str,
    *,
    system: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render a conversation as the prompt string the model expects.

    Args:
        tokenizer: a transformers tokenizer; its ``chat_template`` is used when it has one.
        messages: a list of ``{"role", "content"}`` dicts, or one user message as a string.
        system: a system message to put first (only with a string ``messages``).
        add_generation_prompt: end with the cue for the assistant's turn.

    Returns:
        The formatted text. It already holds the template's special tokens, so tokenize it
        with ``add_special_tokens=False``.

    >>> from types import SimpleNamespace
    >>> format_chat(SimpleNamespace(chat_template=None), "Hi?")
    'User: Hi?\\n\\nAssistant:'
    """
    if isinstance(messages, str):
        messages = to_messages(messages, system)
    elif system is not None:
        raise ValueError("pass system= only with a single user message string")
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    fmt = load_prompt("chat_fallback.yaml")
    text = "".join(fmt[m["role"]].format(content=m["content"]) for m in messages)
    return text + (fmt["generation_prompt"] if add_generation_prompt else "")
