"""The ``trace`` analysis as a library call: each trait's emoji probability pre vs post PEFT on
a probe suite's prompts, and the logit lens of its emojis over layers.

>>> res = trace_emojis(peft_model, tokenizer, load_probe_suite(), ["extraversion"])  # doctest: +SKIP
>>> res.traits["extraversion"].mean_change, res.traits["extraversion"].ci  # doctest: +SKIP

Inference is over the suite's clusters (:meth:`interp.probes.ProbeSuite.clusters`): the
interval of the mean change of log P(any emoji) resamples whole clusters, and its two-sided
p flips the sign of whole clusters (:func:`interp.neurons.sign_flip_test`, as for neurons).

``res.to_dict()`` is the stage's ``trace.json``, ``res.summary()`` its ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

from interp.intervene import any_emoji_logprob
from interp.neurons import bootstrap_mean, sign_flip_test
from interp.probes import ProbeSuite
from text2emoji.core.presets import BATCH_SIZE

VARIANTS = ("no_space", "leading_space")


@dataclass(frozen=True)
class TraitTrace:
    """One trait's emojis pre and post: exact log-probs as the answer's first tokens
    (``[prompts, emojis]`` per variant: no leading space, leading space), log P(any of them)
    per prompt, and log P(any lens emoji) per prompt and layer (logit lens)."""

    emojis: list[str]
    lens_emojis: list[str]
    logprob_pre: dict[str, np.ndarray]
    logprob_post: dict[str, np.ndarray]
    any_emoji_pre: np.ndarray  # [prompts]
    any_emoji_post: np.ndarray  # [prompts]
    lens_pre: np.ndarray  # [prompts, layers]
    lens_post: np.ndarray  # [prompts, layers]
    ci: tuple[float, float]  # 95% cluster-bootstrap interval of the mean change of any_emoji
    p: float  # two-sided cluster sign-flip p of the mean change of any_emoji
    n_clusters: int

    @property
    def mean_change(self) -> float:
        return float((self.any_emoji_post - self.any_emoji_pre).mean())

    def to_dict(self) -> dict[str, Any]:
        """``trace.json``'s entry (logit lens: mean over prompts)."""
        return {
            "emojis": self.emojis,
            "logprob_pre": {k: v.tolist() for k, v in self.logprob_pre.items()},
            "logprob_post": {k: v.tolist() for k, v in self.logprob_post.items()},
            "any_emoji_pre": self.any_emoji_pre.tolist(), "any_emoji_post": self.any_emoji_post.tolist(),
            "logit_lens_emojis": self.lens_emojis,
            "logit_lens_pre": self.lens_pre.mean(0).tolist(), "logit_lens_post": self.lens_post.mean(0).tolist(),
        }

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s entry."""
        pre, post = self.any_emoji_pre, self.any_emoji_post
        pre_ns, post_ns = self.logprob_pre["no_space"], self.logprob_post["no_space"]
        return {
            "emojis": self.emojis,
            "mean_logprob_any_pre": float(pre.mean()), "mean_logprob_any_post": float(post.mean()),
            "mean_change": self.mean_change, "ci": [self.ci[0], self.ci[1]], "p": self.p,
            "n_prompts_up": int((post > pre).sum()), "n_prompts": len(pre), "n_clusters": self.n_clusters,
            "per_emoji_mean_change": {e: float((post_ns[:, j] - pre_ns[:, j]).mean()) for j, e in enumerate(self.emojis)},
            "lens_peak_layer_post": int(np.argmax(self.lens_post.mean(0))),
        }


@dataclass(frozen=True)
class TraceResult:
    """:func:`trace_emojis`: every trait's :class:`TraitTrace` on the same prompts."""

    prompt_ids: list[str]
    traits: dict[str, TraitTrace]

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompt_ids, "traits": {t: r.to_dict() for t, r in self.traits.items()}}

    def summary(self) -> dict[str, Any]:
        """Each trait's summary, with ``p_holm``: Holm over the traits' p."""
        from interp.results import holm

        out = {t: r.summary() for t, r in self.traits.items()}
        for s, q in zip(out.values(), holm([s["p"] for s in out.values()]), strict=True):
            s["p_holm"] = q
        return out


