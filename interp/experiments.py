"""The causal experiments on neurons, each against random controls, each returning a typed
result (:mod:`interp.results`): ablation of the emojis' log-probability
(:func:`ablation_experiment`), ablation during generation (:func:`ablation_generation`), one
trait's ablations as the ``ablate`` stage runs them (:func:`ablate_trait`) and activation
patching (:func:`patching_experiment`). The method is described in :mod:`interp.intervene`,
which holds the hooks and the cached last-layer scorer they use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from interp.behaviour.emoji_metrics import bootstrap_emoji_metrics
from interp.behaviour.generation import DecodeSettings, generate
from interp.capture import Encoded, capture, pad_id
from interp.hooks import DEFAULT_SITE
from interp.intervene import (
    LastLayerScorer,
    Patch,
    ablation_patch,
    any_emoji_logprob,
    intervention,
    neuron_means,
    random_draws,
    row_ablation,
)
from interp.models import adapter_disabled
from interp.neurons import n_neurons
from interp.results import (
    AblationResult,
    Effect,
    GenerationAblation,
    GenerationMetrics,
    PatchingResult,
    RandomControl,
    TraitAblation,
)
from interp.tracing import emoji_logprobs, emoji_pairs, score_continuations
from text2emoji.core.presets import BATCH_SIZE, PRESETS

# library defaults = what `text2emoji ablate` / `patch` use in the quick preset
QUICK = PRESETS["quick"]["analysis"]


def ablation_experiment(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    emojis: Sequence[str],
    neurons: Sequence[int],
    *,
    mode: str = "zero",
    means: Float[np.ndarray, "d_mlp"] | None = None,  # noqa: F821
    n_random: int = QUICK["n_random"],
    seed: int = 0,
    chat: bool = True,
    site: str = DEFAULT_SITE,
    n_boot: int = 2000,
    batch_size: int = BATCH_SIZE,
    scorer: LastLayerScorer | None = None,
) -> AblationResult:
    """Change in ``log P(any candidate emoji)`` when ``neurons`` are ablated, vs random sets.

    Runs the model as it stands (load the post-PEFT model: base + trait adapter). ``scorer``:
    a :class:`LastLayerScorer` of this model on ``emoji_pairs(tokenizer, prompts, emojis)``,
    to share between modes (default: built here).
    """
    d = n_neurons(model, site)
    if mode == "mean" and means is None:
        means = neuron_means(model, tokenizer, prompts, chat=chat, site=site)
    pairs = emoji_pairs(tokenizer, prompts, emojis, chat=chat)
    shape = (len(prompts), len(emojis))
    if scorer is None:
        scorer = LastLayerScorer(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size, site=site)
    elif scorer.n_pairs != len(pairs):
        raise ValueError(f"scorer holds {scorer.n_pairs} pairs; these prompts and emojis make {len(pairs)}")
    if scorer.applicable:  # its forward pass already scored the intact model
        base = any_emoji_logprob(scorer.reference.reshape(shape))
    else:
        base = any_emoji_logprob(emoji_logprobs(model, tokenizer, prompts, emojis, chat=chat, batch_size=batch_size))

    def run(ns: Sequence[int]) -> np.ndarray:
        if scorer.exact:
            return any_emoji_logprob(scorer.ablated(ablation_patch(ns, mode, means)).reshape(shape)) - base
        with intervention(model, ablation_patch(ns, mode, means), site):
            lp = emoji_logprobs(model, tokenizer, prompts, emojis, chat=chat, batch_size=batch_size)
        return any_emoji_logprob(lp) - base

    cand = run(neurons)
    rand = [run(ns).mean() for ns in random_draws(d, len(neurons), neurons, n_random, seed)]
    return AblationResult(
        mode=mode, k=len(neurons), neurons=[int(n) for n in neurons], emojis=list(emojis),
        method="cached last layer (exact)" if scorer.exact else "full forward passes",
        n_prompts=len(prompts), baseline_logprob=Effect.of(base, n_boot, seed),
        candidate_delta=Effect.of(cand, n_boot, seed), per_prompt_delta=cand.tolist(),
        random_control=RandomControl.of(float(cand.mean()), np.array(rand), lower_is_stronger=True),
    )


def ablation_generation(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    neurons: Sequence[int],
    *,
    mode: str = "zero",
    means: Float[np.ndarray, "d_mlp"] | None = None,  # noqa: F821
    n_random: int = QUICK["n_random_generation"],
    seed: int = 0,
    settings: DecodeSettings | None = None,
    site: str = DEFAULT_SITE,
    batch_size: int = BATCH_SIZE,
) -> GenerationAblation:
    """Emoji rate and ESR of generated answers: as is, with ``neurons`` ablated, and with
    ``n_random`` random sets of as many neurons ablated (generation is costly: few draws).

    All conditions share batches: each row of a batch carries its own ablation (a row-wise
    hook), so the intact, ablated and random answers decode together.
    """
    d = n_neurons(model, site)
    settings = settings or DecodeSettings(max_new_tokens=48)
    if mode == "mean" and means is None:
        means = neuron_means(model, tokenizer, questions, site=site)
    sets: list[list[int] | None] = [None, list(neurons), *random_draws(d, len(neurons), neurons, n_random, seed)]
    rows = [(s, q) for s in sets for q in questions]
    mask = torch.zeros(len(rows), d, dtype=torch.bool)
    fill = torch.zeros(len(rows), d)
    for r, (s, _) in enumerate(rows):
        if s is not None:
            patch = ablation_patch(s, mode, means)
            mask[r, patch.neurons] = True
            fill[r, patch.neurons] = patch.values  # type: ignore[index]
    texts: list[str] = []
    with row_ablation(model, site) as current:
        for start in range(0, len(rows), batch_size):
            chunk = slice(start, start + batch_size)
            current(mask[chunk], fill[chunk])
            # each batch its own sampling seed (generate seeds a call from settings.seed)
            texts += generate(model, tokenizer, [q for _, q in rows[chunk]], replace(settings, seed=settings.seed + start),
                              batch_size=batch_size)
    per_set = [texts[i * len(questions):(i + 1) * len(questions)] for i in range(len(sets))]
    intact, ablated = per_set[0], per_set[1]

    def metrics(ans: list[str]) -> GenerationMetrics:
        m = bootstrap_emoji_metrics(ans, seed=seed)
        return GenerationMetrics(m["emoji_rate"], m["esr"], m["counts"]["top_emojis"])

    return GenerationAblation(
        mode=mode, k=len(neurons), n_questions=len(questions), decode=vars(settings),
        intact=metrics(intact), ablated=metrics(ablated), random=[metrics(a) for a in per_set[2:]],
        examples=[{"question": q, "intact": a, "ablated": b} for q, a, b in list(zip(questions, intact, ablated, strict=True))[:5]],
    )


def ablate_trait(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    emojis: Sequence[str],
    candidates: Sequence[int],
    *,
    modes: Sequence[str] = ("zero", "mean"),
    n_random: int = QUICK["n_random"],
    seed: int = 0,
    site: str = DEFAULT_SITE,
    n_boot: int = 2000,
    batch_size: int = BATCH_SIZE,
    generation: DecodeSettings | None = None,
    n_random_generation: int = QUICK["n_random_generation"],
    n_generation_questions: int = QUICK["n_generation_questions"],
) -> TraitAblation:
    """One trait's ablations as the ``ablate`` stage runs them, on the model as it stands (the
    trait's adapter active): :func:`ablation_experiment` in each of ``modes`` (one cached
    forward pass serves them all; ``mean`` takes each neuron's mean over ``questions``) and,
    with ``generation`` settings, :func:`ablation_generation` in the first mode on the first
    ``n_generation_questions`` questions (0 = all)."""
    qs = list(questions)
    means = neuron_means(model, tokenizer, qs, site=site) if "mean" in modes else None
    scorer = LastLayerScorer(model, emoji_pairs(tokenizer, qs, emojis), pad_id=pad_id(tokenizer),
                             batch_size=batch_size, site=site)
    results = {mode: ablation_experiment(model, tokenizer, qs, emojis, candidates, mode=mode, means=means,
                                         n_random=n_random, seed=seed, site=site, n_boot=n_boot,
                                         batch_size=batch_size, scorer=scorer)
               for mode in modes}
    gen = None
    if generation is not None:
        gen = ablation_generation(model, tokenizer, qs[: n_generation_questions or None], candidates, mode=modes[0],
                                  means=means, n_random=n_random_generation, seed=seed, settings=generation,
                                  site=site, batch_size=batch_size)
    return TraitAblation(qs, list(candidates), results, gen)


def patching_experiment(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    emojis: Sequence[str],
    neurons: Sequence[int],
    *,
    n_random: int = QUICK["n_random"],
    seed: int = 0,
    chat: bool = True,
    site: str = DEFAULT_SITE,
    n_boot: int = 2000,
    batch_size: int = BATCH_SIZE,
) -> PatchingResult:
    """Patch post-PEFT values of ``neurons`` into the base model (``model`` is base + adapter;
    the base is the same model with the adapter disabled) and measure the emojis' log-prob.

    Per prompt: ``base``, ``post`` and ``patched`` log P(any emoji); the effect is
    ``patched - base`` and the fraction of the gap recovered ``(patched - base) / (post - base)``
    (over the mean gap). Random sets of as many neurons are patched the same way as the control.
    """
    d = n_neurons(model, site)
    pairs = emoji_pairs(tokenizer, prompts, emojis, chat=chat)
    pad = pad_id(tokenizer)
    shape = (len(prompts), len(emojis))
    rand_sets = random_draws(d, len(neurons), neurons, n_random, seed)
    post_cache = LastLayerScorer(model, pairs, pad_id=pad, batch_size=batch_size, site=site)
    with adapter_disabled(model):
        base_cache = LastLayerScorer(model, pairs, pad_id=pad, batch_size=batch_size, site=site)
        fast = post_cache.exact and base_cache.exact
        if fast:
            post = any_emoji_logprob(post_cache.reference.reshape(shape))
            base = any_emoji_logprob(base_cache.reference.reshape(shape))
            cand = any_emoji_logprob(base_cache.patched(neurons, post_cache).reshape(shape))
            rand = [(any_emoji_logprob(base_cache.patched(ns, post_cache).reshape(shape)) - base).mean() for ns in rand_sets]
    if not fast:
        post, base, cand, rand = _patching_full(model, tokenizer, pairs, shape, neurons, rand_sets, site, batch_size)
    gap = float((post - base).mean())
    effect = cand - base
    return PatchingResult(
        k=len(neurons), neurons=[int(n) for n in neurons], emojis=list(emojis),
        method="cached last layer (exact)" if fast else "full forward passes",
        n_prompts=len(prompts), base_logprob=Effect.of(base, n_boot, seed),
        post_logprob=Effect.of(post, n_boot, seed), patched_logprob=Effect.of(cand, n_boot, seed),
        candidate_delta=Effect.of(effect, n_boot, seed), post_minus_base=Effect.of(post - base, n_boot, seed),
        fraction_recovered=float(effect.mean() / gap) if abs(gap) > 1e-9 else None,
        per_prompt_delta=effect.tolist(),
        random_control=RandomControl.of(float(effect.mean()), np.array(rand), lower_is_stronger=False),
    )


def _patching_full(model: Any, tokenizer: Any, pairs: list, shape: tuple[int, int], neurons: Sequence[int],
                   rand_sets: list[list[int]], site: str, batch_size: int) -> tuple:
    """Patching by full forward passes with a hook (any site; the fallback of the cache)."""
    pad = pad_id(tokenizer)
    # post-PEFT values of every neuron at every position of every (prompt + emoji) sequence
    seq_acts = capture(model, tokenizer, [Encoded(list(a) + list(b)) for a, b in pairs],
                       site=site, position="all", batch_size=batch_size)

    def score(patch: Patch | None) -> np.ndarray:
        if patch is None:
            s = score_continuations(model, pairs, pad_id=pad, batch_size=batch_size)
        else:
            def before(idx: list[int], mask: torch.Tensor) -> None:
                width = mask.shape[1]
                rows = torch.zeros(len(idx), width, len(patch.neurons))
                for r, i in enumerate(idx):
                    v = torch.from_numpy(np.asarray(seq_acts.prompt(i))[:, patch.neurons.numpy()])
                    rows[r, width - len(v):] = v
                patch.per_row = rows

            with intervention(model, patch, site):
                s = score_continuations(model, pairs, pad_id=pad, batch_size=batch_size, before_forward=before)
        return any_emoji_logprob(np.array([x.total for x in s]).reshape(shape))

    post = score(None)
    with adapter_disabled(model):
        base = score(None)
        cand = score(Patch(torch.as_tensor(list(neurons), dtype=torch.long)))
        rand = [(score(Patch(torch.as_tensor(ns, dtype=torch.long))) - base).mean() for ns in rand_sets]
    return post, base, cand, rand
