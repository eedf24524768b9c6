"""Teacher-forced passes over (prompt, answer) pairs: the logits that predict each answer token
and the values of hook sites at the answer's tokens, in left-padded batches.

An answer is tokenized on its own (no special tokens) and appended to its prompt's ids, as
:func:`interp.capture.encode` does, so a prompt's tokens never merge with the answer's. With
``m`` answer tokens at positions ``p .. p+m-1``, the logits that predict them sit at positions
``p-1 .. p+m-2`` (the prompt's last token predicts the first answer token) and the site values
are read at ``p .. p+m-1`` (the answer's own tokens).

>>> from tests.conftest import tiny_model, tiny_tokenizer
>>> tok = tiny_tokenizer()
>>> pairs = encode_pairs(tok, ["w1 w2"], ["w3 w4 w5"], chat=False)
>>> i, logits, acts = next(forced_passes(tiny_model(), pairs, sites=["blocks.0.hook_resid_post"]))
>>> tuple(logits.shape), tuple(acts["blocks.0.hook_resid_post"].shape)
((3, 128), (3, 64))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from interp.capture import pad_left
from interp.chat import format_chat
from interp.hooks import record_activations
from text2emoji.core.presets import BATCH_SIZE

Pair = tuple[list[int], list[int]]


def encode_pairs(
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    chat: bool = True,
    add_special_tokens: bool | None = None,
) -> list[Pair]:
    """``(prompt ids, answer ids)`` per pair.

    Args:
        tokenizer: a transformers tokenizer.
        prompts: user messages (``chat=True``: each wrapped in the chat template as one user
            turn) or prompt text used verbatim (``chat=False``; e.g. prompts already formatted).
        answers: one answer per prompt; tokenized alone, without special tokens (an empty
            answer gives no tokens).
        chat: wrap each prompt in the chat template.
        add_special_tokens: whether the prompt gets the tokenizer's special tokens (BOS);
            default: only raw text (``chat=False``), as :func:`interp.behaviour.generation.generate`.

    Raises:
        ValueError: lengths differ, or a prompt tokenizes to nothing.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers: one answer per prompt")
    special = (not chat) if add_special_tokens is None else add_special_tokens
    out = []
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        text = format_chat(tokenizer, p) if chat else p
        ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenization")
        out.append((ids, list(tokenizer(a, add_special_tokens=False)["input_ids"]) if a else []))
    return out


def forced_passes(
    model: Any,
    pairs: Sequence[Pair],
    *,
    pad_id: int = 0,
    batch_size: int = BATCH_SIZE,
    sites: Sequence[str] = (),
    logits: bool = True,
) -> Iterator[tuple[int, Tensor | None, dict[str, Tensor]]]:
    """For each pair: its index, the float32 logits ``[m, vocab]`` that predict its ``m``
    answer tokens (None with ``logits=False``), and ``{canonical site: [m, d]}`` at the answer's
    tokens. Pairs run whole (prompt + answer), left-padded with ``position_ids`` counted from
    each row's first real token, shortest first; they are yielded in that order.

    Only the last ``max(m) + 1`` positions' logits are computed (the vocabulary projection of
    every position would dominate time and memory).
    """
    if any(not p for p, _ in pairs):
        raise ValueError("every pair needs a non-empty prompt")
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        lens = [len(pairs[i][1]) for i in idx]
        keep = max(lens) + 1 if logits else 1
        # the forward inside no_grad, the yields outside it (grad mode is global state)
        with torch.no_grad():
            ids, mask, pos = pad_left([pairs[i][0] + pairs[i][1] for i in idx], pad_id, device)
            with record_activations(model, sites) as acts:
                out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep, use_cache=False)
            kept = out.logits.float() if logits else None
            values = {k: v[0] for k, v in acts.items()}
            del out, acts
        width = ids.shape[1]
        for row, (i, m) in enumerate(zip(idx, lens, strict=True)):
            # kept row r is position width-keep+r; the m answer tokens at width-m .. width-1 are
            # predicted from positions width-m-1 .. width-2 = kept rows keep-m-1 .. keep-2
            lg = kept[row, keep - m - 1:keep - 1] if kept is not None else None
            yield i, lg, {k: v[row, width - m:] for k, v in values.items()}
