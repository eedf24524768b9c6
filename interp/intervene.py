"""Causal tests on neurons: ablation and activation patching, each against random controls.

* **Ablation**: in the post-PEFT model, set the candidate neurons' activations (the input of
  the layer's ``down_proj``) to zero or to their mean, at every position, and measure the change
  in the log-probability of the trait's emojis (and, with :func:`ablation_generation`, in the
  emoji rate and ESR of generated answers).
* **Patching**: in the base model (adapter off), replace the candidate neurons' activations by
  their post-PEFT values at the same positions of the same sequence (forward), or in the
  post-PEFT model by their base values (reverse), and measure how far the emojis'
  log-probability moves across the post - base gap.
* **Controls**: the same intervention on ``k`` random neurons of the same layer, each drawn
  from the neurons nearest a candidate in the size of the intervention
  (:func:`matched_draws`; neurons without size peers, :func:`unmatched`, are left out and
  reported alone), many draws; the candidates' effect is placed in that distribution (an
  empirical two-sided p-value) and every mean effect carries a bootstrap interval over prompts.

The emoji metric per prompt is ``log P(any candidate emoji)``: the log of the summed exact
probabilities of the trait's emojis (each teacher-forced over all its tokens).

This module holds the plumbing (hooks, patches, the cached last-layer scorer); the experiments
themselves are :mod:`interp.experiments`, their typed results :mod:`interp.results`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.hooks import DEFAULT_SITE, edit_site, final_norm, n_layers, resolve_site, unembed
from interp.tracing import continuation_passes, score_continuations
from text2emoji.core.presets import BATCH_SIZE


@dataclass
class Patch:
    """What the intervention hook writes: fixed values ``[k]`` (ablation) or, for patching,
    per-row values ``[batch, pos, k]`` set before each forward pass."""

    neurons: torch.Tensor
    values: torch.Tensor | None = None  # [k] broadcast over batch and positions
    per_row: torch.Tensor | None = None  # [batch, pos, k], aligned with the padded batch


@runtime_checkable
class Scorer(Protocol):
    """What the ablation experiments ask of a scorer of ``(prompt, emoji)`` pairs: the neurons'
    values at the scored positions, and the pairs' log-probs with a :class:`Patch` written (where
    ``exact``). Besides ``activations`` and ``ablated`` it has ``n_pairs``, ``applicable`` and
    ``exact``, and ``reference`` (the intact log-probs) where ``applicable``:
    :class:`LastLayerScorer` here, :class:`interp.remote_probe.RemoteScorer` for a model
    measured elsewhere."""

    def activations(self) -> Tensor: ...

    def ablated(self, patch: Patch) -> np.ndarray: ...


def _neuron_site(model: Any, site: str) -> str:
    """``site`` itself, checked to be an input-read site such as ``mlp.hook_post``."""
    if resolve_site(model, site).read != "input":
        raise ValueError(f"interventions write neuron activations ({site} is not an input site)")
    return site


@contextlib.contextmanager
def intervention(model: Any, patch: Patch, site: str = DEFAULT_SITE) -> Iterator[Patch]:
    """Overwrite ``patch.neurons`` at ``site`` (an input-read site such as ``mlp.hook_post``)
    in every forward pass inside the block, generation steps included."""

    def edit(x: Float[Tensor, "batch pos d"]) -> Float[Tensor, "batch pos d"]:
        x = x.clone()
        idx = patch.neurons.to(x.device)
        if patch.per_row is not None:
            x[..., idx] = patch.per_row.to(x.device, x.dtype)[:, -x.shape[1]:]
        else:
            x[..., idx] = patch.values.to(x.device, x.dtype)  # type: ignore[union-attr]
        return x

    with edit_site(model, _neuron_site(model, site), edit):
        yield patch


@contextlib.contextmanager
def row_ablation(
    model: Any, site: str = DEFAULT_SITE
) -> Iterator[Callable[[Bool[Tensor, "batch d"], Float[Tensor, "batch d"]], None]]:
    """A hook at ``site`` that ablates each row of a batch its own way; yields ``set(mask,
    fill)`` (both ``[batch, d]``): from then on, row ``r``'s neurons where ``mask[r]`` take
    ``fill[r]``, at every position, in every forward pass (generation steps included)."""
    now: dict[str, Tensor] = {}

    def set_rows(mask: Bool[Tensor, "batch d"], fill: Float[Tensor, "batch d"]) -> None:
        now["mask"], now["fill"] = mask, fill

    def edit(x: Float[Tensor, "batch pos d"]) -> Float[Tensor, "batch pos d"]:
        mask, fill = now["mask"].to(x.device)[:, None], now["fill"].to(x.device, x.dtype)[:, None]
        if mask.shape[0] != x.shape[0]:
            raise ValueError(f"row ablation set for {mask.shape[0]} rows, batch has {x.shape[0]}")
        return torch.where(mask, fill, x)

    with edit_site(model, _neuron_site(model, site), edit):
        yield set_rows


def ablation_patch(neurons: Sequence[int], mode: str, means: Float[np.ndarray, "d_mlp"] | None = None) -> Patch:  # noqa: F821
    idx = torch.as_tensor(list(neurons), dtype=torch.long)
    if mode == "zero":
        return Patch(idx, torch.zeros(len(idx)))
    if mode == "mean":
        if means is None:
            raise ValueError("mean ablation needs each neuron's mean activation")
        return Patch(idx, torch.as_tensor(np.asarray(means)[idx.numpy()], dtype=torch.float32))
    raise ValueError(f"ablation mode must be 'zero' or 'mean', not {mode!r}")


def any_emoji_logprob(lp: Float[np.ndarray, "prompts emojis"]) -> Float[np.ndarray, "prompts"]:  # noqa: F821
    """Per prompt: log P(any of the emojis) from ``[prompts, emojis]`` log-probabilities.

    >>> float(np.round(any_emoji_logprob(np.log([[0.1, 0.2]]))[0], 6)) == float(np.round(np.log(0.3), 6))
    True
    """
    m = lp.max(1, keepdims=True)
    return (m + np.log(np.exp(lp - m).sum(1, keepdims=True)))[:, 0]


def random_draws(d: int, k: int, exclude: Sequence[int], n: int, seed: int) -> list[list[int]]:
    """``n`` sets of ``k`` distinct neurons from ``range(d)`` minus ``exclude`` (seeded)."""
    pool = np.setdiff1d(np.arange(d), np.asarray(list(exclude), dtype=int))
    if n > 0 and len(pool) < k:
        raise ValueError(f"cannot draw {k} random neurons from {len(pool)}")
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(pool, size=k, replace=False).tolist()) for _ in range(n)]


class LastLayerScorer:
    """Exact continuation log-probs under interventions on the last layer's neurons, without
    running the model again for each intervention.

    Nothing before the last layer's ``down_proj`` depends on its input, so one forward pass
    caches, at the positions that predict continuation tokens, the neuron activations ``x`` and
    the residual stream before the MLP's output; an intervention then costs ``down_proj``, the
    final norm and the unembedding on those positions only. The cache checks itself: rebuilt
    from its parts, the log-probs must equal the full forward pass's (``exact``); where an
    architecture adds something after the MLP (Gemma2's post-feed-forward norm, logit
    soft-capping), ``exact`` is False and callers run full forward passes instead.

    Where the final norm is an RMSNorm (``g ⊙ u / rms(u)``, Llama's ``g`` or Gemma's ``1 + w``)
    and the unembedding is linear, an intervention on ``k`` neurons costs even less (``lowrank``):
    with ``u`` the residual after the MLP, ``Δu = δ D_k`` (``δ`` the neurons' change, ``D_k`` what
    they write per unit, read off ``down_proj`` itself so LoRA and nf4 count) and ``Z`` the
    cached logits, the new logits are ``Z · rms(u)/rms(u+Δu) + W_U(g ⊙ D_k) δ / rms(u+Δu)``:
    no vocabulary projection of every position per draw. It is used only where it reproduces
    the direct rebuild (within 1e-4, as the cache itself must) on an intervention of the top neurons.
    """

    def __init__(self, model: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                 pad_id: int = 0, batch_size: int = BATCH_SIZE, site: str = DEFAULT_SITE):
        hp = resolve_site(model, site)
        last = n_layers(model) - 1
        self.model, self.n_pairs = model, len(pairs)
        self.applicable = hp.read == "input" and hp.name == f"blocks.{last}.mlp.hook_post"
        self.exact = False
        self._read = {"pairs": pairs, "pad_id": pad_id, "batch_size": batch_size, "site": site}
        if not self.applicable:
            return
        self.down = hp.module
        self.norm = final_norm(model)
        self.unembed = unembed(model)
        sites = [site, f"blocks.{last}.hook_mlp_out", f"blocks.{last}.hook_resid_post"]
        xs, rs, us, ls, ts, owner, ref = [], [], [], [], [], [], np.zeros(len(pairs))
        history: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        same: list[int] = []  # per row: the first row with the same token history (hence the same values)
        rows = 0
        for i, logits, a in continuation_passes(model, pairs, pad_id=pad_id, batch_size=batch_size, sites=sites):
            prompt, cont = tuple(pairs[i][0]), tuple(pairs[i][1])
            for j in range(len(cont)):
                same.append(history.setdefault((prompt, cont[:j]), rows + j))
            rows += len(cont)
            x, mlp_out, resid = (a[n] for n in (hp.name, f"blocks.{last}.hook_mlp_out", f"blocks.{last}.hook_resid_post"))
            tgt = torch.tensor(list(pairs[i][1]), device=logits.device)
            xs.append(x)
            rs.append(resid - mlp_out)
            us.append(resid)
            ls.append(logits)
            ts.append(tgt)
            owner += [i] * len(tgt)
            ref[i] = float(torch.log_softmax(logits, -1).gather(-1, tgt[:, None]).sum())
        self.x = torch.cat(xs)
        self.resid_mid = torch.cat(rs)
        self.targets = torch.cat(ts)
        self.owner = torch.tensor(owner, device=self.x.device)
        # rows that share their token history (every emoji's first row after one prompt; emojis
        # with a common first token) are computed once by the low-rank update
        first, self.unique = np.unique(np.asarray(same), return_inverse=True)
        self.first = torch.as_tensor(first, device=self.x.device)
        self.unique = torch.as_tensor(self.unique, device=self.x.device)
        self.reference = ref
        self.lowrank: dict[str, Any] | None = None
        self.exact = bool(np.allclose(self.totals(), ref, atol=1e-4, rtol=1e-5)) and self._check(pairs[0], pad_id, site)
        if self.exact:
            self.lowrank = self._lowrank_setup(torch.cat(us), torch.cat(ls))

    def activations(self) -> Float[Tensor, "rows d"]:
        """The neurons' values at the scored positions (what matching and mean ablation read):
        the cache's own where it applies, else read once by :func:`scored_activations`, from the
        model in the state it is in at that first call (the scorer's, as its callers keep it)."""
        if not hasattr(self, "x"):
            read = self._read
            self.x = scored_activations(self.model, read["pairs"], pad_id=read["pad_id"], batch_size=read["batch_size"],
                                        site=read["site"])
        return self.x

    def _probe_neurons(self) -> torch.Tensor:
        """The 8 neurons most active on the first pair: what the self-checks change."""
        return torch.argsort(self.x[self.owner == 0].abs().amax(0), descending=True)[:8]

    def _per_pair(self, logp: torch.Tensor) -> np.ndarray:
        """Per-token log-probs summed per pair."""
        out = torch.zeros(self.n_pairs, device=logp.device, dtype=logp.dtype).index_add_(0, self.owner, logp)
        return out.cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def _lowrank_setup(self, u: torch.Tensor, logits: torch.Tensor) -> dict[str, Any] | None:
        """The pieces of the low-rank update, from the residual ``u`` after the MLP and the
        model's own ``logits`` at the cached rows (None where the final norm is no RMSNorm, or
        where the update does not reproduce the direct rebuild)."""
        w = getattr(self.norm, "weight", None)
        eps = getattr(self.norm, "variance_epsilon", getattr(self.norm, "eps", None))
        if w is None or eps is None:
            return None
        dtype = self.x.dtype
        uf = u.float()
        rms = torch.sqrt(uf.pow(2).mean(-1, keepdim=True) + eps)
        normed = self.norm(u).float()
        for g in (w.float(), 1 + w.float()):
            if torch.allclose(g * uf / rms, normed, rtol=1e-4, atol=1e-5):
                break
        else:
            return None
        from interp.neurons import neuron_output_weights

        bias = self.unembed(torch.zeros(1, u.shape[-1], dtype=dtype, device=u.device)).float()
        w_out = neuron_output_weights(self.model)  # [neurons, d]
        f = self.first
        low = {"g": g, "eps": eps, "u": uf[f], "rms": rms[f], "bias": bias, "has_bias": bool(bias.abs().max() > 0),
               "z": (logits - bias)[f], "w_out": w_out,
               # [neurons, vocab]: each neuron's unit write, normed by g and unembedded (one
               # product now instead of one skinny, memory-bound one per draw)
               "m": self.unembed((g * w_out).to(dtype)).float() - bias}
        top = self._probe_neurons()
        new = self.x[:, top].float() * 0.5 - 1.0
        ok = np.allclose(self._lowrank_totals(low, top, new), self._direct(top, new), atol=1e-4, rtol=1e-5)
        return low if ok else None

    @torch.no_grad()
    def _lowrank_totals(self, low: dict[str, Any], idx: torch.Tensor, new: torch.Tensor) -> np.ndarray:
        """Per pair log P(continuation) with neurons ``idx`` set to ``new`` ``[rows, k]`` (rows
        with one token history take one value, so each is computed once)."""
        f = self.first
        delta = new[f].float() - self.x[f][:, idx].float()  # [unique rows, k]
        d_k = low["w_out"][idx]  # [k, d]: what each neuron writes per unit
        rms2 = torch.sqrt((low["u"] + delta @ d_k).pow(2).mean(-1, keepdim=True) + low["eps"])
        logits = low["z"] * (low["rms"] / rms2)
        logits.addmm_(delta / rms2, low["m"][idx])
        if low["has_bias"]:
            logits += low["bias"]
        # log P(target) = its logit - logsumexp: no log-softmax of the whole vocabulary written
        u = self.unique
        return self._per_pair(logits[u, self.targets] - torch.logsumexp(logits, -1)[u])

    def _check(self, pair: tuple[Sequence[int], Sequence[int]], pad_id: int, site: str) -> bool:
        """Does a changed ``x`` propagate as the full model propagates it? (Rebuilding the
        unchanged log-probs alone would pass even where a norm follows the MLP.)"""
        probe = Patch(self._probe_neurons().cpu(), torch.zeros(8))
        with intervention(self.model, probe, site):
            full = score_continuations(self.model, [pair], pad_id=pad_id)[0].total
        fast = float(self.ablated(probe)[0])
        return abs(fast - full) <= 1e-4 * max(1.0, abs(full))

    @torch.no_grad()
    def totals(self, x: Float[Tensor, "rows d_mlp"] | None = None) -> Float[np.ndarray, "pairs"]:  # noqa: F821
        """Per pair: log P(continuation), with the cached activations or with ``x`` instead."""
        x = self.x if x is None else x
        h = self.norm(self.resid_mid + self.down(x))
        return self._per_pair(torch.log_softmax(self.unembed(h).float(), -1).gather(-1, self.targets[:, None])[:, 0])

    def _direct(self, idx: torch.Tensor, new: torch.Tensor) -> np.ndarray:
        """Per pair log P with neurons ``idx`` set to ``new`` ``[rows, k]``, rebuilt directly."""
        x = self.x.clone()
        x[:, idx] = new.to(x.dtype)
        return self.totals(x)

    def _set(self, idx: torch.Tensor, new: torch.Tensor) -> np.ndarray:
        if self.lowrank is not None:
            return self._lowrank_totals(self.lowrank, idx, new)
        return self._direct(idx, new)

    def ablated(self, patch: Patch) -> Float[np.ndarray, "pairs"]:  # noqa: F821
        idx = patch.neurons.to(self.x.device)
        values = patch.values.to(self.x.device, self.x.dtype)  # type: ignore[union-attr]
        return self._set(idx, values.expand(len(self.x), -1))

    def patched(self, neurons: Sequence[int], source: LastLayerScorer) -> Float[np.ndarray, "pairs"]:  # noqa: F821
        """``x`` with ``neurons`` taken from ``source`` (the same pairs, another model state)."""
        if not torch.equal(self.owner, source.owner) or not torch.equal(self.targets, source.targets):
            raise ValueError("patching needs two scorers of the same pairs")
        idx = torch.as_tensor(list(neurons), dtype=torch.long, device=self.x.device)
        return self._set(idx, source.x[:, idx])


def scored_activations(model: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int = 0,
                       batch_size: int = BATCH_SIZE, site: str = DEFAULT_SITE) -> Float[Tensor, "rows d"]:
    """The activations at ``site`` at every position that predicts a continuation token of
    ``pairs`` (the positions an intervention's effect on the emoji metric is read at), rows in
    :class:`LastLayerScorer`'s order."""
    name = resolve_site(model, site).name
    rows = [a[name].float() for _, _, a in continuation_passes(model, pairs, pad_id=pad_id, batch_size=batch_size,
                                                               sites=[site])]
    return torch.cat(rows)


def neuron_means(model: Any, tokenizer: Any, prompts: Sequence[str], emojis: Sequence[str], *, chat: bool = True,
                 site: str = DEFAULT_SITE, batch_size: int = BATCH_SIZE) -> Float[np.ndarray, "d_mlp"]:  # noqa: F821
    """Each neuron's mean activation at the positions an ablation is measured at: those that
    predict the tokens of ``emojis`` after each of ``prompts`` (mean ablation)."""
    from interp.capture import pad_id
    from interp.tracing import emoji_pairs

    pairs = emoji_pairs(tokenizer, prompts, emojis, chat=chat)
    return scored_activations(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size, site=site).mean(0).cpu().numpy()


SIZE_TOLERANCE = 1.5  # a size peer is within this factor of a neuron's size
MIN_PEERS = 5  # a neuron with fewer size peers cannot be matched


def unmatched(magnitude: Float[np.ndarray, "d"], neurons: Sequence[int], *, tol: float = SIZE_TOLERANCE,  # noqa: F821
              min_peers: int = MIN_PEERS) -> list[int]:
    """The neurons of ``neurons`` that no random set can match on size: fewer than
    ``min_peers`` other neurons of the layer lie within a factor ``tol`` of their ``magnitude``
    (the layer's few "massive" neurons). A set test cannot say whether such a neuron matters
    more than its size predicts, so the tests leave them out and report them alone.

    >>> unmatched(np.r_[np.ones(20), 80.0, 1.2], [20, 21, 3])
    [20]
    """
    mag = np.asarray(magnitude, dtype=float)
    ranked = np.sort(mag)
    m = mag[np.asarray(list(neurons), dtype=int)]
    peers = np.searchsorted(ranked, m * tol, side="right") - np.searchsorted(ranked, m / tol, side="left") - 1
    return [int(n) for n, p in zip(neurons, peers, strict=True) if p < min_peers]


def size_strata(magnitude: Float[np.ndarray, "d"], width: int = 20,  # noqa: F821
                exclude: Sequence[int] | None = None) -> list[np.ndarray]:
    """The layer's neurons in strata of ``width`` by ``magnitude``, largest first (the smallest
    stratum takes the remainder), fixed before any candidate is seen; ``exclude`` (default: the
    neurons without size peers, :func:`unmatched`) belongs to none.

    >>> [s.tolist() for s in size_strata(np.arange(7.0), width=3, exclude=[])]
    [[6, 5, 4], [3, 2, 1, 0]]
    """
    mag = np.asarray(magnitude, dtype=float)
    if exclude is None:
        exclude = unmatched(mag, range(len(mag)))
    order = np.argsort(-mag, kind="stable")
    order = order[~np.isin(order, np.asarray(list(exclude), dtype=int))]
    n = max(1, len(order) // width)
    return [order[i * width:(i + 1) * width] if i < n - 1 else order[i * width:] for i in range(n)]


def matched_draws(magnitude: Float[np.ndarray, "d"], match: Sequence[int], n: int, seed: int, *,  # noqa: F821
                  exclude: Sequence[int] | None = None, width: int = 20) -> list[list[int]]:
    """``n`` random sets stratified on ``magnitude``: for each neuron of ``match``, one neuron
    drawn at random from its stratum (:func:`size_strata`, ``width`` neurons of similar size,
    itself included), distinct within a set. The strata are fixed before the candidates are
    seen, so under the null that each candidate is a draw from its stratum the candidate set is
    exchangeable with the random sets and the test is exact. ``exclude`` (default: the layer's
    neurons without size peers) is in no stratum; callers leave such neurons out of ``match``.

    >>> mag = np.arange(1.0, 101.0)
    >>> sets = matched_draws(mag, [99, 98], n=50, seed=0, width=6, exclude=[])
    >>> sorted({x for s in sets for x in s}) == list(range(94, 100)), all(len(set(s)) == 2 for s in sets)
    (True, True)
    """
    mag = np.asarray(magnitude, dtype=float)
    match = [int(m) for m in match]
    if not match or n <= 0:
        return []
    strata = size_strata(mag, width, exclude)
    where = {int(x): i for i, s in enumerate(strata) for x in s}
    if missing := [m for m in match if m not in where]:
        raise ValueError(f"neurons {missing} are in no size stratum (without size peers, or excluded)")
    windows = [strata[where[m]] for m in match]
    for w in windows:
        if sum(where[m] == where[int(w[0])] for m in match) > len(w):
            raise ValueError(f"more candidates than neurons in a size stratum of {len(w)}")
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n):
        chosen: set[int] = set()
        for w in windows:
            free = [int(x) for x in w if int(x) not in chosen]
            chosen.add(free[rng.integers(len(free))])
        sets.append(sorted(chosen))
    return sets
