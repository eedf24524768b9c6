"""The ``neurons`` analysis as a library call: last-layer neuron activations pre vs post PEFT on
a probe suite, per trait: paired statistics and top tables, family-wise counts, emoji
selectivity, direct logit attribution (DLA) and the overlap of the traits' top neurons.

>>> res = analyse_neurons(peft_model, tokenizer, load_probe_suite(), ["extraversion"])  # doctest: +SKIP
>>> res.traits["extraversion"].n_fwer_05, res.traits["extraversion"].by_mean[0]["neuron"]  # doctest: +SKIP

``res.to_dict()`` holds what the ``neurons`` stage writes, file by file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from interp.hooks import DEFAULT_SITE
from interp.neurons import (
    NeuronDiff,
    Selectivity,
    emoji_selectivity,
    neuron_diff,
    neuron_token_dla,
    overlap,
    top_table,
)
from interp.probes import ProbeSuite
from text2emoji.core.presets import BATCH_SIZE


@dataclass(frozen=True)
class NeuronDLA:
    """Weight-based DLA (:func:`interp.neurons.neuron_token_dla`) of one trait's top neurons
    onto the first token of each of the trait's emojis, with and without its adapter."""

    emojis: list[str]
    first_token_ids: list[int]
    top_neurons: list[int]
    post: np.ndarray  # [d_mlp, emojis]: every neuron, adapter on
    pre: np.ndarray  # [d_mlp, emojis]: adapter off

    def to_dict(self) -> dict[str, Any]:
        """``dla.json``'s entry: the top neurons' rows, and the layer's mean |DLA| post."""
        idx = self.top_neurons
        return {"emojis": self.emojis, "first_token_ids": self.first_token_ids, "top_neurons": idx,
                "post": self.post[idx].tolist(), "pre": self.pre[idx].tolist(),
                "layer_mean_abs_post": np.abs(self.post).mean(0).tolist()}


@dataclass(frozen=True)
class TraitNeurons:
    """One trait's neurons: ``post - pre`` statistics, the top-``k`` tables by mean increase
    (with emoji selectivity pre/post and DLA post per row) and by d_z, and its DLA."""

    trait: str
    k: int
    diff: NeuronDiff
    by_mean: list[dict[str, Any]]
    by_effect: list[dict[str, Any]]
    selectivity_post: Selectivity
    dla: NeuronDLA

    @property
    def top_neurons(self) -> list[int]:
        return [r["neuron"] for r in self.by_mean]

    @property
    def n_fwer_05(self) -> int:
        """Neurons that change with family-wise p < 0.05."""
        return int((self.diff.p_fwer < 0.05).sum())

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """``top_neurons.json``'s entry."""
        return {"by_mean": self.by_mean, "by_effect": self.by_effect}

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s entry for the trait."""
        top, d = self.by_mean[0], self.diff
        sel_top = [int(x) for x in self.selectivity_post.rank(self.k)]
        return {
            "top_neuron": top["neuron"], "top_mean_increase": top["mean_increase"],
            "top_ci": [top["ci_lo"], top["ci_hi"]], "top_p_fwer": top["p_fwer"],
            "n_neurons_fwer_05": self.n_fwer_05, "n_neurons": int(d.mean.shape[0]),
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
    pairs: list[tuple[int, int]]  # (emoji variant, emoji-free) prompt indices
    pre: np.ndarray  # [prompts, d_mlp], adapters off
    post: dict[str, np.ndarray]  # trait -> [prompts, d_mlp]
    selectivity_pre: Selectivity
    traits: dict[str, TraitNeurons]

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)

    def overlap(self) -> dict[str, Any]:
        """Jaccard overlap of the traits' top-``k`` sets (``overlap.json``)."""
        return overlap({t: r.top_neurons for t, r in self.traits.items()})

    def summary(self) -> dict[str, Any]:
        return {"traits": {t: r.summary() for t, r in self.traits.items()}, "n_prompts": self.n_prompts,
                "site": self.site, "overlap": self.overlap()}

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


def trait_dla(model: Any, tokenizer: Any, trait: str, emojis: Sequence[str], top: Sequence[int]) -> NeuronDLA:
    """DLA of the last layer's neurons onto the first token of each emoji, with ``trait``'s
    adapter (left active) and without."""
    from interp.models import adapter_disabled
    from interp.tracing import emoji_token_ids

    first_tokens = [emoji_token_ids(tokenizer, e)[0] for e in emojis]
    model.set_adapter(trait)
    w_post = neuron_token_dla(model, first_tokens).cpu().numpy()
    with adapter_disabled(model):
        w_pre = neuron_token_dla(model, first_tokens).cpu().numpy()
    return NeuronDLA(list(emojis), first_tokens, list(top), w_post, w_pre)


def trait_neurons(
    trait: str, pre: Float[np.ndarray, "prompts d_mlp"], post: Float[np.ndarray, "prompts d_mlp"], selectivity_pre: Selectivity, selectivity_post: Selectivity,
    dla: Callable[[list[int]], NeuronDLA], *, k: int, n_perm: int, n_boot: int, seed: int,
) -> TraitNeurons:
    """Paired statistics of ``post - pre``, the top-``k`` tables, and ``dla(top neurons)``
    joined onto the by-mean rows with each row's selectivity pre and post."""
    d = neuron_diff(pre, post, n_perm=n_perm, seed=seed)
    by_mean = top_table(d, k, "mean", n_boot, seed)
    by_effect = top_table(d, k, "effect", n_boot, seed)
    w = dla([r["neuron"] for r in by_mean])
    for r in by_mean:
        n = r["neuron"]
        r["selectivity_pre"] = float(selectivity_pre.effect[n])
        r["selectivity_post"] = float(selectivity_post.effect[n])
        r["dla_post"] = {e: float(w.post[n, j]) for j, e in enumerate(w.emojis)}
    return TraitNeurons(trait, k, d, by_mean, by_effect, selectivity_post, w)


def analyse_neurons(
    model: Any, tokenizer: Any, suite: ProbeSuite, traits: Sequence[str], *,
    site: str = DEFAULT_SITE, k: int = 20, n_perm: int = 5000, n_boot: int = 2000, seed: int = 0,
    batch_size: int = BATCH_SIZE, backend: str = "torch", acts_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> NeuronsResult:
    """The ``neurons`` analysis of ``traits`` on ``suite``'s prompts. ``model`` is a PEFT model
    holding one adapter per trait, named by trait (:func:`interp.behaviour.evaluate.load_adapters`);
    pre = the same model with its adapters off. ``acts_dir``: where to save the activations."""
    pre, posts = capture_pre_post(model, tokenizer, suite.texts, traits, site=site, batch_size=batch_size,
                                  backend=backend, acts_dir=acts_dir, progress=progress)
    pairs = suite.pairs()
    sel_pre = emoji_selectivity(pre, pairs)
    per_trait = {}
    for t in traits:
        def dla(top: list[int], t: str = t) -> NeuronDLA:
            return trait_dla(model, tokenizer, t, suite.trait_emojis[t], top)

        per_trait[t] = trait_neurons(t, pre, posts[t], sel_pre, emoji_selectivity(posts[t], pairs), dla,
                                     k=k, n_perm=n_perm, n_boot=n_boot, seed=seed)
    return NeuronsResult(site, k, n_perm, [p.id for p in suite.prompts], [tuple(p) for p in pairs],
                         pre, posts, sel_pre, per_trait)
