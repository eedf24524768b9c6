"""Exact emoji probabilities and logit lens.

Byte-level BPE splits most emojis into 2-4 tokens, so the probability of an emoji is over its
whole token sequence, teacher-forced: ``log P(e | prompt) = Σ_i log P(t_i | prompt, t_<i)``.
Emojis are tokenized on their own (``add_special_tokens=False``), with and without a leading
space, and appended to the prompt's ids, so the prompt's tokens never merge with the emoji's.

The logit lens decodes the same quantity from the residual stream after every layer: the final
norm, then the unembedding (and the model's final logit soft-capping, where it has one: Gemma 2),
at the positions that predict the emoji's tokens. After the last layer it is exactly the
model's own log-probability.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float

from interp.capture import encode, pad_id, pad_left
from interp.hooks import final_norm, n_layers, record_activations, unembed
from interp.sites import logit_softcap
from text2emoji.core.presets import BATCH_SIZE


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


@functools.cache
def _cache_name() -> str:
    """transformers 5.24 renamed ``past_key_values`` (argument and output) to ``cache``."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def continuation_passes(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int = 0,
    batch_size: int = BATCH_SIZE,
    sites: Sequence[str] = (),
) -> Iterator[tuple[int, torch.Tensor, dict[str, torch.Tensor]]]:
    """For each ``(prompt_ids, continuation_ids)`` pair: its index, the logits ``[m, vocab]`` at
    the ``m`` positions that predict its continuation's tokens, and the values of ``sites``
    there (``{canonical site: [m, d]}``), running each distinct prompt once.

    Distinct prompts go through the model in left-padded batches with a KV cache, whose last
    position predicts every continuation's first token. Each continuation longer than a token
    then needs its tokens but the last (which predicts nothing) run on top of its prompt's
    cache: the distinct such runs of a prompt, a run that is a prefix of another's read off
    that one (causal attention: a prefix's positions never see what follows it; emojis that
    share their first bytes share these runs), go through the model right-padded on repeated
    rows of the cache (a real token never sees the padding after it). Scoring E emojis after a
    prompt thus costs about one forward pass of the prompt instead of E.
    """
    device = next(model.parameters()).device
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (prompt, cont) in enumerate(pairs):
        if not cont:
            raise ValueError(f"pair {i}: empty continuation")
        by_prompt.setdefault(tuple(prompt), []).append(i)
    prompts = sorted(by_prompt, key=len)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        # forward passes inside no_grad, yields outside it: grad mode is global state, which a
        # `with` around a yield (or a decorator, under some wrappers) would leak
        with torch.no_grad():
            ids, mask, pos = pad_left(chunk, pad_id, device)
            with record_activations(model, sites) as acts:
                out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, use_cache=True)
            first = out.logits[:, -1].float()
            first_acts = {k: v[0][:, -1] for k, v in acts.items()}
            cache = getattr(out, _cache_name())
            del out, acts
        members = [(b, i) for b, p in enumerate(chunk) for i in by_prompt[p]]
        for b, i in members:
            if len(pairs[i][1]) == 1:
                yield i, first[b:b + 1], {k: v[b:b + 1] for k, v in first_acts.items()}
        longer = [(b, i) for b, i in members if len(pairs[i][1]) > 1]
        runs, run_of = shared_runs([(b, tuple(pairs[i][1][:-1])) for b, i in longer])
        readers: dict[int, list[tuple[int, int]]] = {}  # run index -> the (row, pair) read off it
        for b, i in longer:
            readers.setdefault(run_of[(b, tuple(pairs[i][1][:-1]))], []).append((b, i))
        # at most batch_size runs at a time: each carries a copy of its prompt's cache
        for g in range(0, len(runs), batch_size):
            group = runs[g:g + batch_size]
            with torch.no_grad():
                rows = [b for b, _ in group]
                logits2, acts2 = _continue(model, _cache_rows(cache, rows, device), mask[rows],
                                           [seq for _, seq in group], pad_id, sites, device)
            for r in range(len(group)):
                for b, i in readers[g + r]:
                    m = len(pairs[i][1])
                    yield (i, torch.cat([first[b:b + 1], logits2[r, :m - 1]]),
                           {k: torch.cat([first_acts[k][b:b + 1], acts2[k][r, :m - 1]]) for k in first_acts})


