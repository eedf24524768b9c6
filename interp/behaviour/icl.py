"""In-context explainability: ask a model for the five tokens that best represent the trait a
text shows (``prompts/icl_explain.yaml``), parse the replies, and aggregate the most frequent
tokens per trait and model, flagging emojis."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from interp.emojis import find_emojis
from interp.prompts import load_prompt

_SPLIT = re.compile(r"[,\n;]+")
_LEAD = re.compile(r"^\s*(?:[-*•]|\(?\d+[.)]|tokens?\s*:)\s*", re.I)
_PREAMBLE = re.compile(r"^[^\n:]*\btokens?\b[^\n:]*:\s*", re.I)
_EXPLANATION = re.compile(r":\s|\s[-–—]\s")


def explain_messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": load_prompt("icl_explain.yaml")["user"].format(text=text)}]


def parse_tokens(reply: str, k: int = 5) -> list[str]:
    """Up to ``k`` tokens from a reply: drop a preamble ("The five tokens ... are:"), split on
    commas, semicolons and lines, drop list markers, markdown bold, quotes, end punctuation and
    any explanation after ": " or " - "; lower-case words; every emoji is a token of its own;
    pieces of more than three words, single characters and bare numbers are not tokens.

    >>> parse_tokens('The five tokens are:\\n1. **Curious**: loves ideas\\n2. Creative 🎨🌍\\n3. and open-minded.')
    ['curious', 'creative', '🎨', '🌍', 'open-minded']
    """
    text = _PREAMBLE.sub("", reply.strip()).replace("**", "")
    tokens: list[str] = []
    for part in _SPLIT.split(text):
        part = _LEAD.sub("", part)
        part = _EXPLANATION.split(part)[0].strip()
        part = re.sub(r"^[\s\"'“”]*and\s+", "", part, flags=re.I)
        for e in find_emojis(part):
            part = part.replace(e, f" \x00{e}\x00 ")
        for piece in re.split(r"\s*\x00\s*", part):
            piece = piece.strip(" \t\"'“”‘’`*.!?:()[]")
            if not piece:
                continue
            if find_emojis(piece) == [piece]:
                tokens.append(piece)
            elif re.search(r"[^\W\d_]{2}", piece) and len(piece.split()) <= 3:
                tokens.append(piece.lower())
            if len(tokens) == k:
                return tokens
    return tokens


def top_tokens(records: Sequence[dict[str, Any]], n: int = 50) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{trait: {model: [{token, count, is_emoji}, ...]}}``, most frequent first (ties by token)."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for r in records:
        counts.setdefault((r["trait"], r["model"]), Counter()).update(r["tokens"])
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (trait, model), c in counts.items():
        ranked = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        out.setdefault(trait, {})[model] = [
            {"token": t, "count": k, "is_emoji": bool(find_emojis(t))} for t, k in ranked
        ]
    return out
