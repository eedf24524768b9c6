"""Emoji metrics with bootstrap confidence intervals (answers are the resampling unit).

Sentences of one answer are not independent, so intervals resample whole answers: ESR of a
resample is (sum of emoji sentences) / (sum of sentences) over the drawn answers.
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
    """Emoji rate, ESR and emojis per answer, each with a percentile bootstrap interval.

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
    return out