def shared_runs(needed: Sequence[tuple[int, tuple[int, ...]]]) -> tuple[list[tuple[int, tuple[int, ...]]], dict]:
    """The runs that give every needed ``(prompt row, tokens)``: one per distinct tokens of a
    row, except that tokens which are a prefix of another run of the same row are read off it;
    and where each needed one is read (its index in the runs).

    >>> runs, at = shared_runs([(0, (5, 6)), (0, (5,)), (0, (5, 6)), (1, (5,)), (0, (7,))])
    >>> runs, at[(0, (5,))], at[(1, (5,))]
    ([(0, (5, 6)), (0, (7,)), (1, (5,))], 0, 2)
    """
    runs: list[tuple[int, tuple[int, ...]]] = []
    at: dict[tuple[int, tuple[int, ...]], int] = {}
    for row, seq in sorted(set(needed), key=lambda x: (x[0], -len(x[1]), x[1])):  # longest first per row
        at[(row, seq)] = next((r for r, (b, s) in enumerate(runs) if b == row and s[:len(seq)] == seq), len(runs))
        if at[(row, seq)] == len(runs):
            runs.append((row, seq))
    return runs, at


def _cache_rows(cache: Any, rows: list[int], device: torch.device) -> Any:
    """A cache holding ``rows`` of ``cache`` (repeats allowed), leaving ``cache`` as it was."""
    idx = torch.tensor(rows, device=device)
    if hasattr(cache, "layers"):  # select() rebinds each layer's tensors: shallow copies suffice
        picked = copy.copy(cache)
        picked.layers = [copy.copy(layer) for layer in cache.layers]
    else:
        picked = copy.deepcopy(cache)
    picked.batch_select_indices(idx)
    return picked


