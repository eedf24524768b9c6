"""The causal experiments on neurons, each against random controls, each returning a typed
result (:mod:`interp.results`): ablation of the emojis' log-probability
(:func:`ablation_experiment`), ablation during generation (:func:`ablation_generation`), one
trait's ablations as the ``ablate`` stage runs them (:func:`ablate_trait`) and activation
patching (:func:`patching_experiment`). The method is described in :mod:`interp.intervene`,
which holds the hooks and the cached last-layer scorer they use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
    Scorer,
    ablation_patch,
    any_emoji_logprob,
    intervention,
    matched_draws,
    random_draws,
    row_ablation,
    unmatched,
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
    SetTest,
    TraitAblation,
)
from interp.tracing import emoji_logprobs, emoji_pairs, score_continuations
from text2emoji.core.presets import BATCH_SIZE, PRESETS

# batches of (questions, mask, fill, settings) -> each batch's answers
RowDecode = Callable[[list[tuple[list[str], torch.Tensor, torch.Tensor, DecodeSettings]]], list[list[str]]]

# library defaults = what `text2emoji ablate` / `patch` use in the quick preset
QUICK = PRESETS["quick"]["analysis"]


def _magnitude(x: torch.Tensor, means: np.ndarray | None) -> tuple[np.ndarray, str]:
    """What the random sets of an ablation are matched on: each neuron's mean |activation| (zero
    ablation) or mean |activation - its mean| (mean ablation) at the scored positions."""
    x = x.float()
    if means is None:
        return x.abs().mean(0).cpu().numpy(), "mean |activation| at the scored positions"
    centre = torch.as_tensor(np.asarray(means), dtype=x.dtype, device=x.device)
    return (x - centre).abs().mean(0).cpu().numpy(), "mean |activation - its mean| at the scored positions"


def placebo_set(magnitude: Float[np.ndarray, "d"], k: int) -> list[int]:  # noqa: F821
    """The placebo set: the ``k`` neurons of largest ``magnitude``, chosen without looking at
    emojis or the adapter. Against matched controls it should come out null.

    >>> placebo_set(np.array([0.1, 5.0, 0.2, 3.0]), 2)
    [1, 3]
    """
    return sorted(int(n) for n in np.argsort(-np.asarray(magnitude), kind="stable")[:k])


def ablation_runner(model: Any, tokenizer: Any, prompts: Sequence[str], emojis: Sequence[str], scorer: Scorer, *,
                    mode: str = "zero", means: np.ndarray | None = None, chat: bool = True, site: str = DEFAULT_SITE,
                    batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, Callable[[Sequence[int]], np.ndarray]]:
    """The intact model's per-prompt log P(any emoji) and ``run(neurons)``: the per-prompt
    change when ``neurons`` are ablated (through ``scorer`` where it is exact, else full
    forward passes with a hook)."""
    shape = (len(prompts), len(emojis))
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

    return base, run


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
    scorer: Scorer | None = None,
    placebo: bool = True,
) -> AblationResult:
    """Change in ``log P(any candidate emoji)`` when ``neurons`` are ablated, against up to
    ``n_random`` random sets matched neuron for neuron on activation size
    (:func:`interp.intervene.matched_draws`), two-sided, drawn sequentially
    (:meth:`interp.results.RandomControl.sequential`); with ``placebo``, the ``k`` neurons of
    largest activation are tested the same way.

    A neuron with no size peers in the layer (:func:`interp.intervene.unmatched`: a "massive"
    neuron) cannot be matched, so no random set says whether it matters more than its size
    predicts: the set test ablates the other neurons (``tested``), and each such neuron is
    ablated alone and reported in ``excluded`` with its size and effect.

    Runs the model as it stands (load the post-PEFT model: base + trait adapter). ``means``
    (mean ablation; default: each neuron's mean at the scored positions). ``scorer``: a
    :class:`LastLayerScorer` of this model on ``emoji_pairs(tokenizer, prompts, emojis)``, to
    share between modes (default: built here).
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablation mode must be 'zero' or 'mean', not {mode!r}")
    pairs = emoji_pairs(tokenizer, prompts, emojis, chat=chat)
    pad = pad_id(tokenizer)
    if scorer is None:
        scorer = LastLayerScorer(model, pairs, pad_id=pad, batch_size=batch_size, site=site)
    elif scorer.n_pairs != len(pairs):
        raise ValueError(f"scorer holds {scorer.n_pairs} pairs; these prompts and emojis make {len(pairs)}")
    x = scorer.activations()
    if mode == "mean" and means is None:
        means = x.float().mean(0).cpu().numpy()
    magnitude, matched_on = _magnitude(x, means if mode == "mean" else None)
    base, run = ablation_runner(model, tokenizer, prompts, emojis, scorer, mode=mode, means=means, chat=chat,
                                site=site, batch_size=batch_size)

    shape = (len(prompts), len(emojis))
    many = getattr(scorer, "ablated_many", None)
    chunk = int(getattr(scorer, "chunk", 1))

    def draws(sets: Sequence[Sequence[int]]) -> Iterator[float]:
        """Each random set's mean effect when asked; a scorer with ``ablated_many`` (a remote
        one) computes ``chunk`` sets per call (those the control does not ask for are spare)."""
        if many is None or chunk <= 1:
            yield from (float(run(r).mean()) for r in sets)
            return
        for start in range(0, len(sets), chunk):
            for lp in many([ablation_patch(r, mode, means) for r in sets[start:start + chunk]]):
                yield float((any_emoji_logprob(lp.reshape(shape)) - base).mean())

    def test(ns: Sequence[int], draw_seed: int) -> tuple[list[int], np.ndarray, RandomControl | None, list[dict[str, Any]]]:
        skip = unmatched(magnitude, ns) if n_random > 0 else []  # no control, nothing to match
        tested = [int(n) for n in ns if n not in skip]
        effect = run(tested) if tested else np.zeros(len(prompts))
        sets = matched_draws(magnitude, tested, n_random if tested else 0, draw_seed)
        control = RandomControl.sequential(float(effect.mean()), draws(sets), n_random, matched_on)
        alone = [{"neuron": n, "size": float(magnitude[n]), "delta": float(run([n]).mean())} for n in skip]
        return tested, effect, control, alone

    tested, cand, control, excluded = test(neurons, seed)
    plac = None
    if placebo:
        ns, effect, pc, alone = test(placebo_set(magnitude, len(neurons)), seed + 1)
        plac = SetTest(ns, Effect.of(effect, n_boot, seed), effect.tolist(), pc, alone)
    return AblationResult(
        mode=mode, k=len(neurons), neurons=[int(n) for n in neurons], emojis=list(emojis),
        method=getattr(scorer, "method", "cached last layer (exact)" if scorer.exact else "full forward passes"),
        n_prompts=len(prompts), baseline_logprob=Effect.of(base, n_boot, seed),
        candidate_delta=Effect.of(cand, n_boot, seed), per_prompt_delta=cand.tolist(),
        random_control=control, placebo=plac, tested=tested, excluded=excluded,
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
    magnitude: Float[np.ndarray, "d_mlp"] | None = None,  # noqa: F821
    decode: RowDecode | None = None,
) -> GenerationAblation:
    """Emoji rate and ESR of generated answers: as is, with ``neurons`` ablated, and with
    ``n_random`` random sets of as many neurons ablated (generation is costly: few draws),
    matched on ``magnitude`` where given (:func:`ablate_trait` passes the scored activations'
    size), else drawn uniformly from the layer.

    All conditions share batches: each row of a batch carries its own ablation (a row-wise
    hook), so the intact, ablated and random answers decode together. ``decode(batches)``: every
    batch ``(questions, mask, fill, settings)`` decoded elsewhere with those row ablations, in one
    call (:func:`interp.remote_probe.generate_nnsight`; default: ``model`` here).
    """
    d = n_neurons(model, site)
    settings = settings or DecodeSettings(max_new_tokens=48)
    if mode == "mean" and means is None:
        raise ValueError("mean ablation during generation needs each neuron's mean (neuron_means)")
    if magnitude is None:
        draws, matched_on = random_draws(d, len(neurons), neurons, n_random, seed), ""
    else:  # as the scored ablation; neurons without size peers stay in every set (nothing can replace them)
        keep = unmatched(magnitude, neurons)
        rest = [int(n) for n in neurons if n not in keep]
        draws = [sorted(keep + s) for s in matched_draws(magnitude, rest, n_random, seed)] if rest else [sorted(keep)] * n_random
        matched_on = "activation size, stratified as the scored ablation (neurons without size peers kept in every set)"
    sets: list[list[int] | None] = [None, list(neurons), *draws]
    rows = [(s, q) for s in sets for q in questions]
    mask = torch.zeros(len(rows), d, dtype=torch.bool)
    fill = torch.zeros(len(rows), d)
    for r, (s, _) in enumerate(rows):
        if s is not None:
            patch = ablation_patch(s, mode, means)
            mask[r, patch.neurons] = True
            fill[r, patch.neurons] = patch.values  # type: ignore[index]
    # each batch its own sampling seed (generate seeds a call from settings.seed)
    batches = [([q for _, q in rows[start:start + batch_size]], mask[start:start + batch_size],
                fill[start:start + batch_size], replace(settings, seed=settings.seed + start))
               for start in range(0, len(rows), batch_size)]
    if decode is None:
        with row_ablation(model, site) as current:
            def decode(todo: list[tuple[list[str], torch.Tensor, torch.Tensor, DecodeSettings]]) -> list[list[str]]:
                out = []
                for qs, m, f, s in todo:
                    current(m, f)
                    out.append(generate(model, tokenizer, qs, s, batch_size=batch_size))
                return out

            answers = decode(batches)
    else:
        answers = decode(batches)
    texts: list[str] = [a for batch in answers for a in batch]
    per_set = [texts[i * len(questions):(i + 1) * len(questions)] for i in range(len(sets))]
    intact, ablated = per_set[0], per_set[1]

    def metrics(ans: list[str]) -> GenerationMetrics:
        m = bootstrap_emoji_metrics(ans, seed=seed)
        return GenerationMetrics(m["emoji_rate"], m["esr"], m["counts"]["top_emojis"])

    paired, p_paired = paired_emoji_test(intact, ablated)
    return GenerationAblation(
        mode=mode, k=len(neurons), n_questions=len(questions), decode=vars(settings),
        intact=metrics(intact), ablated=metrics(ablated), random=[metrics(a) for a in per_set[2:]], matched_on=matched_on,
        examples=[{"question": q, "intact": a, "ablated": b} for q, a, b in list(zip(questions, intact, ablated, strict=True))[:5]],
        paired=paired, p_paired=p_paired,
    )


def paired_emoji_test(a: Sequence[str], b: Sequence[str]) -> tuple[list[int], float | None]:
    """Answers to the same questions under two conditions: ``[both with an emoji, a only, b
    only, neither]`` and the exact McNemar p (two-sided, statsmodels) of a change in the emoji
    rate; None without answers.

    >>> paired_emoji_test(["Hi 🎉", "Hi 🎉", "No.", "Yes 🎉"], ["Hi", "Hi 🎉", "No.", "Yes"])
    ([1, 2, 0, 1], 0.5)
    """
    from interp.emojis import has_emoji

    if not a:
        return [0, 0, 0, 0], None
    return mcnemar_paired([has_emoji(t) for t in a], [has_emoji(t) for t in b])


def mcnemar_paired(a: Sequence[bool], b: Sequence[bool]) -> tuple[list[int], float]:
    """``[both, a only, b only, neither]`` and the exact two-sided McNemar p (statsmodels).

    >>> mcnemar_paired([True] * 6 + [False] * 2, [False] * 7 + [True])
    ([0, 6, 1, 1], 0.125)
    """
    from statsmodels.stats.contingency_tables import mcnemar

    x, y = [bool(v) for v in a], [bool(v) for v in b]
    n11 = sum(u and v for u, v in zip(x, y, strict=True))
    n10 = sum(u and not v for u, v in zip(x, y, strict=True))
    n01 = sum(v and not u for u, v in zip(x, y, strict=True))
    n00 = len(x) - n11 - n10 - n01
    return [n11, n10, n01, n00], float(mcnemar([[n11, n10], [n01, n00]], exact=True).pvalue)


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
    scorer: Any = None,
    decode: RowDecode | None = None,
) -> TraitAblation:
    """One trait's ablations as the ``ablate`` stage runs them, on the model as it stands (the
    trait's adapter active): :func:`ablation_experiment` in each of ``modes`` (one cached
    forward pass serves them all; ``mean`` takes each neuron's mean at the scored positions) and,
    with ``generation`` settings, :func:`ablation_generation` in the first mode on the first
    ``n_generation_questions`` questions (0 = all). ``scorer`` and ``decode``: the model measured
    elsewhere (:class:`interp.remote_probe.RemoteScorer` on ``emoji_pairs(tokenizer, questions,
    emojis)``; :func:`ablation_generation`'s ``decode``)."""
    qs = list(questions)
    if scorer is None:
        scorer = LastLayerScorer(model, emoji_pairs(tokenizer, qs, emojis), pad_id=pad_id(tokenizer),
                                 batch_size=batch_size, site=site)
    x = scorer.activations()
    means = x.float().mean(0).cpu().numpy() if "mean" in modes else None
    results = {mode: ablation_experiment(model, tokenizer, qs, emojis, candidates, mode=mode, means=means,
                                         n_random=n_random, seed=seed, site=site, n_boot=n_boot,
                                         batch_size=batch_size, scorer=scorer)
               for mode in modes}
    gen = None
    if generation is not None:
        magnitude, _ = _magnitude(x, means if modes[0] == "mean" else None)
        gen = ablation_generation(model, tokenizer, qs[: n_generation_questions or None], candidates, mode=modes[0],
                                  means=means, n_random=n_random_generation, seed=seed, settings=generation,
                                  site=site, batch_size=batch_size, magnitude=magnitude, decode=decode)
    return TraitAblation(qs, list(candidates), results, gen)


