"""Neuron-level statistics: post-minus-pre diffs, emoji selectivity, overlap, direct logit
attribution.

The design is paired: every probe prompt is run through the base model (pre) and the base +
trait adapter (post), so the unit of analysis is the per-prompt difference ``post - pre``.

Prompts are not independent: the emoji variants of one sentence form a **cluster**
(:meth:`interp.probes.ProbeSuite.clusters`), and inference treats clusters as the units.

* **Mean increase** of neuron n: the mean of its differences over prompts, with a percentile
  bootstrap interval (whole clusters resampled).
* **Standardized effect**: Cohen's d_z = mean / sd of the differences over prompts (ddof 1);
  ``t``: the t statistic of the C cluster means.
* **Cluster sign-flip permutation test**: under "the adapter changes nothing", pre and post are
  exchangeable within each unit, so each cluster's differences flip sign together
  (:func:`sign_flip_test`); ``p_perm`` is two-sided per neuron on the mean, ``p_fwer`` the
  studentised max-|t| test over the layer (family-wise).
* **Emoji selectivity**: for sentences that exist with and without an emoji, the per-pair
  difference ``act(with emoji) - act(without)``; its mean and d_z per neuron.
* **Direct logit attribution (DLA)**: a last-layer neuron writes ``W_out[n]`` into the residual
  stream; through the final norm's weight γ and the unembedding this adds
  ``act · (W_out[n] ⊙ γ) · W_U[t] / rms`` to token t's logit (rms of the final residual).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import einsum
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.hooks import DEFAULT_SITE, d_in, final_norm, n_layers, resolve_site, unembed
from interp.models import base_config


@dataclass
class NeuronDiff:
    """Per-neuron statistics of ``post - pre`` over prompts (inference over ``clusters``)."""

    delta: np.ndarray  # [prompts, d]
    pre_mean: np.ndarray  # [d]
    post_mean: np.ndarray  # [d]
    mean: np.ndarray  # [d] mean increase (over prompts)
    sd: np.ndarray  # [d] (over prompts)
    effect: np.ndarray  # [d] d_z over prompts (0 where sd == 0)
    p_perm: np.ndarray  # [d] two-sided, cluster sign-flip, on the mean
    p_fwer: np.ndarray  # [d] family-wise over the layer: studentised max-|t| over cluster means
    n_perm: int
    t: np.ndarray  # [d] t statistic of the cluster means (0 where their sd == 0)
    clusters: np.ndarray  # [prompts] cluster index of each prompt
    n_clusters: int

    def rank(self, by: str = "mean", k: int | None = None) -> Int[np.ndarray, "k"]:  # noqa: F821
        """Neuron indices, largest increase first (``by`` = ``mean`` or ``effect``)."""
        if by not in ("mean", "effect"):
            raise ValueError(f"rank by 'mean' or 'effect', not {by!r}")
        order = np.argsort(-getattr(self, by), kind="stable")
        return order if k is None else order[:k]


def _dz(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(0)
    sd = x.std(0, ddof=1) if len(x) > 1 else np.zeros_like(mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = np.where(sd > 0, mean / np.where(sd > 0, sd, 1), 0.0)
    return mean, sd, effect


def cluster_index(clusters: Sequence[Any] | np.ndarray | None, n: int) -> Int[np.ndarray, "n"]:  # noqa: F821
    """Cluster labels as indices ``0..C-1`` in order of first appearance (``None``: each row its
    own cluster).

    >>> cluster_index(["b", "b", "a", "b"], 4).tolist(), cluster_index(None, 3).tolist()
    ([0, 0, 1, 0], [0, 1, 2])
    """
    if clusters is None:
        return np.arange(n)
    labels = list(np.asarray(clusters).tolist())
    if len(labels) != n:
        raise ValueError(f"clusters has {len(labels)} labels for {n} rows")
    index: dict[Any, int] = {}
    return np.array([index.setdefault(c, len(index)) for c in labels], dtype=np.int64)


def _cluster_sums(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[C, cols]`` sums of the rows of each cluster, and ``[C]`` cluster sizes."""
    c = int(idx.max()) + 1 if len(idx) else 0
    sums = np.zeros((c, x.shape[1]))
    np.add.at(sums, idx, x)
    return sums, np.bincount(idx, minlength=c).astype(np.float64)


