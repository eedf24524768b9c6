"""Steering as a method of the study: which questions a trait vector and its α sweep are made
on, one α's measurements, and the rule that picks α.

The measurements of one α (:func:`sweep_point`) are those of the emoji table and trait
alignment — emoji rate (Wilson), ESR (bootstrap over answers), the share the trait metric
assigns to the target trait (Wilson) — plus coherence: the base model's mean negative
log-likelihood per token of each answer (:func:`interp.steering.coherence`) and its rise over
the unsteered answers to the same questions (paired by question, bootstrap over questions).

>>> choose_alpha([0.0, 2.0, 4.0], [0.25, 0.5, 0.75], [0.0, 0.1, 0.9], max_rise=0.5)
AlphaChoice(alpha=2.0, usable=True, reason='α = 2 has the highest trait alignment (50.0%) of the α within the coherence limit')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from jaxtyping import Float

from interp.behaviour.emoji_metrics import bootstrap_emoji_metrics, wilson
from interp.results import Effect
from text2emoji.core.schema import Row

RULE = ("α* is the α with the highest trait alignment on the sweep questions among those whose mean coherence "
        "rise over α = 0 (base-model NLL per token, nats) is at most max_coherence_rise; ties go to the smaller α. "
        "When that is α = 0 — no α > 0 is within the limit, or none beats the unsteered answers — steering is not "
        "usable and the test answers are the unsteered ones (α* = 0).")


def steering_questions(rows: Sequence[Row], trait: str, n_vector: int, n_sweep: int) -> tuple[list[str], list[str]]:
    """The train questions of ``trait`` a trait vector is read from and its α sweep is measured
    on: sorted by topic (case-insensitive, as :func:`interp.behaviour.evaluate.build_jobs` sorts
    the test questions), each question once; the first ``n_vector`` for the vector, the next
    ``n_sweep`` for the sweep (disjoint, and never a test question). Where the trait has fewer
    than ``n_vector + n_sweep`` train questions, they are split in the same proportion (at
    least one each).

    Raises:
        ValueError: fewer than two train questions.

    >>> from text2emoji.core.schema import Row
    >>> rows = [Row("openness", f"t{i}", f"q{i}", "a", "train") for i in (3, 1, 2, 0)]
    >>> steering_questions(rows, "openness", 2, 1), steering_questions(rows, "openness", 8, 8)
    ((['q0', 'q1'], ['q2']), (['q0', 'q1'], ['q2', 'q3']))
    """
    train = sorted((r for r in rows if r.trait == trait and r.split == "train"), key=lambda r: r.topic.lower())
    pool = list(dict.fromkeys(r.question for r in train))
    if len(pool) < 2:
        raise ValueError(f"{trait} has {len(pool)} train question(s); the trait vector and the α sweep need one each "
                         "at least, on disjoint questions")
    if len(pool) < n_vector + n_sweep:
        # rounded half up: an odd pool's middle question goes to the vector
        n_vector = max(1, min(len(pool) - 1, int(len(pool) * n_vector / (n_vector + n_sweep) + 0.5)))
        n_sweep = len(pool) - n_vector
    return pool[:n_vector], pool[n_vector:n_vector + n_sweep]


@dataclass(frozen=True)
class SweepPoint:
    """One α of the sweep: the answers' emoji rate and ESR, their trait alignment, and their
    coherence and its rise over α = 0 (each with a 95% interval)."""

    alpha: float
    n_answers: int
    emoji_rate: float | None
    emoji_rate_ci: list[float | None]  # Wilson
    esr: float | None
    esr_ci: list[float | None]  # bootstrap over answers (exact bound where it has no spread)
    trait_alignment: float | None
    trait_alignment_ci: list[float]  # Wilson
    predicted: dict[str, int]  # what the trait metric called the answers
    coherence: float | None  # mean over answers of the base model's NLL per token (nats)
    coherence_ci: list[float]  # bootstrap over answers
    coherence_rise: float | None  # mean over questions of (NLL at alpha - NLL at 0)
    coherence_rise_ci: list[float]  # bootstrap over questions
    n_scored: int  # answers with at least one token (the others have no NLL)
    top_emojis: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep_point(
    alpha: float,
    answers: Sequence[str],
    predicted: Sequence[str],
    trait: str,
    nll: Float[np.ndarray, "answers"],  # noqa: F821
    nll0: Float[np.ndarray, "answers"],  # noqa: F821
    classes: Sequence[str],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> SweepPoint:
    """The measurements of the answers at one α.

    Args:
        alpha: the steering scale.
        answers: one answer per sweep question.
        predicted: the trait metric's label of each answer.
        trait: the target trait.
        nll: each answer's mean NLL per token under the base model (NaN: no tokens).
        nll0: the same for the unsteered answers (α = 0) to the same questions, in the same order.
        classes: the metric's labels (each gets a count in ``predicted``, zeros included).
        n_boot: bootstrap resamples.
        seed: resampling seed.
    """
    if not len(answers) == len(predicted) == len(nll) == len(nll0):
        raise ValueError("sweep_point(): answers, predicted, nll and nll0 need one entry per question")
    m = bootstrap_emoji_metrics(list(answers), n_boot=n_boot, seed=seed)
    n = len(answers)
    k = sum(p == trait for p in predicted)
    ta_ci = wilson(k, n) if n else None
    scored = nll[np.isfinite(nll)]
    both = np.isfinite(nll) & np.isfinite(nll0)
    coh = Effect.of(scored, n_boot, seed) if len(scored) else None
    rise = Effect.of(nll[both] - nll0[both], n_boot, seed) if both.any() else None
    counts = Counter(str(p) for p in predicted)
    return SweepPoint(
        alpha=float(alpha), n_answers=n,
        emoji_rate=m["emoji_rate"]["value"], emoji_rate_ci=[m["emoji_rate"]["lo"], m["emoji_rate"]["hi"]],
        esr=m["esr"]["value"], esr_ci=[m["esr"]["lo"], m["esr"]["hi"]],
        trait_alignment=k / n if n else None, trait_alignment_ci=[ta_ci["lo"], ta_ci["hi"]] if ta_ci else [],
        predicted={str(c): counts.get(str(c), 0) for c in classes},
        coherence=coh.mean if coh else None, coherence_ci=[coh.ci_lo, coh.ci_hi] if coh else [],
        coherence_rise=rise.mean if rise else None, coherence_rise_ci=[rise.ci_lo, rise.ci_hi] if rise else [],
        n_scored=int(len(scored)), top_emojis=[list(t) for t in m["counts"]["top_emojis"][:5]],
    )


@dataclass(frozen=True)
class AlphaChoice:
    """:func:`choose_alpha`'s result: α*, whether steering is usable (α* > 0), and why."""

    alpha: float
    usable: bool
    reason: str


