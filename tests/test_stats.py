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
