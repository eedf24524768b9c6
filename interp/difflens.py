"""Activation-difference lens: what an adapter adds to the residual stream on neutral text, and
which tokens that addition promotes.

:func:`diff_vectors` runs the same inputs with the adapter on and off (one loaded model,
:func:`interp.models.adapter_disabled`) and averages ``resid_post_L(adapter) - resid_post_L(base)``
over K tokens at the start of each text (by default the K after its first token, the attention
sink: see :func:`diff_vectors`), for every layer L (``resid_post_L``: the output of decoder
block L, before the final norm). :func:`lens` reads each layer's difference through the final
norm and the unembedding (the logit lens of the difference, as in the activation-difference
lens, ADL, of Minder et al. 2025, "Narrow finetuning leaves clearly readable traces in
activation differences").

>>> import numpy as np
>>> from tests.conftest import tiny_model, tiny_tokenizer
>>> res = lens(tiny_model(), tiny_tokenizer(), np.ones((2, 64), dtype=np.float32), top=3)
>>> len(res.layers), len(res.layers[0].top)
(2, 3)
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from interp.capture import pad_id, pad_left
from interp.hooks import final_norm, n_layers, record_activations, unembed
from interp.models import adapter_disabled, is_peft
from text2emoji.core.presets import BATCH_SIZE

NORM_CHOICE = ("the final-norm module applied to the difference vector itself, then the unembedding "
               "(as ADL's logit lens does); for RMSNorm the ranking is that of W_U (g * v), the 1/rms(v) "
               "scale being one positive number per layer")


def counted_ids(tokenizer: Any, texts: Sequence[str], first_k: int, skip_first: bool) -> list[tuple[list[int], int]]:
    """Per text: the ids that go through the model (the skipped first token, then up to
    ``first_k``) and the index where the counted tokens start (1 with ``skip_first``, else 0)."""
    out = []
    for i, text in enumerate(texts):
        ids = list(tokenizer(text)["input_ids"])  # as the tokenizer does by default (its BOS too)
        start = 1 if skip_first else 0
        if len(ids) <= start:
            what = "no tokens" if not ids else "one token only, which skip_first (--skip-first) leaves out"
            raise ValueError(f"text {i} has {what}: {text[:40]!r}")
        # causal attention: the first tokens' residuals do not depend on what follows them
        out.append((ids[:start + first_k], start))
    return out


@torch.no_grad()
def diff_vectors(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    first_k: int,
    batch_size: int = BATCH_SIZE,
    *,
    skip_first: bool = True,
    base_cache: dict[int, torch.Tensor] | None = None,
) -> Float[np.ndarray, "layers d_model"]:
    """Mean activation difference, adapter minus base, at every decoder block's output.

    Row L is the mean over all counted (text, position) pairs of
    ``resid_post_L(adapter) - resid_post_L(base)``: each text's first ``first_k`` tokens count
    (a text shorter than that: all its tokens), so a longer text weighs no more than K positions
    and the mean is over tokens, not per text first. Texts are tokenized as the tokenizer does
    by default. With ``skip_first`` each text's first token (BOS where the tokenizer adds one,
    else the text's first word) still goes through the model but does not count, and the K
    tokens are the K after it: position 0 is the attention sink, whose activations are orders
    of magnitude larger than the others' (SmolLM2-135M, which adds no BOS: norm ~23,000 vs ~150
    at layer 12), so its small relative change would dominate the mean (measured with the
    positive-control adapter on the bundled neutral texts: the mean difference's norm at layer
    12 is ~152 with position 0 counted and ~8 without; layers 24-28 promote " a", " the"
    with it and "together", "everyone", "neighbours" without it). Both passes see the same
    left-padded batch (``position_ids`` counted from each text's first token; padding never
    counts).

    Args:
        model: a PEFT model (the adapter is switched off for the base pass).
        tokenizer: its tokenizer.
        texts: neutral texts, used verbatim.
        first_k: how many tokens of each text count (>= 1).
        batch_size: texts per forward pass.
        skip_first: leave each text's first token (position 0) out of the mean.
        base_cache: a dict shared by calls with the same texts, ``first_k``, ``batch_size`` and
            ``skip_first`` (e.g. one per adapter of one base): the base pass of each batch is
            read from it where an earlier call stored it, else run and stored (the base model
            does not depend on which adapter is active).

    Returns:
        float32 ``[n_layers, d_model]``.

    Raises:
        ValueError: no texts, ``first_k < 1``, a text without tokens, or a model without an adapter.
    """
    if not texts:
        raise ValueError("no texts")
    if first_k < 1:
        raise ValueError(f"first_k must be >= 1, got {first_k}")
    if not is_peft(model):
        raise ValueError("diff_vectors() needs a model with a PEFT adapter (adapter minus base)")
    enc = counted_ids(tokenizer, texts, first_k, skip_first)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(n_layers(model))]
    device = next(model.parameters()).device
    total: torch.Tensor | None = None
    count = 0
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
    for s in range(0, len(order), batch_size):
        chunk = [enc[i] for i in order[s:s + batch_size]]
        ids, mask, pos = pad_left([c[0] for c in chunk], pad_id(tokenizer), device)
        counted = torch.zeros_like(mask, dtype=torch.bool)
        width = ids.shape[1]
        for row, (seq, start) in enumerate(chunk):
            counted[row, width - len(seq) + start:] = True
        runs = []
        for ctx in (contextlib.nullcontext(), adapter_disabled(model)):  # adapter on, then off
            if runs and base_cache is not None and s in base_cache:
                runs.append(base_cache[s])
                continue
            with ctx, record_activations(model, sites) as acts:
                model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, use_cache=False)
            # boolean selection, not a multiply by the mask: padded positions may hold anything
            runs.append(torch.stack([acts[site][0] for site in sites])[:, counted])  # [layers, counted, d]
        if base_cache is not None:
            base_cache[s] = runs[1]
        diff = runs[0].double() - runs[1].double()  # [layers, counted, d]
        total = diff.sum(1) if total is None else total + diff.sum(1)
        count += int(counted.sum())
    assert total is not None
    return (total / count).float().cpu().numpy()


@dataclass(frozen=True)
class EmojiRank:
    """Where an emoji's first token ranks among all tokens a difference vector promotes."""

    emoji: str
    trait: str | None
    token_id: int  # the first token of the emoji tokenized alone, no leading space
    token: str
    rank: int  # 1 = the most promoted token of the vocabulary
    logit: float
    space_token_id: int  # the same with a leading space (" 🎉")
    space_token: str
    space_rank: int
    space_logit: float


