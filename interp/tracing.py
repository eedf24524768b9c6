"""Exact emoji probabilities and logit lens.

Byte-level BPE splits most emojis into 2-4 tokens, so the probability of an emoji is over its
whole token sequence, teacher-forced: ``log P(e | prompt) = Σ_i log P(t_i | prompt, t_<i)``.
Emojis are tokenized on their own (``add_special_tokens=False``), with and without a leading
space, and appended to the prompt's ids, so the prompt's tokens never merge with the emoji's.

The logit lens decodes the same quantity from the residual stream after every layer: the final
norm, then the unembedding, at the positions that predict the emoji's tokens. After the last
layer it is exactly the model's own log-probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interp.capture import encode, pad_id, pad_left
from interp.hooks import arch_spec, n_layers, record_activations


def emoji_token_ids(tokenizer: Any, emoji: str, leading_space: bool = False) -> list[int]:
    """The emoji's tokens as they follow a prompt (never with BOS)."""
    ids = tokenizer((" " if leading_space else "") + emoji, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"emoji {emoji!r} tokenizes to nothing")
    return list(ids)


@dataclass(frozen=True)
class Scored:
    total: float  # log P of the whole continuation
    per_token: list[float]


@torch.no_grad()
def score_continuations(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int = 0,
    batch_size: int = 16,
    before_forward: Callable[[list[int], torch.Tensor], None] | None = None,
) -> list[Scored]:
    """Teacher-forced log-probability of each ``(prompt_ids, continuation_ids)`` pair.

    ``before_forward(batch_indices, attention_mask)`` is called before each batch's forward
    pass (interventions use it to line their values up with the batch).
    """
    device = next(model.parameters()).device
    out: list[Scored | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs = [list(pairs[i][0]) + list(pairs[i][1]) for i in idx]
        ids, mask, pos = pad_left(seqs, pad_id, device)
        if before_forward is not None:
            before_forward(idx, mask)
        keep = max(len(pairs[i][1]) for i in idx) + 1
        # logits only where a continuation token is predicted: the vocabulary projection of
        # every position would dominate the cost (and the memory) of scoring
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep, use_cache=False).logits.float()
        logp = torch.log_softmax(logits, -1)  # [batch, keep, vocab]: positions width-keep .. width-1
        width = ids.shape[1]
        for row, i in enumerate(idx):
            m = len(pairs[i][1])
            # position p predicts token p+1: the continuation's tokens sit at width-m .. width-1,
            # predicted from positions width-m-1 .. width-2 = kept rows keep-m-1 .. keep-2
            preds = logp[row, keep - m - 1:keep - 1]
            toks = ids[row, width - m:]
            lp = preds.gather(-1, toks[:, None])[:, 0].tolist()
            out[i] = Scored(float(sum(lp)), lp)
    return out  # type: ignore[return-value]


def emoji_pairs(
    tokenizer: Any, prompts: Sequence[str], emojis: Sequence[str], *, chat: bool = True, leading_space: bool = False
) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, emoji ids)`` for every prompt and emoji, emojis varying fastest."""
    enc = encode(tokenizer, prompts, chat=chat)
    toks = [emoji_token_ids(tokenizer, e, leading_space) for e in emojis]
    return [(p.ids, t) for p in enc for t in toks]


def emoji_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    emojis: Sequence[str],
    *,
    chat: bool = True,
    leading_space: bool = False,
    batch_size: int = 16,
) -> np.ndarray:
    """``[prompts, emojis]`` exact log P(emoji | prompt)."""
    pairs = emoji_pairs(tokenizer, prompts, emojis, chat=chat, leading_space=leading_space)
    scored = score_continuations(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size)
    return np.array([s.total for s in scored]).reshape(len(prompts), len(emojis))


def emoji_report(
    model: Any, tokenizer: Any, prompt: str, emojis: Sequence[str], *, chat: bool = False
) -> list[dict[str, Any]]:
    """Per emoji: its token ids and exact log-probability, with and without a leading space."""
    variants = (("no_space", False), ("leading_space", True))
    ids = encode(tokenizer, [prompt], chat=chat)[0].ids
    toks = [(e, key, emoji_token_ids(tokenizer, e, space)) for e in emojis for key, space in variants]
    scored = score_continuations(model, [(ids, t) for _, _, t in toks], pad_id=pad_id(tokenizer))
    rows: dict[str, dict[str, Any]] = {e: {"emoji": e} for e in emojis}
    for (e, key, t), s in zip(toks, scored, strict=True):
        rows[e][key] = {
            "token_ids": t, "tokens": tokenizer.convert_ids_to_tokens(t),
            "logprob": s.total, "prob": float(np.exp(s.total)), "per_token_logprob": s.per_token,
        }
    return list(rows.values())


@torch.no_grad()
def logit_lens(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    emoji: str,
    *,
    chat: bool = True,
    leading_space: bool = False,
    batch_size: int = 16,
) -> np.ndarray:
    """``[prompts, layers]``: log P(emoji | prompt) decoded from the residual stream after each
    layer (final norm, then unembedding), teacher-forced over all the emoji's tokens."""
    enc = encode(tokenizer, prompts, chat=chat)
    toks = emoji_token_ids(tokenizer, emoji, leading_space)
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    norm = root.get_submodule(arch_spec(model).final_norm)
    unembed = model.get_output_embeddings()
    L = n_layers(model)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(L)]
    device = next(model.parameters()).device
    m = len(toks)
    out = np.zeros((len(prompts), L))
    pad = pad_id(tokenizer)
    target = torch.tensor(toks, device=device)
    for start in range(0, len(enc), batch_size):
        chunk = enc[start:start + batch_size]
        ids, mask, pos = pad_left([e.ids + toks for e in chunk], pad, device)
        with record_activations(model, sites) as acts:
            model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, use_cache=False)
        # [layers, batch, m, d]: the positions that predict the emoji's tokens, every layer
        resid = torch.stack([acts[s][0][:, -m - 1:-1] for s in sites])
        # one unembedding for all layers and prompts: reading its weights dominates the cost
        logp = torch.log_softmax(unembed(norm(resid)).float(), -1)
        picked = logp.gather(-1, target.expand(*logp.shape[:-1])[..., None])[..., 0]  # [L, batch, m]
        out[start:start + len(chunk)] = picked.sum(-1).T.cpu().numpy()
    return out
