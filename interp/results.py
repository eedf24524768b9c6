"""Typed results of the causal tests (:mod:`interp.experiments`): ablation, ablation during
generation and patching, each against random neuron sets.

Every class has ``to_dict()`` (what the ``ablate`` and ``patch`` stages write to
``ablation.json`` / ``patching.json``, key for key) and ``from_dict()`` (its inverse, for files
read back); ``summary()`` gives the stage's ``summary.json`` entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jaxtyping import Float

from interp.neurons import bootstrap_mean


@dataclass(frozen=True)
class Effect:
    """A mean over prompts with its percentile bootstrap interval (prompts resampled)."""

    mean: float
    ci_lo: float
    ci_hi: float

    @classmethod
    def of(cls, values: Float[np.ndarray, "n"], n_boot: int, seed: int) -> Effect:  # noqa: F821
        """
        >>> e = Effect.of(np.array([1.0, 2.0, 3.0]), n_boot=200, seed=0)
        >>> e.mean, e.ci_lo <= 2.0 <= e.ci_hi
        (2.0, True)
        """
        values = np.asarray(values)
        lo, hi = bootstrap_mean(values[:, None], n_boot, seed)
        return cls(float(values.mean()), float(lo[0]), float(hi[0]))

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_lo": self.ci_lo, "ci_hi": self.ci_hi}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Effect:
        return cls(d["mean"], d["ci_lo"], d["ci_hi"])


SEQUENTIAL_HITS = 10  # a sequential control stops once this many draws are as extreme in each tail


@dataclass(frozen=True)
class RandomControl:
    """Where the candidates' mean effect falls among random neuron sets' mean effects.

    ``p`` is two-sided: twice the smaller tail's empirical p, capped at 1, so no direction is
    chosen after looking. A fixed number of draws (:meth:`of`) counts each tail as
    ``(1 + draws at least as extreme) / (1 + draws)``; a sequential control (:meth:`sequential`,
    Besag & Clifford 1991) draws until both tails hold :data:`SEQUENTIAL_HITS` draws at least
    as extreme (p = hits / draws) or ``n_max`` draws are spent (p as with fixed draws): an
    unremarkable candidate costs a few dozen draws, an extreme one up to ``n_max``.
    ``matched_on`` names what the random sets were matched on (``""``: drawn uniformly).
    """

    n_draws: int
    mean: float
    sd: float
    p2_5: float
    p97_5: float
    p: float  # two-sided empirical p
    z: float | None
    draws: list[float]
    matched_on: str = ""
    n_max: int | None = None  # a sequential control's budget of draws (None: fixed draws)

    @classmethod
    def of(cls, candidate: float, random_means: Float[np.ndarray, "draws"], matched_on: str = "") -> RandomControl | None:  # noqa: F821
        """The control of ``candidate`` among ``random_means`` (None: no draws).

        >>> c = RandomControl.of(-1.0, np.array([-2.0, 0.0, 0.5, -1.0]))
        >>> c.p, c.mean, c.n_draws
        (1.0, -0.625, 4)
        >>> RandomControl.of(1.0, np.array([0.0, 0.2])).p, RandomControl.of(-1.0, np.array([0.0, 0.2])).p
        (0.6666666666666666, 0.6666666666666666)
        """
        r = np.asarray(random_means, dtype=float)
        if len(r) == 0:
            return None
        n = len(r)
        low, high = (1 + (r <= candidate).sum()) / (1 + n), (1 + (r >= candidate).sum()) / (1 + n)
        return cls._make(candidate, r, float(min(1.0, 2 * min(low, high))), matched_on, None)

    @classmethod
    def sequential(cls, candidate: float, draws: Iterable[float], n_max: int, matched_on: str = "",
                   hits: int = SEQUENTIAL_HITS) -> RandomControl | None:
        """The control of ``candidate`` among at most ``n_max`` of ``draws`` (an iterable that
        computes each draw when asked), stopping early (see the class docstring).

        >>> middle = RandomControl.sequential(0.5, iter(np.random.default_rng(0).random(1000)), n_max=1000, hits=3)
        >>> middle.n_draws < 20, middle.p == 2 * 3 / middle.n_draws
        (True, True)
        >>> RandomControl.sequential(9.0, iter(np.zeros(50)), n_max=50, hits=3).p == 2 / 51
        True
        """
        got: list[float] = []
        low = high = 0
        for r in draws:
            got.append(float(r))
            low += got[-1] <= candidate
            high += got[-1] >= candidate
            if min(low, high) >= hits or len(got) >= n_max:
                break
        if not got:
            return None
        n, small = len(got), min(low, high)
        p = hits / n if small >= hits else (small + 1) / (n + 1)
        return cls._make(candidate, np.array(got), float(min(1.0, 2 * p)), matched_on, n_max)

    @classmethod
    def _make(cls, candidate: float, r: np.ndarray, p: float, matched_on: str, n_max: int | None) -> RandomControl:
        sd = r.std(ddof=1) if len(r) > 1 else float("nan")
        return cls(
            n_draws=int(len(r)), mean=float(r.mean()), sd=float(sd),
            p2_5=float(np.percentile(r, 2.5)), p97_5=float(np.percentile(r, 97.5)), p=p,
            z=float((candidate - r.mean()) / sd) if sd and sd > 0 else None,
            draws=[float(x) for x in r], matched_on=matched_on, n_max=n_max,
        )

    @property
    def p_floor(self) -> float:
        """The smallest two-sided p this control can give: ``2 / (1 + draws)`` (sequential:
        of its budget ``n_max``)."""
        return min(1.0, 2 / (1 + (self.n_max or self.n_draws)))

    def to_dict(self) -> dict[str, Any]:
        return {"n_draws": self.n_draws, "n_max": self.n_max, "matched_on": self.matched_on, "mean": self.mean,
                "sd": self.sd, "p2_5": self.p2_5, "p97_5": self.p97_5, "p": self.p, "p_floor": self.p_floor,
                "z": self.z, "draws": list(self.draws)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RandomControl | None:
        if d is not None and "p_empirical" in d:
            from text2emoji.core.errors import UserError

            raise UserError("a results file holds a one-sided, unmatched random control from an older version; "
                            "rerun its stage with --force")
        return None if d is None else cls(**{k: v for k, v in d.items() if k != "p_floor"})


@dataclass(frozen=True)
class SetTest:
    """One neuron set's intervention: its per-prompt effect, the mean with its interval, and
    its matched random control (the placebo set of an ablation, a direction of patching)."""

    neurons: list[int]  # the set tested (members with size peers)
    delta: Effect
    per_prompt: list[float]
    control: RandomControl | None
    excluded: list[dict[str, Any]] = field(default_factory=list)  # members without size peers, each alone

    @property
    def p(self) -> float | None:
        return None if self.control is None else self.control.p

    def to_dict(self) -> dict[str, Any]:
        return {"neurons": list(self.neurons), "delta": self.delta.to_dict(), "per_prompt": list(self.per_prompt),
                "random_control": _control_dict(self.control), "excluded": list(self.excluded)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SetTest | None:
        if d is None:
            return None
        return cls(list(d["neurons"]), Effect.from_dict(d["delta"]), list(d["per_prompt"]),
                   RandomControl.from_dict(d["random_control"]), list(d.get("excluded", [])))

    def summary(self) -> dict[str, Any]:
        rc = self.control
        return {"neurons": list(self.neurons), "delta": self.delta.to_dict(), "random_mean": rc.mean if rc else None,
                "p": self.p, "excluded": list(self.excluded)}


def _control_dict(rc: RandomControl | None) -> dict[str, Any] | None:
    return None if rc is None else rc.to_dict()


@dataclass(frozen=True)
class AblationResult:
    """:func:`interp.experiments.ablation_experiment`: the change in ``log P(any emoji)`` with
    the candidate neurons ablated, per prompt and on average, against random sets matched on
    activation size; the placebo set (the ``k`` neurons of largest activation, tested the same
    way) beside it. ``p_holm`` is filled in by whoever knows the family of tests (the stage)."""

    mode: str
    k: int
    neurons: list[int]
    emojis: list[str]
    method: str  # "cached last layer (exact)" or "full forward passes"
    n_prompts: int
    baseline_logprob: Effect
    candidate_delta: Effect
    per_prompt_delta: list[float]
    random_control: RandomControl | None
    placebo: SetTest | None = None
    p_holm: float | None = None
    tested: list[int] | None = None  # the candidates with size peers: what candidate_delta ablates
    excluded: list[dict[str, Any]] = field(default_factory=list)  # candidates without, each ablated alone

    @property
    def p(self) -> float | None:
        return None if self.random_control is None else self.random_control.p

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "k": self.k, "neurons": list(self.neurons), "emojis": list(self.emojis),
            "method": self.method, "n_prompts": self.n_prompts, "baseline_logprob": self.baseline_logprob.to_dict(),
            "candidate_delta": self.candidate_delta.to_dict(), "per_prompt_delta": list(self.per_prompt_delta),
            "random_control": _control_dict(self.random_control),
            "placebo": None if self.placebo is None else self.placebo.to_dict(), "p_holm": self.p_holm,
            "tested": self.tested, "excluded": list(self.excluded),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AblationResult:
        return cls(**{**d, "baseline_logprob": Effect.from_dict(d["baseline_logprob"]),
                      "candidate_delta": Effect.from_dict(d["candidate_delta"]),
                      "random_control": RandomControl.from_dict(d["random_control"]),
                      "placebo": SetTest.from_dict(d.get("placebo"))})

    def summary(self) -> dict[str, Any]:
        """The ``ablate`` stage's summary of one mode."""
        return {"delta": self.candidate_delta.to_dict(), **_control_summary(self.random_control),
                "p_holm": self.p_holm, "tested": self.tested, "excluded": list(self.excluded),
                "placebo": None if self.placebo is None else self.placebo.summary()}