def any_lens(lens: Float[np.ndarray, "prompts emojis layers"]) -> Float[np.ndarray, "prompts layers"]:
    """log P(any of the lens emojis) per prompt and layer, from ``[prompts, emojis, layers]``."""
    m = lens.max(1, keepdims=True)
    return (m + np.log(np.exp(lens - m).sum(1, keepdims=True)))[:, 0]


Measure = Callable[[str | None, list[str], list[str]], dict[str, np.ndarray]]


def _measure(model: Any, tokenizer: Any, texts: Sequence[str], emojis: list[str], lens_emojis: list[str],
             batch_size: int) -> dict[str, np.ndarray]:
    """Per variant ``[prompts, emojis]`` log-probs and the lens ``[prompts, lens emojis, layers]``."""
    from interp.tracing import emoji_trace

    return emoji_trace(model, tokenizer, texts, emojis, lens_emojis=lens_emojis, chat=True, batch_size=batch_size)


def trace_emojis(
    model: Any, tokenizer: Any, suite: ProbeSuite, traits: Sequence[str], *, lens_emojis: int = 1,
    batch_size: int = BATCH_SIZE, n_boot: int = 2000, n_perm: int = 10000, seed: int = 0,
    progress: Callable[[str], None] | None = None, measure: Measure | None = None,
) -> TraceResult:
    """Each trait's emojis pre vs post on ``suite``'s prompts (chat template). ``model`` is a
    PEFT model holding one adapter per trait, named by trait; the logit lens decodes each
    trait's first ``lens_emojis`` emojis. The base model runs once for every trait's emojis
    (without its adapter nothing depends on the trait). The change's interval (``n_boot``
    resamples) and p (``n_perm`` sign flips) are over the suite's clusters. ``progress(note)``
    after each pass. ``measure(adapter, emojis, lens emojis)``: how the prompts are measured
    with a trait's adapter (None: the base), as :func:`interp.tracing.emoji_trace` returns it
    (default: ``model`` with the adapter toggled; :func:`interp.remote_probe.emoji_trace_nnsight`
    runs it elsewhere)."""
    from interp.models import adapter_disabled

    texts = suite.texts
    if measure is None:
        def measure(adapter: str | None, emojis: list[str], lens: list[str]) -> dict[str, np.ndarray]:
            if adapter is None:
                with adapter_disabled(model):
                    return _measure(model, tokenizer, texts, emojis, lens, batch_size)
            model.set_adapter(adapter)
            return _measure(model, tokenizer, texts, emojis, lens, batch_size)
    clusters = suite.clusters()
    every = list(dict.fromkeys(e for t in traits for e in suite.trait_emojis[t]))
    every_lens = list(dict.fromkeys(e for t in traits for e in suite.trait_emojis[t][:lens_emojis]))
    base = measure(None, every, every_lens)
    base_lp, base_lens = {k: base[k] for k in VARIANTS}, base["lens"]
    if progress:
        progress("base model")
    out = {}
    for t in traits:
        emojis = suite.trait_emojis[t]
        lens = emojis[:lens_emojis]
        cols, lens_cols = [every.index(e) for e in emojis], [every_lens.index(e) for e in lens]
        pre_lp = {k: v[:, cols] for k, v in base_lp.items()}
        post = measure(t, emojis, lens)
        post_lp, post_lens = {k: post[k] for k in VARIANTS}, post["lens"]
        any_pre = any_emoji_logprob(pre_lp["no_space"])
        any_post = any_emoji_logprob(post_lp["no_space"])
        change = (any_post - any_pre)[:, None]
        lo, hi = bootstrap_mean(change, n_boot, seed, clusters=clusters)
        test = sign_flip_test(change, clusters, n_perm, seed)
        out[t] = TraitTrace(emojis, lens, pre_lp, post_lp, any_pre, any_post, any_lens(base_lens[:, lens_cols]),
                            any_lens(post_lens), (float(lo[0]), float(hi[0])), float(test.p_mean[0]), test.n_clusters)
        if progress:
            progress(t)
    return TraceResult([p.id for p in suite.prompts], out)
