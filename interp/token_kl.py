"""Per-token KL(base ‖ adapter) over answers: where an adapter changes the next-token
distribution most, and whether the positions before an emoji are among them.

For each (prompt, answer) pair, teacher-forced, at every position that predicts an answer token
``t_j``: ``KL_j = Σ_v p_base(v) (log p_base(v) - log p_adapter(v))`` (nats) with both
distributions given the same prefix (prompt + ``t_<j``), from one loaded model with its adapter
on and off. ``KL_j`` is said to be "before an emoji" when ``t_j``, the token predicted there,
is the first token of an emoji of the answer (:func:`interp.emojis.emoji_spans`; the first
token whose character span reaches the emoji's first character).

>>> import numpy as np
>>> r = TokenKL([np.array([0.1, 2.0, 0.3])], [np.array([5, 6, 7])], [np.array([False, True, False])],
...             [np.array([5, 9, 7])], [np.array([5, 6, 7])])
>>> s = kl_summary(r, top_n=1)
>>> s.before_emoji["mean_kl"], s.other["mean_kl"], s.top[0]["position"]
(2.0, 0.2, 1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from interp.capture import pad_id
from interp.emojis import emoji_spans
from interp.forced import encode_pairs, forced_passes
from interp.models import adapter_disabled, is_peft
from text2emoji.core.presets import BATCH_SIZE


def emoji_starts(tokenizer: Any, answer: str) -> np.ndarray:
    """bool ``[tokens]`` over ``answer`` tokenized alone (no special tokens): whether each token
    is the first of an emoji (the first token whose character span reaches the emoji's first
    character; with byte-level BPE, ``" 🎉"`` starts at its space-carrying token).

    Needs a fast tokenizer (character offsets).
    """
    if not answer:
        return np.zeros(0, dtype=bool)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} gives no character offsets; emoji positions need a fast tokenizer")
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    ends = [e for _, e in enc["offset_mapping"]]
    out = np.zeros(len(ends), dtype=bool)
    for start, _, _ in emoji_spans(answer):
        j = next((j for j, e in enumerate(ends) if e > start), None)
        if j is not None:
            out[j] = True
    return out


@dataclass(frozen=True)
class TokenKL:
    """:func:`token_kl`'s result: one array per answer, index j = the position that predicts
    the answer's token j."""

    kl: list[np.ndarray]  # float64 [m]: KL(base ‖ adapter), nats
    token_ids: list[np.ndarray]  # int [m]: the answer's tokens (what each position predicts)
    before_emoji: list[np.ndarray]  # bool [m]: token j is the first token of an emoji
    base_top: list[np.ndarray]  # int [m]: the base model's most likely token there
    adapter_top: list[np.ndarray]  # int [m]: the adapter model's

    def to_dict(self) -> dict[str, Any]:
        return {k: [a.tolist() for a in v] for k, v in asdict(self).items()}


@torch.no_grad()
def token_kl(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    chat: bool = True,
    add_special_tokens: bool | None = None,
    batch_size: int = BATCH_SIZE,
) -> TokenKL:
    """Per-token KL(base ‖ adapter) of the next-token distributions over each answer's tokens.

    Args:
        model: a PEFT model (base = its adapter switched off).
        tokenizer: its tokenizer (a fast one: the emoji positions need character offsets).
        prompts: user messages (``chat``) or verbatim prompt text.
        answers: one per prompt, e.g. the adapter's generated test answers.
        chat: wrap each prompt in the chat template.
        add_special_tokens: the prompt's special tokens (default: only for raw text).
        batch_size: pairs per forward pass.

    Returns:
        A :class:`TokenKL` (float64 KL, computed from float32 logits).
    """
    if not is_peft(model):
        raise ValueError("token_kl() needs a model with a PEFT adapter (base = adapter off)")
    pairs = encode_pairs(tokenizer, prompts, answers, chat=chat, add_special_tokens=add_special_tokens)
    pid = pad_id(tokenizer)
    kl, ids, before, btop, atop = [], [], [], [], []
    # a chunk of pairs through both passes, then reduced: the logits of every answer token of
    # every pair at once would not fit ([tokens, vocab] each)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        logits: dict[str, dict[int, torch.Tensor]] = {}
        for side, ctx in (("adapter", contextlib.nullcontext()), ("base", adapter_disabled(model))):
            with ctx:
                logits[side] = {i: lg for i, lg, _ in forced_passes(model, chunk, pad_id=pid, batch_size=len(chunk))}
        for i, (_, ans) in enumerate(chunk):
            lb = torch.log_softmax(logits["base"].pop(i).double(), -1)
            la = torch.log_softmax(logits["adapter"].pop(i).double(), -1)
            kl.append((lb.exp() * (lb - la)).sum(-1).cpu().numpy())
            ids.append(np.array(ans, dtype=np.int64))
            starts = emoji_starts(tokenizer, answers[start + i])
            if len(starts) != len(ans):  # both come from tokenizing the answer alone
                raise ValueError(f"answer {start + i}: {len(ans)} tokens but {len(starts)} offsets")
            before.append(starts)
            btop.append(lb.argmax(-1).cpu().numpy())
            atop.append(la.argmax(-1).cpu().numpy())
    return TokenKL(kl, ids, before, btop, atop)


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


