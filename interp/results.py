"""Typed results of the causal tests (:mod:`interp.experiments`): ablation, ablation during
generation and patching, each against random neuron sets.

Every class has ``to_dict()`` (what the ``ablate`` and ``patch`` stages write to
``ablation.json`` / ``patching.json``, key for key) and ``from_dict()`` (its inverse, for files
read back); ``summary()`` gives the stage's ``summary.json`` entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class RandomControl:
    """Where the candidates' mean effect falls among random neuron sets' mean effects."""

    n_draws: int
    mean: float
    sd: float
    p2_5: float
    p97_5: float
    p_empirical: float  # one-sided: (1 + draws at least as extreme) / (1 + draws)
    z: float | None
    draws: list[float]

    @classmethod
    def of(cls, candidate: float, random_means: Float[np.ndarray, "draws"], lower_is_stronger: bool) -> RandomControl | None:  # noqa: F821
        """The control of ``candidate`` among ``random_means`` (None: no draws).

        >>> c = RandomControl.of(-1.0, np.array([-2.0, 0.0, 0.5, -1.0]), lower_is_stronger=True)
        >>> c.p_empirical, c.mean, c.n_draws
        (0.6, -0.625, 4)
        >>> RandomControl.of(1.0, np.array([0.0, 0.2]), lower_is_stronger=False).p_empirical
        0.3333333333333333
        """
        r = np.asarray(random_means, dtype=float)
        if len(r) == 0:
            return None
        as_extreme = (r <= candidate) if lower_is_stronger else (r >= candidate)
        sd = r.std(ddof=1) if len(r) > 1 else float("nan")
        return cls(
            n_draws=int(len(r)), mean=float(r.mean()), sd=float(sd),
            p2_5=float(np.percentile(r, 2.5)), p97_5=float(np.percentile(r, 97.5)),
            p_empirical=float((1 + as_extreme.sum()) / (1 + len(r))),
            z=float((candidate - r.mean()) / sd) if sd and sd > 0 else None,
            draws=[float(x) for x in r],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"n_draws": self.n_draws, "mean": self.mean, "sd": self.sd, "p2_5": self.p2_5,
                "p97_5": self.p97_5, "p_empirical": self.p_empirical, "z": self.z, "draws": list(self.draws)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RandomControl | None:
        return None if d is None else cls(**d)


def _control_dict(rc: RandomControl | None) -> dict[str, Any] | None:
    return None if rc is None else rc.to_dict()


@dataclass(frozen=True)
class AblationResult:
    """:func:`interp.experiments.ablation_experiment`: the change in ``log P(any emoji)`` with
    the candidate neurons ablated, per prompt and on average, against random sets."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "k": self.k, "neurons": list(self.neurons), "emojis": list(self.emojis),
            "method": self.method, "n_prompts": self.n_prompts, "baseline_logprob": self.baseline_logprob.to_dict(),
            "candidate_delta": self.candidate_delta.to_dict(), "per_prompt_delta": list(self.per_prompt_delta),
            "random_control": _control_dict(self.random_control),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AblationResult:
        return cls(**{**d, "baseline_logprob": Effect.from_dict(d["baseline_logprob"]),
                      "candidate_delta": Effect.from_dict(d["candidate_delta"]),
                      "random_control": RandomControl.from_dict(d["random_control"])})

    def summary(self) -> dict[str, Any]:
        """The ``ablate`` stage's summary of one mode."""
        rc = self.random_control
        return {"delta": self.candidate_delta.to_dict(), "random_mean": rc.mean if rc else None,
                "p_empirical": rc.p_empirical if rc else None}


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

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "k": self.k, "n_questions": self.n_questions, "decode": self.decode,
                "intact": self.intact.to_dict(), "ablated": self.ablated.to_dict(),
                "random": [m.to_dict() for m in self.random], "examples": self.examples}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationAblation:
        return cls(**{**d, "intact": GenerationMetrics.from_dict(d["intact"]),
                      "ablated": GenerationMetrics.from_dict(d["ablated"]),
                      "random": [GenerationMetrics.from_dict(m) for m in d["random"]]})

    def summary(self) -> dict[str, Any]:
        return {"emoji_rate_intact": self.intact.emoji_rate["value"], "emoji_rate_ablated": self.ablated.emoji_rate["value"],
                "esr_intact": self.intact.esr["value"], "esr_ablated": self.ablated.esr["value"]}


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
    ``log P(any emoji)``, the patched-minus-base effect and the share of the gap it recovers."""

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
    questions: list[str] | None = field(default=None)  # the stage records the questions' texts

    _EFFECTS = ("base_logprob", "post_logprob", "patched_logprob", "candidate_delta", "post_minus_base")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.k, "neurons": list(self.neurons), "emojis": list(self.emojis),
                               "method": self.method, "n_prompts": self.n_prompts}
        out.update({name: getattr(self, name).to_dict() for name in self._EFFECTS})
        out.update({"fraction_recovered": self.fraction_recovered, "per_prompt_delta": list(self.per_prompt_delta),
                    "random_control": _control_dict(self.random_control)})
        if self.questions is not None:
            out["questions"] = list(self.questions)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PatchingResult:
        fields = {**d, "random_control": RandomControl.from_dict(d["random_control"])}
        fields.update({name: Effect.from_dict(d[name]) for name in cls._EFFECTS})
        return cls(**fields)

    def summary(self) -> dict[str, Any]:
        """The ``patch`` stage's ``summary.json`` entry."""
        rc = self.random_control
        return {"delta": self.candidate_delta.to_dict(), "post_minus_base": self.post_minus_base.to_dict(),
                "fraction_recovered": self.fraction_recovered, "random_mean": rc.mean if rc else None,
                "p_empirical": rc.p_empirical if rc else None}


def summaries(results: Mapping[str, TraitAblation | PatchingResult], traits: Sequence[str]) -> dict[str, Any]:
    """A stage's ``summary.json``: each of ``traits``' summary, in that order."""
    return {t: results[t].summary() for t in traits}