def _control_summary(rc: RandomControl | None) -> dict[str, Any]:
    return {"random_mean": rc.mean if rc else None, "p": rc.p if rc else None,
            "matched_on": rc.matched_on if rc else None, "n_random": rc.n_draws if rc else 0,
            "n_random_max": (rc.n_max or rc.n_draws) if rc else 0,
            "p_floor": rc.p_floor if rc else None}


@dataclass(frozen=True)
class GenerationMetrics:
    """Emoji rate and ESR (each ``{value, lo, hi}``) of a set of answers, and its top emojis."""

    emoji_rate: dict[str, Any]
    esr: dict[str, Any]
    top_emojis: list[Any]  # [emoji, count] pairs, most frequent first

    def to_dict(self) -> dict[str, Any]:
        return {"emoji_rate": self.emoji_rate, "esr": self.esr, "top_emojis": self.top_emojis}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationMetrics:
        return cls(d["emoji_rate"], d["esr"], d["top_emojis"])


@dataclass(frozen=True)
class GenerationAblation:
    """:func:`interp.experiments.ablation_generation`: generated answers intact, with the
    candidates ablated and with random sets ablated."""

    mode: str
    k: int
    n_questions: int
    decode: dict[str, Any]
    intact: GenerationMetrics
    ablated: GenerationMetrics
    random: list[GenerationMetrics]
    examples: list[dict[str, str]]  # first five: question, intact, ablated
    matched_on: str = ""  # what the random sets were matched on ("": drawn uniformly)
    # per question, intact vs ablated: [both with an emoji, intact only, ablated only, neither],
    # and the exact McNemar p (two-sided) of a change in the emoji rate
    paired: list[int] | None = None
    p_paired: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "k": self.k, "n_questions": self.n_questions, "decode": self.decode,
                "intact": self.intact.to_dict(), "ablated": self.ablated.to_dict(),
                "random": [m.to_dict() for m in self.random], "examples": self.examples, "matched_on": self.matched_on,
                "paired": self.paired, "p_paired": self.p_paired}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationAblation:
        return cls(**{**d, "intact": GenerationMetrics.from_dict(d["intact"]),
                      "ablated": GenerationMetrics.from_dict(d["ablated"]),
                      "random": [GenerationMetrics.from_dict(m) for m in d["random"]]})

    def summary(self) -> dict[str, Any]:
        return {"emoji_rate_intact": self.intact.emoji_rate["value"], "emoji_rate_ablated": self.ablated.emoji_rate["value"],
                "esr_intact": self.intact.esr["value"], "esr_ablated": self.ablated.esr["value"],
                "emoji_rate_random": [m.emoji_rate["value"] for m in self.random], "p_paired": self.p_paired}


