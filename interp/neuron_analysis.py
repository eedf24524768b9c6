"""The ``neurons`` analysis as a library call: last-layer neuron activations pre vs post PEFT on
a probe suite, per trait: paired statistics and top tables, family-wise counts, emoji
selectivity, direct logit attribution (DLA) of the change and the overlap of the traits' top
neurons. Inference is over the suite's clusters (:meth:`interp.probes.ProbeSuite.clusters`):
whole clusters are sign-flipped and resampled.

Selection vs estimation: ``by_mean`` and ``by_effect`` select neurons on the same prompts
whose statistics they report (interval, p, d_z share data with the selection);
``by_mean_holdout`` selects on half of the clusters and estimates on the other half
(:func:`interp.neurons.holdout_table`). The ``ablate`` and ``patch`` stages take their
candidates from ``by_mean`` (all prompts) but measure them on held-out test questions, so
their estimates are already independent of the selection.

>>> res = analyse_neurons(peft_model, tokenizer, load_probe_suite(), ["extraversion"])  # doctest: +SKIP
>>> res.traits["extraversion"].n_fwer_05, res.traits["extraversion"].by_mean[0]["neuron"]  # doctest: +SKIP

``res.to_dict()`` holds what the ``neurons`` stage writes, file by file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.hooks import DEFAULT_SITE
from interp.neurons import (
    NeuronDiff,
    Selectivity,
    emoji_selectivity,
    holdout_table,
    neuron_diff,
    overlap,
    top_table,
)
from interp.probes import ProbeSuite
from text2emoji.core.presets import BATCH_SIZE


@dataclass(frozen=True)
class NeuronDLA:
    """Direct logit attribution of the *change* of one trait's last-layer neurons onto each of
    its emojis (:func:`dla_change`): ``change[n, e]`` = mean over probe prompts of
    Σ_j Δact_n(pos_j) · ((W_out[n] ⊙ γ) · W_U[tok_j]) / rms(resid_final(pos_j)) over the emoji's
    teacher-forced tokens ``tok_j`` (``pos_j``: the position predicting it), Δact = post − pre,
    weights and rms of the post model: the direct effect of neuron n's change on the sum of
    the emoji tokens' logits, with the final norm's scale frozen at the post residual. (The
    weight-only ``(W_out ⊙ γ) · W_U`` to an emoji's first token is not stored: most emojis
    share their first, UTF-8 prefix token, so it was the same number for every emoji.)"""

    emojis: list[str]
    token_ids: list[list[int]]
    top_neurons: list[int]
    change: np.ndarray  # [d_mlp, emojis]

    def to_dict(self) -> dict[str, Any]:
        """``dla.json``'s entry: the top neurons' rows, and the layer's mean |DLA of the change|."""
        idx = self.top_neurons
        return {"emojis": self.emojis, "token_ids": self.token_ids, "top_neurons": idx,
                "dla_change": self.change[idx].tolist(),
                "layer_mean_abs_dla_change": np.abs(self.change).mean(0).tolist()}


