"""Calibration: how often each of the workbench's tests says "significant" when, by
construction, there is nothing to find.

Every family of tests gets null experiments built on the run's own model and data, so the
false-positive rate is measured where the claims are made, not on a textbook null:

* **neurons** (family-wise, max-|t| over the layer) and **trace** (mean change of
  log P(any emoji)): the trait's real per-prompt differences ``post - pre`` with each
  cluster's sign flipped at random. The expected change is then exactly 0, while the
  magnitudes and the within-cluster correlation stay those of the real data. A test that
  treats clustered prompts as independent fails here; the same null is also scored with
  per-prompt sign flips to show it (``comparison``). Because the null is built from the sign
  group the cluster test permutes, it checks the implementation and the clustering, not the
  exchangeability assumption itself.
* **ablation** and **patching**: "candidate" sets of ``k`` neurons drawn at random among the
  top decile of the layer by intervention size (activation size; patching: ``|post - base|``),
  less the few neurons without size peers that the tests leave out.
  Chosen without looking at emojis, they have no special role, yet they are large: a control
  of uniformly drawn random neurons calls them significant (``comparison``), matched controls
  should not.

A family's false-positive rate is the share of null experiments with p < α, with its Wilson
interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

from interp.behaviour.emoji_metrics import wilson
from interp.intervene import matched_draws, random_draws, unmatched
from interp.neurons import cluster_index, sign_flip_test
from interp.results import RandomControl

TOP_FRACTION = 0.1  # null candidate sets come from this top share of the layer by size


@dataclass(frozen=True)
class Rate:
    """Null experiments with p < α among ``n_null``, with the Wilson interval."""

    false_positives: int
    n_null: int
    false_positive_rate: float
    ci: list[float]

    @classmethod
    def of(cls, p: Sequence[float], alpha: float) -> Rate:
        """
        >>> Rate.of([0.01, 0.2, 0.6, 0.04], alpha=0.05).false_positive_rate
        0.5
        """
        k = int(sum(x < alpha for x in p))
        w = wilson(k, len(p))
        return cls(k, len(p), k / len(p), [w["lo"], w["hi"]])


@dataclass(frozen=True)
class FamilyCalibration:
    """One family's null experiments: what the null is, the test, the rate and each p."""

    family: str
    null: str
    test: str
    alpha: float
    rate: Rate
    p: list[float]
    comparison: dict[str, Any] | None = None  # the naive test on the same nulls: {"test", "rate", "p"}

    @property
    def false_positive_rate(self) -> float:
        return self.rate.false_positive_rate

    def to_dict(self) -> dict[str, Any]:
        out = {"family": self.family, "null": self.null, "test": self.test, "alpha": self.alpha,
               "n_null": self.rate.n_null, "false_positives": self.rate.false_positives,
               "false_positive_rate": self.rate.false_positive_rate, "ci": self.rate.ci, "p": list(self.p)}
        if self.comparison is not None:
            out["comparison"] = self.comparison
        return out

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.to_dict().items() if k not in ("p", "family")}
        if self.comparison is not None:
            out["comparison"] = {k: v for k, v in self.comparison.items() if k != "p"}
        return out


def _sign_nulls(delta: np.ndarray, clusters: Any, n_null: int, seed: int) -> list[np.ndarray]:
    """``n_null`` copies of ``delta`` ``[rows, cols]``, each cluster's rows times a random sign."""
    idx = cluster_index(clusters, len(delta))
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 2, size=idx.max() + 1) * 2.0 - 1.0)[idx][:, None] * delta for _ in range(n_null)]


def _with_comparison(family: str, null: str, test: str, alpha: float, p: list[float], naive: str,
                     p_naive: list[float]) -> FamilyCalibration:
    return FamilyCalibration(family, null, test, alpha, Rate.of(p, alpha), p,
                             {"test": naive, **asdict(Rate.of(p_naive, alpha)), "p": p_naive})


def calibrate_neurons(delta: Float[np.ndarray, "prompts d"], clusters: Sequence[Any] | np.ndarray, *, n_null: int = 20,
                      n_perm: int = 1000, alpha: float = 0.05, seed: int = 0) -> FamilyCalibration:
    """Family-wise neuron test (smallest max-|t| p over the layer) on cluster-sign-flipped
    copies of one trait's ``post - pre`` differences; compared with per-prompt flips."""
    delta = np.asarray(delta, dtype=np.float64)
    nulls = _sign_nulls(delta, clusters, n_null, seed)
    p = [float(sign_flip_test(x, clusters, n_perm, seed + 1 + i).p_max_t.min()) for i, x in enumerate(nulls)]
    naive = [float(sign_flip_test(x, None, n_perm, seed + 1 + i).p_max_t.min()) for i, x in enumerate(nulls)]
    return _with_comparison(
        "neurons", "the trait's per-prompt post - pre differences, each cluster's sign flipped at random",
        "cluster sign flips, max-|t| over the layer (any neuron with family-wise p < alpha)", alpha, p,
        "per-prompt sign flips (prompts treated as independent)", naive)