@dataclass(frozen=True)
class TraitAblation:
    """One trait's ablations (:func:`interp.experiments.ablate_trait`): one result per mode on
    the same questions and candidates, and optionally the generation experiment."""

    questions: list[str]
    candidates: list[int]
    modes: dict[str, AblationResult]
    generation: GenerationAblation | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"questions": list(self.questions), "candidates": list(self.candidates)}
        out.update({mode: r.to_dict() for mode, r in self.modes.items()})
        if self.generation is not None:
            out["generation"] = self.generation.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TraitAblation:
        modes = {k: AblationResult.from_dict(v) for k, v in d.items() if k not in ("questions", "candidates", "generation")}
        gen = GenerationAblation.from_dict(d["generation"]) if "generation" in d else None
        return cls(list(d["questions"]), list(d["candidates"]), modes, gen)

    def summary(self) -> dict[str, Any]:
        """The ``ablate`` stage's ``summary.json`` entry of this trait."""
        out: dict[str, Any] = {mode: r.summary() for mode, r in self.modes.items()}
        if self.generation is not None:
            out["generation"] = self.generation.summary()
        return out


@dataclass(frozen=True)
class PatchingResult:
    """:func:`interp.experiments.patching_experiment`: base, post-PEFT and patched
    ``log P(any emoji)``; the patched-minus-base effect and the share of the post − base gap it
    recovers (**forward**: post-PEFT values into the base), and beside it the **reverse** patch
    (base values into the post-PEFT model: the share of the gap it removes). Each direction is
    tested two-sided against random sets matched on the size of the patch; ``p_holm`` and
    ``p_holm_reverse`` are filled in by the stage, which knows the family."""

    k: int
    neurons: list[int]
    emojis: list[str]
    method: str
    n_prompts: int
    base_logprob: Effect
    post_logprob: Effect
    patched_logprob: Effect
    candidate_delta: Effect
    post_minus_base: Effect
    fraction_recovered: float | None  # None where post and base do not differ
    per_prompt_delta: list[float]
    random_control: RandomControl | None
    fraction_recovered_ci: list[float] | None = None  # bootstrap over prompts
    reverse: SetTest | None = None  # delta = reversed - post
    fraction_removed: float | None = None  # (post - reversed) / (post - base)
    fraction_removed_ci: list[float] | None = None
    p_holm: float | None = None
    p_holm_reverse: float | None = None
    tested: list[int] | None = None  # the neurons with size peers: what both directions patch
    excluded: list[dict[str, Any]] = field(default_factory=list)  # neurons without, each patched alone
    questions: list[str] | None = field(default=None)  # the stage records the questions' texts
    per_prompt_gap: list[float] | None = None  # post - base per prompt (what post_minus_base summarises)

    _EFFECTS = ("base_logprob", "post_logprob", "patched_logprob", "candidate_delta", "post_minus_base")

    @property
    def p(self) -> float | None:
        return None if self.random_control is None else self.random_control.p

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.k, "neurons": list(self.neurons), "emojis": list(self.emojis),
                               "method": self.method, "n_prompts": self.n_prompts}
        out.update({name: getattr(self, name).to_dict() for name in self._EFFECTS})
        out.update({"fraction_recovered": self.fraction_recovered, "fraction_recovered_ci": self.fraction_recovered_ci,
                    "per_prompt_delta": list(self.per_prompt_delta), "random_control": _control_dict(self.random_control),
                    "reverse": None if self.reverse is None else self.reverse.to_dict(),
                    "fraction_removed": self.fraction_removed, "fraction_removed_ci": self.fraction_removed_ci,
                    "p_holm": self.p_holm, "p_holm_reverse": self.p_holm_reverse, "tested": self.tested,
                    "excluded": list(self.excluded), "per_prompt_gap": self.per_prompt_gap})
        if self.questions is not None:
            out["questions"] = list(self.questions)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PatchingResult:
        fields = {**d, "random_control": RandomControl.from_dict(d["random_control"]),
                  "reverse": SetTest.from_dict(d.get("reverse"))}
        fields.update({name: Effect.from_dict(d[name]) for name in cls._EFFECTS})
        return cls(**fields)

    def summary(self) -> dict[str, Any]:
        """The ``patch`` stage's ``summary.json`` entry."""
        rev = self.reverse
        return {"delta": self.candidate_delta.to_dict(), "post_minus_base": self.post_minus_base.to_dict(),
                "fraction_recovered": self.fraction_recovered, "fraction_recovered_ci": self.fraction_recovered_ci,
                **_control_summary(self.random_control), "p_holm": self.p_holm, "tested": self.tested,
                "excluded": list(self.excluded),
                "reverse": None if rev is None else {**rev.summary(), "fraction_removed": self.fraction_removed,
                                                     "fraction_removed_ci": self.fraction_removed_ci,
                                                     "p_holm": self.p_holm_reverse}}


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (statsmodels) of the p-values given, over all of them as one
    family; ``None`` (no test) stays ``None`` and is not counted.

    >>> holm([0.01, None, 0.04, 0.03])
    [0.03, None, 0.06, 0.06]
    """
    from statsmodels.stats.multitest import multipletests

    have = [i for i, p in enumerate(ps) if p is not None]
    out: list[float | None] = [None] * len(ps)
    if have:
        for i, q in zip(have, multipletests([ps[i] for i in have], method="holm")[1], strict=True):
            out[i] = float(q)
    return out


def with_holm(results: Mapping[str, Any], modes: Sequence[str] = ()) -> dict[str, Any]:
    """``results`` (trait → :class:`TraitAblation` with ``modes``, or trait →
    :class:`PatchingResult`) with ``p_holm`` filled in: Holm over every test among them as one
    family (ablation: traits × modes; patching: traits × {forward, reverse}). Placebos are
    controls, not tests, and stay out of the family."""
    from dataclasses import replace

    out = dict(results)
    if all(isinstance(r, PatchingResult) for r in results.values()):
        names = list(results)
        ps = [results[t].p for t in names] + [results[t].reverse.p if results[t].reverse else None for t in names]
        q = holm(ps)
        for i, t in enumerate(names):
            out[t] = replace(results[t], p_holm=q[i], p_holm_reverse=q[len(names) + i])
        return out
    keys = [(t, m) for t in results for m in modes if m in results[t].modes]
    q = holm([results[t].modes[m].p for t, m in keys])
    for (t, m), qi in zip(keys, q, strict=True):
        out[t] = replace(out[t], modes={**out[t].modes, m: replace(out[t].modes[m], p_holm=qi)})
    return out


def summaries(results: Mapping[str, TraitAblation | PatchingResult], traits: Sequence[str]) -> dict[str, Any]:
    """A stage's ``summary.json``: each of ``traits``' summary, in that order."""
    return {t: results[t].summary() for t in traits}