def choose_alpha(
    alphas: Sequence[float],
    alignment: Sequence[float | None],
    rise: Sequence[float | None],
    max_rise: float,
) -> AlphaChoice:
    """α* by :data:`RULE`: the highest trait alignment among the α whose mean coherence rise is
    at most ``max_rise`` (α = 0 always qualifies: its rise is 0); ties go to the smaller α; an α
    with no alignment or no rise (no answer with tokens) never qualifies.

    Args:
        alphas: the swept α, 0 among them.
        alignment: the trait alignment at each α.
        rise: the mean coherence rise over α = 0 at each α.
        max_rise: the most coherence may rise (nats per token).

    Raises:
        ValueError: 0 is not among ``alphas``, or the lengths differ.
    """
    if not len(alphas) == len(alignment) == len(rise):
        raise ValueError("choose_alpha(): one alignment and one rise per α")
    if 0.0 not in [float(a) for a in alphas]:
        raise ValueError("choose_alpha(): α = 0 (the unsteered reference) must be among the α")
    ok: list[tuple[float, float]] = []  # (α, trait alignment) of the α within the limit
    for a, t, r in zip(alphas, alignment, rise, strict=True):
        if float(a) == 0.0:
            ok.append((0.0, 0.0 if t is None else float(t)))
        elif t is not None and r is not None and r <= max_rise:  # a NaN rise fails the comparison too
            ok.append((float(a), float(t)))
    best = max(t for _, t in ok)
    alpha = min(a for a, t in ok if t == best)
    if alpha != 0.0:
        return AlphaChoice(alpha, True, f"α = {alpha:g} has the highest trait alignment ({100 * best:.1f}%) of the α "
                           "within the coherence limit")
    if len(ok) == 1:
        return AlphaChoice(0.0, False, f"no α > 0 keeps the coherence rise within {max_rise:g} nats per token: "
                           "steering not usable, the test answers are unsteered")
    return AlphaChoice(0.0, False, "no α > 0 within the coherence limit raises trait alignment above the unsteered "
                       "answers: steering not usable, the test answers are unsteered")