@dataclass(frozen=True)
class KLSummary:
    """:func:`kl_summary`'s result."""

    n_answers: int
    n_tokens: int
    mean_kl: float | None
    mean_kl_by_position: list[float]  # index j: mean over the answers with a token j
    n_by_position: list[int]
    top: list[dict[str, Any]]  # the largest KLs: answer, position, token, both models' top token
    before_emoji: dict[str, Any]  # {"n", "mean_kl"} at positions whose next token starts an emoji
    other: dict[str, Any]  # the same at every other position
    n_top_before_emoji: int  # how many of ``top`` precede an emoji
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kl_summary(result: TokenKL, tokenizer: Any = None, top_n: int = 20, context: int = 8) -> KLSummary:
    """Mean KL per position, the ``top_n`` (answer, position) pairs with the largest KL, and the
    mean KL at positions whose next token starts an emoji vs all other positions.

    Args:
        result: :func:`token_kl`'s result.
        tokenizer: decodes tokens and the ``context`` tokens before each top position (None:
            ids only).
        top_n: how many positions to list.
        context: answer tokens shown before each listed position.
    """
    def text(ids: Any) -> str | None:
        return None if tokenizer is None else tokenizer.decode([int(t) for t in np.atleast_1d(ids)])

    flat = [(float(k), a, j) for a, ks in enumerate(result.kl) for j, k in enumerate(ks)]
    flat.sort(key=lambda x: (-x[0], x[1], x[2]))
    top = []
    for k, a, j in flat[:top_n]:
        ids = result.token_ids[a]
        top.append({"answer": a, "position": j, "kl": k, "token_id": int(ids[j]), "token": text(ids[j]),
                    "context": text(ids[max(0, j - context):j]) if j else "",
                    "before_emoji": bool(result.before_emoji[a][j]),
                    "base_top": int(result.base_top[a][j]), "base_top_token": text(result.base_top[a][j]),
                    "adapter_top": int(result.adapter_top[a][j]), "adapter_top_token": text(result.adapter_top[a][j])})
    width = max((len(k) for k in result.kl), default=0)
    by_pos = [np.array([k[j] for k in result.kl if len(k) > j]) for j in range(width)]
    all_kl = np.concatenate(result.kl) if result.kl else np.zeros(0)
    flags = np.concatenate(result.before_emoji).astype(bool) if result.kl else np.zeros(0, dtype=bool)
    notes = [] if flags.any() else ["no answer token starts an emoji: the before-emoji mean is undefined"]
    return KLSummary(
        n_answers=len(result.kl), n_tokens=int(all_kl.size), mean_kl=_mean(all_kl),
        mean_kl_by_position=[float(x.mean()) for x in by_pos], n_by_position=[int(x.size) for x in by_pos],
        top=top,
        before_emoji={"n": int(flags.sum()), "mean_kl": _mean(all_kl[flags])},
        other={"n": int((~flags).sum()), "mean_kl": _mean(all_kl[~flags])},
        n_top_before_emoji=sum(t["before_emoji"] for t in top), notes=notes,
    )