def calibrate_trace(change: Float[np.ndarray, "prompts"], clusters: Sequence[Any] | np.ndarray, *, n_null: int = 20,  # noqa: F821
                    n_perm: int = 1000, alpha: float = 0.05, seed: int = 0) -> FamilyCalibration:
    """The trace's test of the mean change of log P(any emoji), on cluster-sign-flipped copies
    of one trait's per-prompt changes; compared with per-prompt flips."""
    col = np.asarray(change, dtype=np.float64)[:, None]
    nulls = _sign_nulls(col, clusters, n_null, seed)
    p = [float(sign_flip_test(x, clusters, n_perm, seed + 1 + i).p_mean[0]) for i, x in enumerate(nulls)]
    naive = [float(sign_flip_test(x, None, n_perm, seed + 1 + i).p_mean[0]) for i, x in enumerate(nulls)]
    return _with_comparison(
        "trace", "the trait's per-prompt change in log P(any emoji), each cluster's sign flipped at random",
        "cluster sign flips, two-sided, on the mean change", alpha, p,
        "per-prompt sign flips (prompts treated as independent)", naive)


def calibrate_sets(family: str, effect: Callable[[Sequence[int]], float], magnitude: Float[np.ndarray, "d"],  # noqa: F821
                   k: int, *, matched_on: str, n_null: int = 20, n_random: int = 50, alpha: float = 0.05,
                   seed: int = 0) -> FamilyCalibration:
    """A neuron-set test (ablation or patching: ``effect(neurons)`` is the mean effect of an
    intervention on them) on null candidate sets: ``k`` neurons drawn at random among the top
    :data:`TOP_FRACTION` of the layer by ``magnitude`` (less the few without size peers, which
    the tests leave out: :func:`interp.intervene.unmatched`), each against up to ``n_random``
    random sets matched on ``magnitude``, drawn sequentially, two-sided: the stages' test. The
    comparison places the same null sets among ``n_random`` uniformly drawn random sets (one
    distribution shared by every null experiment)."""
    mag = np.asarray(magnitude, dtype=float)
    top = np.argsort(-mag, kind="stable")[: max(2 * k, int(round(TOP_FRACTION * len(mag))))]
    top = np.setdiff1d(top, unmatched(mag, top.tolist()))  # the tests leave neurons without size peers out
    if len(top) < k:
        raise ValueError(f"the top {TOP_FRACTION:.0%} of the layer holds {len(top)} neurons with size peers, fewer than k={k}")
    rng = np.random.default_rng(seed)
    massive = unmatched(mag, range(len(mag)))  # out of both controls, as out of the null sets
    uniform = np.array([effect(ns) for ns in random_draws(len(mag), k, massive, n_random, seed + 1)])
    p, naive = [], []
    for i in range(n_null):
        cand = sorted(int(n) for n in rng.choice(top, size=k, replace=False))
        c = effect(cand)
        sets = matched_draws(mag, cand, n_random, seed + 2 + i)
        p.append(RandomControl.sequential(c, (effect(ns) for ns in sets), n_random).p)  # type: ignore[union-attr]
        naive.append(RandomControl.of(c, uniform).p)  # type: ignore[union-attr]
    return _with_comparison(
        family, f"{k} neurons drawn at random among the top {TOP_FRACTION:.0%} of the layer by {matched_on}",
        f"up to {n_random} random sets matched on {matched_on} (sequential), two-sided", alpha, p,
        f"{n_random} uniformly drawn random sets (unmatched), two-sided", naive)


def calibrate_interventions(model: Any, tokenizer: Any, questions: Sequence[str], emojis: Sequence[str], k: int, *,
                            n_null: int = 20, n_random: int = 50, alpha: float = 0.05, seed: int = 0,
                            site: str | None = None, batch_size: int | None = None) -> list[FamilyCalibration]:
    """The ablation (zero, in the post-PEFT model as it stands) and patching (forward: post
    values into the base) families on ``questions`` and ``emojis``: :func:`calibrate_sets`."""
    from interp.capture import pad_id
    from interp.experiments import ablation_runner, patching_runners
    from interp.hooks import DEFAULT_SITE
    from interp.intervene import LastLayerScorer
    from interp.tracing import emoji_pairs
    from text2emoji.core.presets import BATCH_SIZE

    site, batch_size = site or DEFAULT_SITE, batch_size or BATCH_SIZE
    pairs = emoji_pairs(tokenizer, questions, emojis)
    scorer = LastLayerScorer(model, pairs, pad_id=pad_id(tokenizer), batch_size=batch_size, site=site)
    x = scorer.activations()
    _, run = ablation_runner(model, tokenizer, questions, emojis, scorer, site=site, batch_size=batch_size)
    ablation = calibrate_sets("ablation", lambda ns: float(run(ns).mean()), x.float().abs().mean(0).cpu().numpy(), k,
                              matched_on="mean |activation|", n_null=n_null, n_random=n_random, alpha=alpha, seed=seed)
    _, base, fwd, _, magnitude, _ = patching_runners(model, tokenizer, questions, emojis, site=site, batch_size=batch_size,
                                                     post_cache=scorer)  # the same pairs, the same model state
    patching = calibrate_sets("patching", lambda ns: float((fwd(ns) - base).mean()), magnitude, k,
                              matched_on="mean |post - base|", n_null=n_null, n_random=n_random, alpha=alpha, seed=seed)
    return [ablation, patching]