@dataclass(frozen=True)
class TraitNeurons:
    """One trait's neurons: ``post - pre`` statistics, the top-``k`` tables by mean increase
    (with emoji selectivity pre/post and the DLA of the change per row) and by d_z, the
    select-on-half / estimate-on-the-other-half table, and its DLA.

    ``by_mean`` and ``by_effect`` rank and estimate on all prompts: their intervals and p share
    data with the selection. ``by_mean_holdout``'s ``mean_increase_holdout``, ``holdout_ci_*``
    and ``p_holdout`` come from clusters the ranking never saw."""

    trait: str
    k: int
    diff: NeuronDiff
    by_mean: list[dict[str, Any]]
    by_effect: list[dict[str, Any]]
    by_mean_holdout: list[dict[str, Any]]
    selectivity_post: Selectivity
    dla: NeuronDLA

    @property
    def top_neurons(self) -> list[int]:
        return [r["neuron"] for r in self.by_mean]

    @property
    def n_fwer_05(self) -> int:
        """Neurons that change (two-sided) with family-wise (max-|t|, cluster-level) p < 0.05."""
        return int((self.diff.p_fwer < 0.05).sum())

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """``top_neurons.json``'s entry."""
        return {"by_mean": self.by_mean, "by_effect": self.by_effect, "by_mean_holdout": self.by_mean_holdout}

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s entry for the trait."""
        top, d, hold = self.by_mean[0], self.diff, self.by_mean_holdout
        sel_top = [int(x) for x in self.selectivity_post.rank(self.k)]
        return {
            "top_neuron": top["neuron"], "top_mean_increase": top["mean_increase"],
            "top_ci": [top["ci_lo"], top["ci_hi"]], "top_p_fwer": top["p_fwer"],
            "n_neurons_fwer_05": self.n_fwer_05, "n_neurons": int(d.mean.shape[0]),
            "n_clusters": d.n_clusters, "n_prompts": int(d.delta.shape[0]),
            # selected on half of the clusters, estimated on the other half
            "holdout_top_neuron": hold[0]["neuron"], "holdout_top_mean_increase": hold[0]["mean_increase_holdout"],
            "holdout_top_ci": [hold[0]["holdout_ci_lo"], hold[0]["holdout_ci_hi"]],
            "n_holdout_ci_above_0": sum(r["holdout_ci_lo"] > 0 for r in hold),
            "n_clusters_select": hold[0]["n_clusters_select"], "n_clusters_holdout": hold[0]["n_clusters_holdout"],
            "mean_abs_change": float(np.abs(d.mean).mean()),
            # does the layer's emoji selectivity concentrate in the neurons the adapter raised?
            "top_k_also_emoji_selective": len(set(sel_top) & set(self.top_neurons)),
            "top_emoji_selective_post": sel_top,
        }


@dataclass(frozen=True)
class NeuronsResult:
    """:func:`analyse_neurons`: every trait's :class:`TraitNeurons`, the shared activations and
    selectivity, and the overlap of the traits' top neurons."""

    site: str
    k: int
    n_perm: int
    prompt_ids: list[str]
    clusters: list[str]  # each prompt's cluster (the unit of inference)
    pairs: list[tuple[int, int]]  # (emoji variant, emoji-free) prompt indices
    pre: np.ndarray  # [prompts, d_mlp], adapters off
    post: dict[str, np.ndarray]  # trait -> [prompts, d_mlp]
    selectivity_pre: Selectivity
    traits: dict[str, TraitNeurons]

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_clusters(self) -> int:
        return len(set(self.clusters))

    def overlap(self) -> dict[str, Any]:
        """Jaccard overlap of the traits' top-``k`` sets (``overlap.json``)."""
        return overlap({t: r.top_neurons for t, r in self.traits.items()})

    def summary(self) -> dict[str, Any]:
        """Per trait its summary, with ``top_p_fwer_holm``: Holm over the traits' top-neuron
        family-wise p."""
        from interp.results import holm

        traits = {t: r.summary() for t, r in self.traits.items()}
        for s, q in zip(traits.values(), holm([s["top_p_fwer"] for s in traits.values()]), strict=True):
            s["top_p_fwer_holm"] = q
        return {"traits": traits, "n_prompts": self.n_prompts,
                "n_clusters": self.n_clusters, "site": self.site, "overlap": self.overlap()}

    def top_neurons(self) -> dict[str, Any]:
        return {t: r.tables() for t, r in self.traits.items()}

    def selectivity(self) -> dict[str, Any]:
        """``selectivity.json``: the pairs, the top-``k`` emoji-selective neurons pre, every
        neuron's selectivity pre and post, and every neuron's mean increase per trait."""
        sel = self.selectivity_pre
        return {
            "pairs": [[self.prompt_ids[e], self.prompt_ids[p]] for e, p in self.pairs],
            "top_pre": [{"neuron": int(n), "selectivity_pre_dz": float(sel.effect[n]), "mean_diff_pre": float(sel.mean[n])}
                        for n in sel.rank(self.k)],
            "effect_pre": sel.effect.tolist(),
            "effect_post": {t: r.selectivity_post.effect.tolist() for t, r in self.traits.items()},
            "mean_increase": {t: r.diff.mean.tolist() for t, r in self.traits.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        """Each JSON file of the ``neurons`` stage by name (without ``.json``)."""
        return {"summary": self.summary(), "top_neurons": self.top_neurons(), "overlap": self.overlap(),
                "dla": {t: r.dla.to_dict() for t, r in self.traits.items()}, "selectivity": self.selectivity()}


def capture_pre_post(
    model: Any, tokenizer: Any, texts: Sequence[str], traits: Sequence[str], *, site: str,
    batch_size: int = BATCH_SIZE, backend: str = "torch", acts_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Float[np.ndarray, "prompts d_mlp"], dict[str, Float[np.ndarray, "prompts d_mlp"]]]:
    """Last-token activations at ``site`` (chat template) with the adapters off (pre) and with
    each trait's adapter (post); saved as ``acts_dir/pre.npy`` and ``post_<trait>.npy`` when
    given. ``progress(note)`` after each pass."""
    from interp.capture import capture
    from interp.models import adapter_disabled

    def grab(name: str) -> np.ndarray:
        out = None if acts_dir is None else Path(acts_dir) / f"{name}.npy"
        return np.asarray(capture(model, tokenizer, list(texts), site=site, chat=True, backend=backend,
                                  batch_size=batch_size, out=out).activations)

    with adapter_disabled(model):
        pre = grab("pre")
    if progress:
        progress("pre")
    posts = {}
    for t in traits:
        model.set_adapter(t)
        posts[t] = grab(f"post_{t}")
        if progress:
            progress(t)
    return pre, posts


DLA_SITE = "blocks.-1.mlp.hook_post"
Passes = Callable[[str | None, list[str]], dict[tuple[int, str], tuple[Tensor, Tensor]]]
RESID_FINAL = "blocks.-1.hook_resid_post"  # what the final norm normalises


def emoji_passes(
    model: Any, tokenizer: Any, texts: Sequence[str], emojis: Sequence[str], *, batch_size: int = BATCH_SIZE,
) -> dict[tuple[int, str], tuple[Float[Tensor, "m d_mlp"], Float[Tensor, "m d_model"]]]:
    """For each prompt (chat template) and emoji (no leading space), teacher-forced: the last
    layer's neuron values and the final residual at the ``m`` positions that predict the
    emoji's tokens, keyed by ``(prompt index, emoji)``, as float32 on the CPU."""
    from interp.capture import pad_id
    from interp.hooks import resolve_site
    from interp.tracing import continuation_passes, emoji_pairs

    pairs = emoji_pairs(tokenizer, texts, emojis, chat=True)
    act, resid = (resolve_site(model, s).name for s in (DLA_SITE, RESID_FINAL))
    out = {}
    for i, _, acts in continuation_passes(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size,
                                          sites=[DLA_SITE, RESID_FINAL]):
        p, e = divmod(i, len(emojis))
        out[(p, emojis[e])] = (acts[act].float().cpu(), acts[resid].float().cpu())
    return out


def last_token(passes: dict[tuple[int, str], tuple[Tensor, Tensor]], n: int) -> Float[np.ndarray, "prompts d_mlp"]:
    """The last layer's neuron values at each prompt's last token, from :func:`emoji_passes`
    (the position that predicts any emoji's first token), as ``[n, d_mlp]`` float32."""
    first: dict[int, Tensor] = {}
    for (p, _), (act, _) in passes.items():
        first.setdefault(p, act[0])
    return torch.stack([first[p] for p in range(n)]).numpy().astype(np.float32)


@torch.no_grad()
def dla_change(
    model: Any, tokenizer: Any, texts: Sequence[str], emojis: Sequence[str],
    pre: dict[tuple[int, str], tuple[Tensor, Tensor]], *, batch_size: int = BATCH_SIZE,
    post: dict[tuple[int, str], tuple[Tensor, Tensor]] | None = None,
    token_weights: Callable[[list[int]], Tensor] | None = None,
) -> tuple[Float[np.ndarray, "d_mlp emojis"], list[list[int]]]:
    """DLA of the change of every last-layer neuron onto each emoji (:class:`NeuronDLA`), with
    ``model`` as post (its active adapter) and ``pre`` the base's :func:`emoji_passes` of the
    same prompts and emojis (``post``: the model's, where already run). Returns ``[d_mlp,
    emojis]`` (mean over prompts) and each emoji's token ids. It attributes the activation
    change (post - pre) through the post model's weights; an adapter on ``down_proj`` also
    changes the weights, which this leaves out. ``token_weights(tokens)``: ``[d_mlp, tokens]``
    ``(W_out ⊙ γ) · W_U[t]`` computed elsewhere (a remote model's weights are not here)."""
    from interp.hooks import final_norm
    from interp.neurons import final_norm_scale, neuron_dla_at, neuron_output_weights, unembedding
    from interp.tracing import emoji_token_ids

    toks = [emoji_token_ids(tokenizer, e) for e in emojis]
    flat = sorted({t for ts in toks for t in ts})
    if token_weights is None:
        w_out = (neuron_output_weights(model) * final_norm_scale(model)).cpu()  # [d_mlp, d_model], post weights
        w_u = unembedding(model)[flat].cpu()  # only the emojis' rows
        tok_w = {t: w_out @ w_u[r] for r, t in enumerate(flat)}  # [d_mlp] per token
    else:
        given = token_weights(flat)
        tok_w = {t: given[:, r] for r, t in enumerate(flat)}
    norm = final_norm(model)
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))
    if post is None:
        post = emoji_passes(model, tokenizer, texts, emojis, batch_size=batch_size)
    out = torch.zeros(len(tok_w[flat[0]]), len(emojis))
    for (p, e), (act_post, resid) in post.items():
        j = emojis.index(e)
        delta = act_post - pre[(p, e)][0]  # [m, d_mlp]
        for pos, t in enumerate(toks[j]):
            out[:, j] += neuron_dla_at(delta[pos], resid[pos], tok_w[t][:, None], eps=eps)[:, 0]
    return (out / len(texts)).numpy().astype(np.float64), toks