def _t_of_means(mbar: np.ndarray, sumsq: np.ndarray, c: int) -> np.ndarray:
    """t = mean / (sd / sqrt(C)) of C cluster means from their mean and (fixed) sum of squares
    (flipping signs leaves Σ m_c² unchanged); 0 where the sd is 0 (up to rounding)."""
    if c < 2:
        return np.zeros_like(mbar)
    var = np.maximum(sumsq - c * mbar**2, 0.0) / (c - 1)
    tiny = 1e-12 * np.maximum(sumsq / c, np.finfo(float).tiny)  # a zero sd, up to rounding
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > tiny, mbar / np.sqrt(np.where(var > tiny, var, 1.0) / c), 0.0)


@dataclass(frozen=True)
class SignFlip:
    """:func:`sign_flip_test`: per column, two-sided p of the mean, family-wise p (max-|t|)."""

    p_mean: np.ndarray  # [cols]
    p_max_t: np.ndarray  # [cols]
    t: np.ndarray  # [cols]: observed t of the cluster means
    n_clusters: int
    n_perm: int


def sign_flip_test(
    delta: Float[np.ndarray, "n cols"],
    clusters: Sequence[Any] | np.ndarray | None = None,
    n_perm: int = 2000,
    seed: int = 0,
    chunk: int = 256,
) -> SignFlip:
    """Cluster sign-flip permutation test of "every column's paired differences are centred on 0".

    Under the null, pre and post are exchangeable within each independent unit, so every
    cluster's differences change sign together: one random sign per cluster, applied to all its
    rows (``clusters=None``: each row its own cluster).

    * ``p_mean``: two-sided per column, on the mean over rows: (1 + #{perm |mean| >= |obs|}) /
      (1 + n_perm).
    * ``p_max_t``: family-wise over the columns, studentised: per permutation the t statistic
      of each column's C (flipped) cluster means, t = mean / (sd / sqrt(C)), and its max |t|
      over columns; p = (1 + #{perm max|t| >= |t_obs|}) / (1 + n_perm). Studentising puts
      quiet and loud columns on one scale, so one loud column cannot mask a quiet real effect
      (as the max |mean| would).

    Permutations run ``chunk`` at a time: memory is ``O(chunk · cols)``, not ``O(n_perm · cols)``.

    >>> x = np.array([[1.0, 0.1], [1.2, -0.1], [0.9, 0.0], [1.1, 0.2], [1.0, -0.2], [0.8, 0.1]])
    >>> r = sign_flip_test(x, [0, 0, 1, 1, 2, 3], n_perm=999)
    >>> r.n_clusters, bool(abs(r.p_mean[0] - 2 / 16) < 0.03)  # 4 clusters: p >= 2/2⁴, however many rows
    (4, True)
    """
    x = np.asarray(delta, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"delta must be [n, cols]; got shape {x.shape}")
    idx = cluster_index(clusters, len(x))
    sums, sizes = _cluster_sums(x, idx)
    c, n = len(sums), len(x)
    means = sums / sizes[:, None]  # [C, cols] cluster means
    sumsq = (means**2).sum(0)
    obs_mean = np.abs(sums.sum(0) / n)
    obs_t = _t_of_means(means.mean(0), sumsq, c)
    # ties count as at least as extreme (relative tolerance: sums in another order round apart)
    tol_m = 1e-9 * np.maximum(obs_mean, 1e-300)
    abs_t = np.abs(obs_t)
    exceed = np.zeros(x.shape[1])
    max_t = np.empty(n_perm)
    rng = np.random.default_rng(seed)
    for start in range(0, n_perm, chunk):
        m = min(chunk, n_perm - start)
        signs = rng.integers(0, 2, size=(m, c)) * 2.0 - 1.0
        exceed += (np.abs(signs @ sums) / n >= obs_mean - tol_m).sum(0)
        max_t[start:start + m] = np.abs(_t_of_means(signs @ means / c, sumsq, c)).max(1) if x.shape[1] else 0.0
    max_t.sort()
    below = np.searchsorted(max_t, abs_t * (1 - 1e-9), side="left")
    p_max_t = (1 + n_perm - below) / (1 + n_perm)
    return SignFlip((1 + exceed) / (1 + n_perm), p_max_t, obs_t, c, n_perm)


