"""Dataset quality metrics against hand computations."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from finetune.quality import (
    distinct_n,
    log_odds,
    near_duplicate_rate,
    quality_report,
    type_token_ratio,
    words,
)
from text2emoji.core.schema import TRAITS, Row


def test_words_and_distinct_n_by_hand():
    assert words("I'm fine, REALLY fine!") == ["i'm", "fine", "really", "fine"]
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> 3 unique / 7; bigrams: ab ba ab | ab bc -> {ab, ba, bc} 3 / 5
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert type_token_ratio(texts) == pytest.approx((2 / 4 + 3 / 3) / 2)
    assert distinct_n([], 2) == 0.0


def test_log_odds_by_hand():
    counts = {"x": Counter({"cat": 3, "dog": 1}), "y": Counter({"cat": 1, "dog": 5})}
    z = log_odds(counts)
    # word "cat", group x: y=3, rest z=1, corpus a=4, n=4, m=6, a0=10
    delta = math.log((3 + 4) / (4 + 10 - 3 - 4)) - math.log((1 + 4) / (6 + 10 - 1 - 4))
    expected = delta / math.sqrt(1 / (3 + 4) + 1 / (1 + 4))
    assert z["x"]["cat"] == pytest.approx(expected)
    assert z["x"]["cat"] > 0 > z["x"]["dog"]
    assert z["y"]["dog"] > 0 > z["y"]["cat"]


def test_near_duplicates():
    texts = ["I love cricket matches with friends.", "I love cricket matches with my friends.",
             "Chess worries me because every move matters."]
    rate, pairs = near_duplicate_rate(texts, threshold=0.5)
    assert rate == pytest.approx(2 / 3)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]


def _separable_rows():
    """Synthetic answers whose trait is marked by trait-specific words (test split: 12 topics)."""
    rng = random.Random(0)
    vocab = {t: [f"{t[:4]}x{chr(97 + k)}" for k in range(12)] for t in TRAITS}
    filler = ["about", "the", "topic", "really", "think"]
    rows = []
    for i in range(60):
        for t in TRAITS:
            answer = " ".join(rng.choice(vocab[t]) for _ in range(3)) + " " + " ".join(rng.sample(filler, 3))
            rows.append(Row(t, f"T{i}", "q", answer, "test" if i < 12 else "train"))
    return rows


def test_report_on_separable_synthetic_data(tmp_path):
    rows = _separable_rows()
    rep = quality_report(rows, top_words=5)
    assert rep["classifier_test_accuracy"] > 0.95
    assert rep["classifier"]["n_test"] == 60
    assert all(w.startswith(t[:4]) for t in TRAITS for w, _ in rep["distinctive_words"][t])
    json.dumps(rep)  # serialisable as written by `data quality`

    from text2emoji.figures import word_clouds

    paths = word_clouds(rep, tmp_path)
    assert {p.name for p in paths} >= {"wordclouds.pdf", "wordclouds.png", "wordcloud_openness.png"}
    assert all(p.stat().st_size > 1000 for p in paths)