@dataclass(frozen=True)
class LayerLens:
    """One layer's difference vector read through the final norm and the unembedding."""

    layer: int
    norm: float  # L2 norm of the difference vector
    top: list[dict[str, Any]]  # [{"id", "token", "text", "logit"}], most promoted first
    emojis: list[EmojiRank]


@dataclass(frozen=True)
class DiffLens:
    """:func:`lens`: one :class:`LayerLens` per row of the vectors."""

    layers: list[LayerLens]
    vocab_size: int
    norm_choice: str = NORM_CHOICE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"{text!r} tokenizes to nothing")
    return int(ids[0])


@torch.no_grad()
def lens(
    model: Any,
    tokenizer: Any,
    vectors: Float[np.ndarray, "layers d_model"],
    top: int = 20,
    emojis: Sequence[str] | Mapping[str, str | None] = (),
) -> DiffLens:
    """The tokens each row of ``vectors`` promotes most: ``unembed(final_norm(v))``.

    The final norm is applied to the difference vector itself (a norm is not linear, so
    ``norm(a) - norm(b)`` differs; this is the choice of ADL's logit lens). For RMSNorm,
    ``norm(v) = g * v / rms(v)``: the ranking is that of ``W_U (g * v)``; for LayerNorm the
    vector is also centred and the norm's bias added (the same bias for every layer). Logits are
    reported as they come out of the unembedding (the model's own logit scaling or soft-capping
    after ``lm_head``, where it has one, is not applied).

    Args:
        model: the model whose final norm and unembedding read the vectors (a PEFT model as
            it is: with its adapter on unless the caller disables it).
        tokenizer: its tokenizer.
        vectors: ``[layers, d_model]``, e.g. :func:`diff_vectors`; row i is labelled layer i.
        top: how many of the most promoted tokens to list per layer.
        emojis: emojis whose first token's rank to report (multi-token emojis: the first token
            only, tokenized alone without special tokens, with and without a leading space;
            byte-level BPE shares first tokens between many emojis, so the rank says "emoji
            bytes are promoted", not this emoji); a mapping gives each emoji its trait.

    Returns:
        A :class:`DiffLens`.
    """
    norm, head = final_norm(model), unembed(model)
    param = next(head.parameters())
    v = torch.as_tensor(np.asarray(vectors), dtype=param.dtype, device=param.device)
    logits = head(norm(v)).float()  # [layers, vocab]
    traits = dict(emojis) if isinstance(emojis, Mapping) else dict.fromkeys(emojis)
    ids = {e: (_first_token(tokenizer, e), _first_token(tokenizer, " " + e)) for e in traits}
    layers = []
    for i, row in enumerate(logits):
        vals, idx = row.topk(min(top, row.shape[0]))
        top_rows = [{"id": int(t), "token": str(tokenizer.convert_ids_to_tokens(int(t))),
                     "text": tokenizer.decode([int(t)]), "logit": float(x)} for x, t in zip(vals, idx, strict=True)]

        def rank(t: int, row: torch.Tensor = row) -> int:
            return int((row > row[t]).sum()) + 1

        ranks = [EmojiRank(e, traits[e], a, str(tokenizer.convert_ids_to_tokens(a)), rank(a), float(row[a]),
                           b, str(tokenizer.convert_ids_to_tokens(b)), rank(b), float(row[b]))
                 for e, (a, b) in ids.items()]
        layers.append(LayerLens(i, float(np.linalg.norm(np.asarray(vectors[i], dtype=np.float64))), top_rows, ranks))
    return DiffLens(layers, int(logits.shape[-1]))