def neuron_diff(
    pre: Float[np.ndarray, "prompts d"],
    post: Float[np.ndarray, "prompts d"],
    n_perm: int = 2000,
    seed: int = 0,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> NeuronDiff:
    """Paired statistics of ``post - pre`` for every neuron (see the module docstring), with
    inference over ``clusters`` (one label per prompt; ``None``: each prompt its own cluster):
    :func:`sign_flip_test`.

    >>> pre = np.zeros((8, 3)); post = pre.copy(); post[:, 0] = 1 + 0.1 * np.arange(8)
    >>> d = neuron_diff(pre, post, n_perm=500)
    >>> int(d.rank()[0]), bool(d.p_perm[0] < 0.02), float(d.p_perm[1]), float(d.p_fwer[1])
    (0, True, 1.0, 1.0)
    >>> neuron_diff(pre, post, n_perm=100, clusters=[0, 0, 1, 1, 2, 2, 3, 3]).n_clusters
    4
    """
    pre = np.asarray(pre, dtype=np.float64)
    post = np.asarray(post, dtype=np.float64)
    if pre.shape != post.shape or pre.ndim != 2:
        raise ValueError(f"pre and post must both be [prompts, d]; got {pre.shape} and {post.shape}")
    delta = post - pre
    mean, sd, effect = _dz(delta)
    idx = cluster_index(clusters, len(delta))
    test = sign_flip_test(delta, idx, n_perm, seed)
    return NeuronDiff(delta, pre.mean(0), post.mean(0), mean, sd, effect, test.p_mean, test.p_max_t, n_perm,
                      test.t, idx, test.n_clusters)


def bootstrap_mean(
    x: Float[np.ndarray, "n cols"], n_boot: int = 2000, seed: int = 0, level: float = 0.95,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> tuple[Float[np.ndarray, "cols"], Float[np.ndarray, "cols"]]:  # noqa: F821
    """Percentile bootstrap interval of each column's mean over rows: whole clusters resampled
    with replacement (``clusters=None``: each row its own cluster), the mean taken over the
    resampled rows (the estimator of the point estimate, the mean over rows).

    >>> lo, hi = bootstrap_mean(np.arange(10.0)[:, None], n_boot=500)
    >>> bool(lo[0] < 4.5 < hi[0])
    True
    >>> lo, hi = bootstrap_mean(np.array([[1.0], [2.0], [6.0]]), clusters=["a", "a", "a"])
    >>> float(lo[0]), float(hi[0])
    (3.0, 3.0)
    """
    x = np.asarray(x, dtype=np.float64)
    idx = cluster_index(clusters, len(x))
    sums, sizes = _cluster_sums(x, idx)
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    counts = np.zeros((n_boot, len(sums)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    means = (counts @ sums) / (counts @ sizes)[:, None]  # [n_boot, cols]
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    lo, hi = np.percentile(means, q, axis=0)
    return lo, hi


def top_table(diff: NeuronDiff, k: int = 20, by: str = "mean", n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """The top-``k`` neurons by ``by``, each with its statistics and a cluster-bootstrap interval
    (``diff.clusters`` resampled). Every column uses the prompts the ranking used: the interval
    and p-values of a selected neuron share data with its selection."""
    idx = diff.rank(by, k)
    lo, hi = bootstrap_mean(diff.delta[:, idx], n_boot, seed, clusters=diff.clusters)
    return [
        {
            "rank": r + 1, "neuron": int(n), "mean_increase": float(diff.mean[n]),
            "ci_lo": float(lo[r]), "ci_hi": float(hi[r]), "effect_dz": float(diff.effect[n]), "t": float(diff.t[n]),
            "p_perm": float(diff.p_perm[n]), "p_fwer": float(diff.p_fwer[n]),
            "pre_mean": float(diff.pre_mean[n]), "post_mean": float(diff.post_mean[n]),
        }
        for r, n in enumerate(idx)
    ]


def split_clusters(n_clusters: int, seed: int = 0) -> Bool[np.ndarray, "clusters"]:  # noqa: F821
    """A seeded, deterministic half of the clusters (``True``: select on it; the others
    estimate); the selection half holds ``n_clusters // 2``.

    >>> m = split_clusters(7, seed=1)
    >>> int(m.sum()), bool((m == split_clusters(7, seed=1)).all())
    (3, True)
    """
    order = np.random.default_rng([seed, 0x5E1EC7]).permutation(n_clusters)
    mask = np.zeros(n_clusters, dtype=bool)
    mask[order[: n_clusters // 2]] = True
    return mask


def holdout_table(diff: NeuronDiff, k: int = 20, n_boot: int = 2000, seed: int = 0, n_perm: int = 2000) -> list[dict[str, Any]]:
    """Select on one half of the clusters, estimate on the other (:func:`split_clusters`).

    Neurons are ranked by their mean increase on the selection half; each of the top ``k`` gets
    ``mean_increase_holdout`` with a cluster-bootstrap interval (``holdout_ci_lo``/``_hi``) and
    a two-sided cluster sign-flip ``p_holdout`` (per neuron, uncorrected) and
    ``p_holdout_fwer`` (family-wise over the ``k``: studentised max-|t|), all from the
    held-out clusters only, so they are free of the selection. ``mean_increase_select`` (the
    selection half) and ``mean_increase`` (all prompts) share data with the selection.

    >>> rng = np.random.default_rng(0)
    >>> delta = rng.normal(0, 0.1, size=(20, 6)); delta[:, 4] += 1.0
    >>> d = neuron_diff(np.zeros_like(delta), delta, n_perm=200)
    >>> rows = holdout_table(d, k=2, n_boot=200, n_perm=200)
    >>> rows[0]["neuron"], rows[0]["holdout_ci_lo"] > 0.5, rows[0]["n_clusters_holdout"]
    (4, True, 10)
    """
    select = split_clusters(diff.n_clusters, seed)[diff.clusters]  # [prompts]
    if select.all() or not select.any():
        raise ValueError(f"a select/estimate split needs at least 2 clusters; got {diff.n_clusters}")
    sel_mean = diff.delta[select].mean(0)
    idx = np.argsort(-sel_mean, kind="stable")[:k]
    hold = diff.delta[~select][:, idx]
    hold_clusters = diff.clusters[~select]
    lo, hi = bootstrap_mean(hold, n_boot, seed, clusters=hold_clusters)
    test = sign_flip_test(hold, hold_clusters, n_perm, seed)
    n_sel = len(np.unique(diff.clusters[select]))
    return [
        {
            "rank": r + 1, "neuron": int(n), "mean_increase_select": float(sel_mean[n]),
            "mean_increase_holdout": float(hold[:, r].mean()), "holdout_ci_lo": float(lo[r]), "holdout_ci_hi": float(hi[r]),
            "p_holdout": float(test.p_mean[r]), "p_holdout_fwer": float(test.p_max_t[r]),
            "mean_increase": float(diff.mean[n]),
            "n_clusters_select": n_sel, "n_clusters_holdout": test.n_clusters,
        }
        for r, n in enumerate(idx)
    ]


@dataclass
class Selectivity:
    """Per-neuron emoji selectivity over (emoji variant, emoji-free) prompt pairs."""

    delta: np.ndarray  # [pairs, d]
    mean: np.ndarray  # [d]
    effect: np.ndarray  # [d]

    def rank(self, k: int | None = None) -> Int[np.ndarray, "k"]:  # noqa: F821
        order = np.argsort(-self.effect, kind="stable")
        return order if k is None else order[:k]


def emoji_selectivity(acts: Float[np.ndarray, "prompts d"], pairs: Sequence[tuple[int, int]]) -> Selectivity:
    """How much each neuron separates the emoji and emoji-free variants of one sentence.

    >>> a = np.array([[0.0, 1.0], [2.0, 1.0], [0.5, 1.0], [2.0, 1.0]])
    >>> s = emoji_selectivity(a, [(1, 0), (3, 2)])
    >>> s.mean.tolist(), int(s.rank()[0])
    ([1.75, 0.0], 0)
    """
    if not pairs:
        raise ValueError("emoji selectivity needs at least one (emoji, emoji-free) pair")
    acts = np.asarray(acts, dtype=np.float64)
    delta = np.stack([acts[e] - acts[p] for e, p in pairs])
    mean, _, effect = _dz(delta)
    return Selectivity(delta, mean, effect)


def overlap(top: dict[str, Sequence[int]]) -> dict[str, Any]:
    """Jaccard overlap of each pair of traits' top-neuron sets, and neurons shared by several.

    >>> o = overlap({"a": [1, 2, 3], "b": [2, 3, 4]})
    >>> o["jaccard"]["a"]["b"], o["shared"]
    (0.5, [{'neuron': 2, 'traits': ['a', 'b']}, {'neuron': 3, 'traits': ['a', 'b']}])
    """
    names = list(top)
    sets = {t: set(map(int, v)) for t, v in top.items()}
    jac = {a: {b: len(sets[a] & sets[b]) / max(1, len(sets[a] | sets[b])) for b in names} for a in names}
    counts: dict[int, list[str]] = {}
    for t in names:
        for n in sets[t]:
            counts.setdefault(n, []).append(t)
    shared = [{"neuron": n, "traits": ts} for n, ts in sorted(counts.items()) if len(ts) > 1]
    shared.sort(key=lambda r: (-len(r["traits"]), r["neuron"]))
    return {"jaccard": jac, "shared": shared}


# --- direct logit attribution ---------------------------------------------------------------


@torch.no_grad()
def neuron_output_weights(model: Any, layer: int = -1) -> Float[Tensor, "d_mlp d_model"]:
    """Row n = what neuron n of ``layer`` writes into the residual stream per unit activation.

    Read by running the layer's ``down_proj`` on the identity, so LoRA deltas and 4-bit weights
    count exactly as the model computes them (a bias, if any, is removed).
    """
    site = f"blocks.{layer}.mlp.hook_post"
    down = resolve_site(model, site).module
    p = next(model.parameters())
    d_mlp = n_neurons(model, site)
    eye = torch.eye(d_mlp, device=p.device, dtype=_compute_dtype(model))
    zero = torch.zeros(1, d_mlp, device=p.device, dtype=eye.dtype)
    return (down(eye) - down(zero)).float()


def n_neurons(model: Any, site: str = DEFAULT_SITE) -> int:
    """How many neurons an MLP ``hook_post`` site has (the input width of the MLP's output
    projection, through a LoRA wrapper)."""
    return d_in(resolve_site(model, site).module)


def _compute_dtype(model: Any) -> torch.dtype:
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.float32


@torch.no_grad()
def final_norm_scale(model: Any) -> Float[Tensor, "d_model"]:  # noqa: F821
    """γ of the final RMSNorm as the model applies it (``1 + w`` for Gemma), read by applying
    the norm to a constant vector whose rms is exactly its value."""
    norm = final_norm(model)
    d = base_config(model).get_text_config().hidden_size
    c = 1e3
    x = torch.full((1, d), c, device=next(model.parameters()).device, dtype=_compute_dtype(model))
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0)))
    return (norm(x)[0].float() * (c**2 + eps) ** 0.5 / c)


def unembedding(model: Any) -> Float[Tensor, "vocab d_model"]:
    """``W_U`` ``[vocab, d_model]`` as the unembedding stores it (``lm_head.weight``)."""
    return unembed(model).weight.float()


@torch.no_grad()
def neuron_token_dla(model: Any, token_ids: Sequence[int], layer: int = -1) -> Float[Tensor, "d_mlp tokens"]:
    """Weight-based DLA: ``(W_out[n] ⊙ γ) · W_U[t]`` for every neuron n and token t.

    Multiply by the neuron's activation and divide by the final residual's rms to get its direct
    contribution to the logit at one position (:func:`neuron_dla_at`).
    """
    if layer % n_layers(model) != n_layers(model) - 1:
        raise ValueError("direct logit attribution here is for last-layer neurons (layer -1)")
    w_out = neuron_output_weights(model, layer)
    gamma = final_norm_scale(model)
    w_u = unembedding(model)[list(token_ids)]
    return einsum(w_out * gamma, w_u, "d_mlp d_model, tokens d_model -> d_mlp tokens")


def neuron_dla_at(
    acts: Float[Tensor, "d_mlp"],  # noqa: F821
    resid_final: Float[Tensor, "d_model"],  # noqa: F821
    weights: Float[Tensor, "d_mlp tokens"],
    eps: float = 1e-6,
) -> Float[Tensor, "d_mlp tokens"]:
    """Each neuron's direct contribution to each token's logit at one position, with the final
    norm's scale frozen at ``resid_final`` (the residual stream after the last layer)."""
    rms = torch.sqrt(resid_final.float().pow(2).mean() + eps)
    return einsum(acts.float(), weights, "d_mlp, d_mlp tokens -> d_mlp tokens") / rms