def _continue(model: Any, cache: Any, prompt_mask: torch.Tensor, runs: list[Sequence[int]], pad_id: int,
              sites: Sequence[str], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each run of tokens, right-padded, on top of its prompt's ``cache`` row (``prompt_mask``:
    those rows' attention masks): logits ``[rows, width, vocab]`` and the values of ``sites``
    ``[rows, width, d]``."""
    width = max(len(c) for c in runs)
    ids = torch.full((len(runs), width), pad_id, dtype=torch.long)
    for r, c in enumerate(runs):
        ids[r, :len(c)] = torch.tensor(list(c), dtype=torch.long)
    mask = torch.cat([prompt_mask, torch.ones(len(runs), width, dtype=prompt_mask.dtype, device=device)], 1)
    pos = prompt_mask.sum(1, keepdim=True) + torch.arange(width, device=device)
    with record_activations(model, sites) as acts:
        logits = model(input_ids=ids.to(device), attention_mask=mask, position_ids=pos, use_cache=True,
                       **{_cache_name(): cache}).logits.float()
    return logits, {k: v[0] for k, v in acts.items()}


@torch.no_grad()
def score_continuations(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int = 0,
    batch_size: int = BATCH_SIZE,
    before_forward: Callable[[list[int], torch.Tensor], None] | None = None,
) -> list[Scored]:
    """Teacher-forced log-probability of each ``(prompt_ids, continuation_ids)`` pair.

    Without ``before_forward``, each distinct prompt runs once (:func:`continuation_passes`).
    ``before_forward(batch_indices, attention_mask)`` is called before each batch's forward
    pass (interventions use it to line their values up with the batch); then every pair runs
    as one whole sequence.
    """
    out: list[Scored | None] = [None] * len(pairs)
    if before_forward is None:
        for i, logits, _ in continuation_passes(model, pairs, pad_id=pad_id, batch_size=batch_size):
            toks = torch.tensor(list(pairs[i][1]), device=logits.device)
            lp = torch.log_softmax(logits, -1).gather(-1, toks[:, None])[:, 0].tolist()
            out[i] = Scored(float(sum(lp)), lp)
        return out  # type: ignore[return-value]
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs = [list(pairs[i][0]) + list(pairs[i][1]) for i in idx]
        ids, mask, pos = pad_left(seqs, pad_id, device)
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


def score_continuations_nnsight(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int = 0,
    batch_size: int = BATCH_SIZE,
    remote: bool = False,
) -> list[Scored]:
    """:func:`score_continuations` through nnsight: one ``trace`` per batch of whole sequences
    (prompt + continuation, left-padded), on NDIF when ``remote`` (``model``: a remote model's
    meta module, :mod:`interp.remote`). The log-probabilities are gathered where the model runs,
    so ``[batch, longest continuation]`` numbers come back, never logits over the vocabulary.

    The same numbers as :func:`score_continuations` (tests: 1e-5), which shares each prompt's
    pass between its continuations; here each pair is one sequence, which costs more passes
    and fewer round trips.
    """
    from interp.capture import check_remote, input_device, nnsight_model
    from interp.remote import remote_errors

    check_remote(model, "nnsight", remote)
    lm = nnsight_model(model, tokenizer)
    device = input_device(model)
    out: list[Scored | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if any(not pairs[i][1] for i in idx):
            raise ValueError("empty continuation")
        ids, mask, pos = pad_left([list(pairs[i][0]) + list(pairs[i][1]) for i in idx], pad_id, device)
        keep = max(len(pairs[i][1]) for i in idx) + 1
        # kept position k (k < keep - 1) predicts the token after it: targets[:, k]
        targets = ids[:, ids.shape[1] - keep + 1:]
        batch = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        # the block below is what NDIF runs when remote: envoys, tensors and methods only
        with torch.no_grad(), remote_errors(remote):
            with lm.trace(batch, remote=remote, logits_to_keep=keep, use_cache=False):
                logits = lm.output.logits  # [batch, keep, vocab]
                logp = logits[:, :-1].float().log_softmax(-1)
                picked = logp.gather(-1, targets.to(logp.device)[..., None])[..., 0].save()
        picked = picked.cpu()
        for row, i in enumerate(idx):
            # a continuation of m tokens is predicted by the last m kept positions but one
            lp = picked[row, keep - 1 - len(pairs[i][1]):].tolist()
            out[i] = Scored(float(sum(lp)), lp)
    return out  # type: ignore[return-value]


def _score(model: Any, tokenizer: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int,
           backend: str, remote: bool) -> list[Scored]:
    """Score ``pairs`` with the ``torch`` backend (shared prompt passes) or ``nnsight``."""
    if backend == "nnsight":
        return score_continuations_nnsight(model, tokenizer, pairs, pad_id=pad_id(tokenizer),
                                           batch_size=batch_size, remote=remote)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; valid: torch, nnsight")
    if remote:
        raise ValueError("remote execution runs the nnsight backend, not 'torch'")
    return score_continuations(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size)


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
    batch_size: int = BATCH_SIZE,
    backend: str = "torch",
    remote: bool = False,
) -> Float[np.ndarray, "prompts emojis"]:
    """``[prompts, emojis]`` exact log P(emoji | prompt); ``backend`` ``torch`` or ``nnsight``
    (on NDIF when ``remote``: :func:`score_continuations_nnsight`)."""
    pairs = emoji_pairs(tokenizer, prompts, emojis, chat=chat, leading_space=leading_space)
    scored = _score(model, tokenizer, pairs, batch_size, backend, remote)
    return rearrange(np.array([s.total for s in scored]), "(prompt emoji) -> prompt emoji", prompt=len(prompts))


def emoji_report(
    model: Any, tokenizer: Any, prompt: str, emojis: Sequence[str], *, chat: bool = False,
    backend: str = "torch", remote: bool = False,
) -> list[dict[str, Any]]:
    """Per emoji: its token ids and exact log-probability, with and without a leading space
    (``backend`` and ``remote`` as in :func:`emoji_logprobs`)."""
    ids, toks = report_pairs(tokenizer, prompt, emojis, chat=chat)
    scored = _score(model, tokenizer, [(ids, t) for _, _, t in toks], BATCH_SIZE, backend, remote)
    return report_rows(tokenizer, emojis, toks, scored)


def report_pairs(tokenizer: Any, prompt: str, emojis: Sequence[str], *,
                 chat: bool = False) -> tuple[list[int], list[tuple[str, str, list[int]]]]:
    """:func:`emoji_report`'s inputs: the prompt's ids and ``(emoji, variant, token ids)`` for
    each emoji, without and with a leading space."""
    variants = (("no_space", False), ("leading_space", True))
    ids = encode(tokenizer, [prompt], chat=chat)[0].ids
    return ids, [(e, key, emoji_token_ids(tokenizer, e, space)) for e in emojis for key, space in variants]


def report_rows(tokenizer: Any, emojis: Sequence[str], toks: Sequence[tuple[str, str, list[int]]],
                scored: Sequence[Scored]) -> list[dict[str, Any]]:
    """:func:`emoji_report`'s rows from :func:`report_pairs`' tokens and their scores."""
    rows: dict[str, dict[str, Any]] = {e: {"emoji": e} for e in emojis}
    for (e, key, t), s in zip(toks, scored, strict=True):
        rows[e][key] = {
            "token_ids": t, "tokens": tokenizer.convert_ids_to_tokens(t),
            "logprob": s.total, "prob": float(np.exp(s.total)), "per_token_logprob": s.per_token,
        }
    return list(rows.values())


class _Lens:
    """The logit lens of one model: final norm, unembedding and log-softmax of residuals."""

    def __init__(self, model: Any):
        self.norm = final_norm(model)
        self.unembed = unembed(model)
        self.cap = logit_softcap(model)  # the model's own final step, where it has one
        self.sites = [f"blocks.{i}.hook_resid_post" for i in range(n_layers(model))]

    def __call__(self, acts: dict[str, torch.Tensor], targets: Sequence[int]) -> np.ndarray:
        """``[layers]``: Σ over the continuation of log P(target) read after each layer, from
        ``acts`` (each site's ``[m, d]`` at the positions predicting the ``m`` targets)."""
        resid = torch.stack([acts[s] for s in self.sites])  # [layers, m, d]
        # one unembedding for all layers: reading its weights dominates the cost
        logits = self.unembed(self.norm(resid)).float()
        if self.cap is not None:
            logits = self.cap * torch.tanh(logits / self.cap)
        logp = torch.log_softmax(logits, -1)
        t = torch.tensor(list(targets), device=logp.device)
        return logp.gather(-1, t.expand(logp.shape[0], -1)[..., None])[..., 0].sum(-1).cpu().numpy()


@torch.no_grad()
def logit_lens(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    emoji: str,
    *,
    chat: bool = True,
    leading_space: bool = False,
    batch_size: int = BATCH_SIZE,
) -> Float[np.ndarray, "prompts layers"]:
    """``[prompts, layers]``: log P(emoji | prompt) decoded from the residual stream after each
    layer (final norm, then unembedding), teacher-forced over all the emoji's tokens."""
    toks = emoji_token_ids(tokenizer, emoji, leading_space)
    pairs = [(e.ids, toks) for e in encode(tokenizer, prompts, chat=chat)]
    lens = _Lens(model)
    out = np.zeros((len(prompts), len(lens.sites)))
    for i, _, acts in continuation_passes(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size, sites=lens.sites):
        out[i] = lens(acts, toks)
    return out


@torch.no_grad()
def emoji_trace(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    emojis: Sequence[str],
    *,
    lens_emojis: Sequence[str] = (),
    chat: bool = True,
    batch_size: int = BATCH_SIZE,
) -> dict[str, np.ndarray]:
    """Everything the trace stage reads off one forward pass per prompt.

    ``no_space`` and ``leading_space``: ``[prompts, emojis]`` exact log P(emoji | prompt), as
    :func:`emoji_logprobs` gives them; ``lens``: ``[prompts, len(lens_emojis), layers]``, as
    :func:`logit_lens` gives it (no leading space).
    """
    enc = encode(tokenizer, prompts, chat=chat)
    variants = {"no_space": [emoji_token_ids(tokenizer, e, False) for e in emojis],
                "leading_space": [emoji_token_ids(tokenizer, e, True) for e in emojis],
                "lens": [emoji_token_ids(tokenizer, e, False) for e in lens_emojis]}
    # a lens emoji that is also scored reads its no-space pass (the same tokens after the same
    # prompt): one pass, two readings
    reads: dict[tuple[str, int], list[tuple[str, int]]] = {("no_space", j): [("no_space", j)] for j in range(len(emojis))}
    reads |= {("leading_space", j): [("leading_space", j)] for j in range(len(emojis))}
    for j, e in enumerate(lens_emojis):
        reads.setdefault(("no_space", emojis.index(e)) if e in emojis else ("lens", j), []).append(("lens", j))
    pairs, where = [], []
    for p, e in enumerate(enc):
        for (key, j), targets in reads.items():
            pairs.append((e.ids, variants[key][j]))
            where.append((p, targets))
    lens = _Lens(model)
    out = {k: np.zeros((len(prompts), len(v))) for k, v in variants.items()}
    out["lens"] = np.zeros((len(prompts), len(lens_emojis), len(lens.sites)))
    sites = lens.sites if lens_emojis else ()
    for i, logits, acts in continuation_passes(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size, sites=sites):
        p, targets = where[i]
        toks = pairs[i][1]
        for key, j in targets:
            if key == "lens":
                out[key][p, j] = lens(acts, toks)
            else:
                t = torch.tensor(toks, device=logits.device)
                out[key][p, j] = float(torch.log_softmax(logits, -1).gather(-1, t[:, None]).sum())
    return out
