"""Emoji metrics with confidence intervals; answers are the independent units.

- Emoji rate (answers with an emoji / answers): a Wilson score interval (statsmodels), which
  stays informative at 0 or n of n (0/16 gives [0, 19.4%] at 95%), unlike a bootstrap.
- ESR and emojis per answer: sentences of one answer are not independent, so intervals
  resample whole answers (ESR of a resample = its emoji sentences / its sentences). Where the
  resamples have no spread (no answer has an emoji, or every sentence has one), the interval is
  never a point: ESR then takes the Wilson bound of that count over the answers, emojis per
  answer the exact Poisson bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from interp.emojis import emoji_stats, find_emojis, has_emoji, split_sentences


def per_answer(answers: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-answer counts: has_emoji, n_emoji, n_sentences, n_sentences_with_emoji."""
    sent = [split_sentences(a) for a in answers]
    return {
        "has_emoji": np.array([has_emoji(a) for a in answers], dtype=float),
        "n_emoji": np.array([len(find_emojis(a)) for a in answers], dtype=float),
        "n_sentences": np.array([len(s) for s in sent], dtype=float),
        "n_sentences_with_emoji": np.array([sum(has_emoji(x) for x in s) for s in sent], dtype=float),
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap_emoji_metrics(
    answers: Sequence[str], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Emoji rate (Wilson interval), ESR and emojis per answer (percentile bootstrap over
    answers, with exact bounds where the resamples have no spread).

    Args:
        answers: generated answers.
        n_boot: bootstrap resamples.
        seed: resampling seed.
        level: interval coverage.

    Returns:
        ``{metric: {"value", "lo", "hi"}}`` for emoji_rate, esr, emojis_per_answer, plus the
        plain counts of :func:`interp.emojis.emoji_stats` under ``"counts"``.

    >>> r = bootstrap_emoji_metrics(["Hi 👋", "No.", "Yes!"], n_boot=200)
    >>> round(r["emoji_rate"]["value"], 3), r["emoji_rate"]["lo"] <= r["emoji_rate"]["value"] <= r["emoji_rate"]["hi"]
    (0.333, True)
    """
    counts = emoji_stats(answers).to_dict()
    n = len(answers)
    out: dict[str, Any] = {"counts": counts, "n_boot": n_boot, "level": level}
    if n == 0:
        for m in ("emoji_rate", "esr", "emojis_per_answer"):
            out[m] = {"value": None, "lo": None, "hi": None}
        return out
    a = per_answer(answers)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = {
        "emoji_rate": a["has_emoji"][idx].mean(1),
        "esr": _ratio(a["n_sentences_with_emoji"][idx].sum(1), a["n_sentences"][idx].sum(1)),
        "emojis_per_answer": a["n_emoji"][idx].mean(1),
    }
    values = {"emoji_rate": counts["emoji_rate"], "esr": counts["esr"], "emojis_per_answer": counts["emojis_per_answer"]}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    for m, b in boots.items():
        b = b[~np.isnan(b)]
        lo, hi = (np.percentile(b, q) if len(b) else (np.nan, np.nan))
        out[m] = {"value": values[m], "lo": None if np.isnan(lo) else float(lo), "hi": None if np.isnan(hi) else float(hi)}
    out["emoji_rate"] = {"value": values["emoji_rate"], **wilson(counts["n_answers_with_emoji"], n, level)}
    _no_point_intervals(out, n, level)
    return out


def wilson(k: int, n: int, level: float = 0.95) -> dict[str, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials.

    >>> {k: round(v, 4) for k, v in wilson(0, 16).items()}
    {'lo': 0.0, 'hi': 0.1936}
    """
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
    # at 0 or n of n the bound is exactly 0 or 1 (the formula lands a rounding error off it)
    return {"lo": 0.0 if k == 0 else float(lo), "hi": 1.0 if k == n else float(hi)}


def _no_point_intervals(out: dict[str, Any], n: int, level: float) -> None:
    """Where the bootstrap had no spread at a boundary, an exact bound with the answers as units:
    ESR at 0 (or 1) the Wilson bound of 0 (or n) of n answers, emojis per answer at 0 the exact
    Poisson upper bound of 0 events in n answers."""
    from scipy.stats import chi2

    esr = out["esr"]
    if esr["value"] is not None and esr["lo"] == esr["hi"]:
        if esr["value"] == 0:
            esr["hi"] = wilson(0, n, level)["hi"]
        elif esr["value"] == 1:
            esr["lo"] = wilson(n, n, level)["lo"]
    epa = out["emojis_per_answer"]
    if epa["value"] == 0 and epa["hi"] == 0:
        epa["hi"] = float(chi2.ppf((1 + level) / 2, 2) / (2 * n))
