"""Bootstrap intervals of emoji metrics against a hand-written resampling loop."""

from __future__ import annotations

import random

import numpy as np
import pytest

from interp.behaviour.emoji_metrics import bootstrap_emoji_metrics, per_answer
from interp.emojis import find_emojis, split_sentences

ANSWERS = ["I love it! 😍 Great.", "Fine.", "Party time 🎉🎉. See you!", "No emojis here. None at all.",
           "Sunny ☀️", "Hmm."]


def test_per_answer_counts():
    a = per_answer(ANSWERS)
    assert a["has_emoji"].tolist() == [1, 0, 1, 0, 1, 0]
    assert a["n_emoji"].tolist() == [1, 0, 2, 0, 1, 0]
    assert a["n_sentences"].tolist() == [2, 1, 2, 2, 1, 1]
    assert a["n_sentences_with_emoji"].tolist() == [1, 0, 1, 0, 1, 0]


def test_bootstrap_matches_a_plain_loop():
    r = bootstrap_emoji_metrics(ANSWERS, n_boot=500, seed=3)
    assert r["emoji_rate"]["value"] == pytest.approx(3 / 6)
    assert r["esr"]["value"] == pytest.approx(3 / 9)
    assert r["emojis_per_answer"]["value"] == pytest.approx(4 / 6)
    # the same resamples, recomputed with a loop over answers
    idx = np.random.default_rng(3).integers(0, 6, size=(500, 6))
    esr = []
    for row in idx:
        sents = [s for i in row for s in split_sentences(ANSWERS[i])]
        with_e = sum(bool(find_emojis(s)) for s in sents)
        esr.append(with_e / len(sents))
    lo, hi = np.percentile(esr, [2.5, 97.5])
    assert (r["esr"]["lo"], r["esr"]["hi"]) == pytest.approx((lo, hi))
    assert r["esr"]["lo"] <= r["esr"]["value"] <= r["esr"]["hi"]


def test_interval_shrinks_with_more_answers():
    rng = random.Random(0)
    small = [rng.choice(ANSWERS) for _ in range(30)]
    big = small * 10
    w = lambda r: r["emoji_rate"]["hi"] - r["emoji_rate"]["lo"]  # noqa: E731
    assert w(bootstrap_emoji_metrics(big)) < w(bootstrap_emoji_metrics(small))


def test_empty_and_all_empty():
    assert bootstrap_emoji_metrics([])["esr"] == {"value": None, "lo": None, "hi": None}
    r = bootstrap_emoji_metrics(["", ""])
    assert r["emoji_rate"]["value"] == 0 and r["esr"]["value"] is None and r["esr"]["lo"] is None


def test_wilson_equals_the_score_formula():
    """Wilson's interval by hand: (p + z²/2n ± z√(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    from scipy.stats import norm

    from interp.behaviour.emoji_metrics import wilson

    z = norm.ppf(0.975)
    for k, n in [(0, 16), (3, 16), (16, 16), (7, 40), (1, 1)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        got = wilson(k, n)
        assert got["lo"] == pytest.approx(max(0.0, centre - half), abs=1e-12)
        assert got["hi"] == pytest.approx(min(1.0, centre + half), abs=1e-12)


def test_no_interval_is_a_point_at_zero_counts():
    from scipy.stats import chi2

    from interp.behaviour.emoji_metrics import wilson

    r = bootstrap_emoji_metrics(["No emoji here.", "None. At all."] * 8, n_boot=300)  # 16 answers
    assert r["emoji_rate"]["value"] == 0 and r["emoji_rate"]["lo"] == 0
    assert r["emoji_rate"]["hi"] == pytest.approx(wilson(0, 16)["hi"]) and r["emoji_rate"]["hi"] > 0.19
    assert r["esr"]["value"] == 0 and r["esr"]["hi"] == pytest.approx(wilson(0, 16)["hi"])
    assert r["emojis_per_answer"]["hi"] == pytest.approx(chi2.ppf(0.975, 2) / 32)  # 3.689 / 16
    full = bootstrap_emoji_metrics(["Yes 🎉"] * 10, n_boot=300)
    assert full["emoji_rate"]["hi"] == 1 and full["emoji_rate"]["lo"] == pytest.approx(wilson(10, 10)["lo"])
    assert full["esr"]["value"] == 1 and full["esr"]["lo"] == pytest.approx(wilson(10, 10)["lo"])
    assert full["esr"]["lo"] < 1