def trait_dla(
    model: Any, tokenizer: Any, texts: Sequence[str], trait: str, emojis: Sequence[str], top: Sequence[int],
    pre: dict[tuple[int, str], tuple[Tensor, Tensor]], *, batch_size: int = BATCH_SIZE,
    post: dict[tuple[int, str], tuple[Tensor, Tensor]] | None = None,
    token_weights: Callable[[list[int]], Tensor] | None = None,
) -> NeuronDLA:
    """:func:`dla_change` with ``trait``'s adapter (left active; with ``token_weights``, the
    weights come from there and ``model`` is not switched), as a :class:`NeuronDLA`."""
    if token_weights is None:
        model.set_adapter(trait)
    change, toks = dla_change(model, tokenizer, texts, list(emojis), pre, batch_size=batch_size, post=post,
                              token_weights=token_weights)
    return NeuronDLA(list(emojis), toks, list(top), change)


def trait_neurons(
    trait: str, pre: Float[np.ndarray, "prompts d_mlp"], post: Float[np.ndarray, "prompts d_mlp"], selectivity_pre: Selectivity, selectivity_post: Selectivity,
    dla: Callable[[list[int]], NeuronDLA], *, k: int, n_perm: int, n_boot: int, seed: int,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> TraitNeurons:
    """Paired statistics of ``post - pre`` over ``clusters`` (one label per prompt; ``None``:
    each prompt its own), the top-``k`` tables, the select/estimate split, and
    ``dla(top neurons)`` joined onto the by-mean rows with each row's selectivity pre and post."""
    d = neuron_diff(pre, post, n_perm=n_perm, seed=seed, clusters=clusters)
    by_mean = top_table(d, k, "mean", n_boot, seed)
    by_effect = top_table(d, k, "effect", n_boot, seed)
    holdout = holdout_table(d, k, n_boot, seed, n_perm)
    w = dla([r["neuron"] for r in by_mean])
    for r in by_mean:
        n = r["neuron"]
        r["selectivity_pre"] = float(selectivity_pre.effect[n])
        r["selectivity_post"] = float(selectivity_post.effect[n])
        r["dla_change"] = {e: float(w.change[n, j]) for j, e in enumerate(w.emojis)}
    return TraitNeurons(trait, k, d, by_mean, by_effect, holdout, selectivity_post, w)


def _saved(acts: np.ndarray, acts_dir: Path | None, name: str) -> np.ndarray:
    """``acts`` written to ``acts_dir/<name>.npy`` (atomically) where a folder is given."""
    if acts_dir is not None:
        from text2emoji.core.files import atomic_path

        Path(acts_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(acts_dir) / f"{name}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, acts)
    return acts


def analyse_neurons(
    model: Any, tokenizer: Any, suite: ProbeSuite, traits: Sequence[str], *,
    site: str = DEFAULT_SITE, k: int = 20, n_perm: int = 5000, n_boot: int = 2000, seed: int = 0,
    batch_size: int = BATCH_SIZE, backend: str = "torch", acts_dir: Path | None = None,
    progress: Callable[[str], None] | None = None, passes: Passes | None = None,
    token_weights: Callable[[str, list[int]], Tensor] | None = None,
) -> NeuronsResult:
    """The ``neurons`` analysis of ``traits`` on ``suite``'s prompts. ``model`` is a PEFT model
    holding one adapter per trait, named by trait (:func:`interp.behaviour.evaluate.load_adapters`);
    pre = the same model with its adapters off. ``acts_dir``: where to save the activations.

    With the torch backend at the DLA's own site (the default), the last-token activations are
    read off the DLA's emoji passes, whose prompt pass ends at that token
    (:func:`last_token`): one pass per model instead of two (equal to :func:`capture` in a test).

    ``passes(adapter, emojis)`` and ``token_weights(adapter, tokens)``: the model measured
    elsewhere (:func:`interp.remote_probe.emoji_passes_nnsight`,
    :func:`interp.remote_probe.dla_token_weights_nnsight`; adapter None: the base), as
    :func:`emoji_passes` and :func:`dla_change`'s weights give them; both or neither, at the
    DLA's own site."""
    from interp.hooks import resolve_site
    from interp.models import adapter_disabled

    texts = suite.texts
    elsewhere = passes is not None
    if elsewhere != (token_weights is not None):
        raise ValueError("passes and token_weights come together")
    if elsewhere and resolve_site(model, site).name != resolve_site(model, DLA_SITE).name:
        raise ValueError(f"a model measured elsewhere is read at the DLA's site {DLA_SITE}, not {site}")
    if passes is None:
        def passes(adapter: str | None, emojis: list[str]) -> dict[tuple[int, str], tuple[Tensor, Tensor]]:
            if adapter is None:
                with adapter_disabled(model):
                    return emoji_passes(model, tokenizer, texts, emojis, batch_size=batch_size)
            model.set_adapter(adapter)
            return emoji_passes(model, tokenizer, texts, emojis, batch_size=batch_size)
    # the base's neuron values and residuals at the emojis' positions, once for every trait's emojis
    every = list(dict.fromkeys(e for t in traits for e in suite.trait_emojis[t]))
    dla_pre = passes(None, every)
    dla_post: dict[str, Any] = {t: None for t in traits}
    if elsewhere or (backend == "torch" and resolve_site(model, site).name == resolve_site(model, DLA_SITE).name):
        pre = _saved(last_token(dla_pre, len(texts)), acts_dir, "pre")
        if progress:
            progress("pre")
        posts = {}
        for t in traits:
            dla_post[t] = passes(t, list(suite.trait_emojis[t]))
            posts[t] = _saved(last_token(dla_post[t], len(texts)), acts_dir, f"post_{t}")
            if progress:
                progress(t)
    else:
        pre, posts = capture_pre_post(model, tokenizer, texts, traits, site=site, batch_size=batch_size,
                                      backend=backend, acts_dir=acts_dir, progress=progress)
    pairs = suite.pairs()
    clusters = suite.clusters()
    sel_pre = emoji_selectivity(pre, pairs)
    per_trait = {}
    for t in traits:
        def dla(top: list[int], t: str = t) -> NeuronDLA:
            weights = None if token_weights is None else functools.partial(token_weights, t)
            return trait_dla(model, tokenizer, texts, t, suite.trait_emojis[t], top, dla_pre, batch_size=batch_size,
                             post=dla_post[t], token_weights=weights)

        per_trait[t] = trait_neurons(t, pre, posts[t], sel_pre, emoji_selectivity(posts[t], pairs), dla,
                                     k=k, n_perm=n_perm, n_boot=n_boot, seed=seed, clusters=clusters)
    return NeuronsResult(site, k, n_perm, [p.id for p in suite.prompts], [p.cluster for p in suite.prompts],
                         [tuple(p) for p in pairs], pre, posts, sel_pre, per_trait)