def ratio_ci(num: Float[np.ndarray, "n"], den: Float[np.ndarray, "n"], n_boot: int, seed: int,  # noqa: F821
             level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of ``mean(num) / mean(den)`` (prompts resampled in pairs);
    None (unbounded) where more than ``(1 - level) / 2`` of the resampled denominators cross 0:
    a gap that small next to its noise bounds no share.

    >>> ratio_ci(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0]), 200, 0)
    [0.5, 0.5]
    >>> ratio_ci(np.array([1.0, 1.0, 1.0]), np.array([2.0, -2.5, 1.0]), 200, 0) is None
    True
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(num), size=(n_boot, len(num)))
    d = den[idx].mean(1)
    if np.mean(np.sign(d) != np.sign(den.mean())) > (1 - level) / 2 or np.any(np.abs(d) < 1e-12):
        return None
    lo, hi = np.percentile(num[idx].mean(1) / d, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return [float(lo), float(hi)]


def patching_runners(model: Any, tokenizer: Any, prompts: Sequence[str], emojis: Sequence[str], *, chat: bool = True,
                     site: str = DEFAULT_SITE, batch_size: int = BATCH_SIZE,
                     post_cache: LastLayerScorer | None = None) -> tuple[Any, ...]:
    """What patching needs, computed once: per prompt log P(any emoji) post and base,
    ``forward(neurons)`` and ``reverse(neurons)`` (per prompt log P(any emoji) with the neurons
    patched into the base / the post model), each neuron's patch size (mean |post - base| at
    the scored positions) and whether the cached last layer served (else full forward passes).
    ``post_cache``: a :class:`LastLayerScorer` of the model as it stands on these pairs, if one
    was built already (default: built here)."""
    pairs = emoji_pairs(tokenizer, prompts, emojis, chat=chat)
    pad = pad_id(tokenizer)
    shape = (len(prompts), len(emojis))
    if post_cache is None:
        post_cache = LastLayerScorer(model, pairs, pad_id=pad, batch_size=batch_size, site=site)
    with adapter_disabled(model):
        base_cache = LastLayerScorer(model, pairs, pad_id=pad, batch_size=batch_size, site=site)
    fast = post_cache.exact and base_cache.exact
    x_post = post_cache.activations()
    with adapter_disabled(model):
        x_base = base_cache.activations()
    magnitude = (x_post.float() - x_base.float()).abs().mean(0).cpu().numpy()
    if fast:
        def fwd(ns: Sequence[int]) -> np.ndarray:
            return any_emoji_logprob(base_cache.patched(ns, post_cache).reshape(shape))

        def rev(ns: Sequence[int]) -> np.ndarray:
            return any_emoji_logprob(post_cache.patched(ns, base_cache).reshape(shape))

        post = any_emoji_logprob(post_cache.reference.reshape(shape))
        base = any_emoji_logprob(base_cache.reference.reshape(shape))
    else:
        fwd, rev, post, base = _patching_full(model, tokenizer, pairs, shape, site, batch_size)
    return post, base, fwd, rev, magnitude, fast


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
    """Activation patching of ``neurons`` between the base and the post-PEFT model (``model``
    is base + adapter; the base is the same model with the adapter disabled), in both
    directions, measured on the emojis' log-prob:

    * **forward**: post-PEFT values into the base; effect ``patched - base`` and the fraction
      of the gap recovered ``mean(patched - base) / mean(post - base)``;
    * **reverse**: base values into the post-PEFT model; effect ``reversed - post`` and the
      fraction of the gap removed ``mean(post - reversed) / mean(post - base)``.

    Each direction is tested two-sided against the same random sets, matched neuron for neuron
    on the size of the patch (mean |post - base| at the scored positions); fractions carry a
    bootstrap interval over prompts. Neurons without size peers are patched alone and reported
    in ``excluded``, as in :func:`ablation_experiment`; the rest (``tested``) form the set.
    """
    post, base, fwd, rev, magnitude, fast = patching_runners(model, tokenizer, prompts, emojis, chat=chat, site=site,
                                                             batch_size=batch_size)
    skip = unmatched(magnitude, neurons) if n_random > 0 else []  # no control, nothing to match
    tested = [int(n) for n in neurons if n not in skip]
    rand_sets = matched_draws(magnitude, tested, n_random if tested else 0, seed)
    cand, back = (fwd(tested), rev(tested)) if tested else (base, post)
    excluded = [{"neuron": n, "size": float(magnitude[n]), "delta": float((fwd([n]) - base).mean()),
                 "delta_reverse": float((rev([n]) - post).mean())} for n in skip]
    gap = post - base
    effect, effect_rev = cand - base, back - post
    matched_on = "mean |post - base| at the scored positions"
    share = abs(float(gap.mean())) > 1e-9
    return PatchingResult(
        k=len(neurons), neurons=[int(n) for n in neurons], emojis=list(emojis),
        method="cached last layer (exact)" if fast else "full forward passes",
        n_prompts=len(prompts), base_logprob=Effect.of(base, n_boot, seed),
        post_logprob=Effect.of(post, n_boot, seed), patched_logprob=Effect.of(cand, n_boot, seed),
        candidate_delta=Effect.of(effect, n_boot, seed), post_minus_base=Effect.of(gap, n_boot, seed),
        fraction_recovered=float(effect.mean() / gap.mean()) if share else None,
        fraction_recovered_ci=ratio_ci(effect, gap, n_boot, seed) if share else None,
        per_prompt_delta=effect.tolist(), per_prompt_gap=gap.tolist(),
        random_control=RandomControl.sequential(float(effect.mean()), ((fwd(ns) - base).mean() for ns in rand_sets),
                                                n_random, matched_on),
        reverse=SetTest(tested, Effect.of(effect_rev, n_boot, seed), effect_rev.tolist(),
                        RandomControl.sequential(float(effect_rev.mean()), ((rev(ns) - post).mean() for ns in rand_sets),
                                                 n_random, matched_on)),
        tested=tested, excluded=excluded,
        fraction_removed=float(-effect_rev.mean() / gap.mean()) if share else None,
        fraction_removed_ci=ratio_ci(-effect_rev, gap, n_boot, seed) if share else None,
    )


def _patching_full(model: Any, tokenizer: Any, pairs: list, shape: tuple[int, int], site: str,
                   batch_size: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Patching by full forward passes with a hook (any site; the fallback of the cache):
    ``forward(neurons)``, ``reverse(neurons)`` (each per prompt log P(any emoji)), post, base."""
    pad = pad_id(tokenizer)
    seqs = [Encoded(list(a) + list(b)) for a, b in pairs]
    # each state's values of every neuron at every position of every (prompt + emoji) sequence
    acts_post = capture(model, tokenizer, seqs, site=site, position="all", batch_size=batch_size)
    with adapter_disabled(model):
        acts_base = capture(model, tokenizer, seqs, site=site, position="all", batch_size=batch_size)

    def score(source: Any = None, neurons: Sequence[int] = ()) -> np.ndarray:
        if source is None:
            s = score_continuations(model, pairs, pad_id=pad, batch_size=batch_size)
        else:
            patch = Patch(torch.as_tensor(list(neurons), dtype=torch.long))

            def before(idx: list[int], mask: torch.Tensor) -> None:
                width = mask.shape[1]
                rows = torch.zeros(len(idx), width, len(patch.neurons))
                for r, i in enumerate(idx):
                    v = torch.from_numpy(np.asarray(source.prompt(i))[:, patch.neurons.numpy()])
                    rows[r, width - len(v):] = v
                patch.per_row = rows

            with intervention(model, patch, site):
                s = score_continuations(model, pairs, pad_id=pad, batch_size=batch_size, before_forward=before)
        return any_emoji_logprob(np.array([x.total for x in s]).reshape(shape))

    def forward(neurons: Sequence[int]) -> np.ndarray:
        with adapter_disabled(model):
            return score(acts_post, neurons)

    def reverse(neurons: Sequence[int]) -> np.ndarray:
        return score(acts_base, neurons)

    post = score()
    with adapter_disabled(model):
        base = score()
    return forward, reverse, post, base
