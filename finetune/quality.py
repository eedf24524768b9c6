"""Quality evidence for an Opinion QA set: can a simple model tell the traits apart, how varied
is the wording, how much is near-duplicated, and which words mark each trait.

* ``classifier``: TF-IDF (word 1-2-grams) + logistic regression trained on the train split and
  scored on the test split (the paper's RoBERTa classifier reached 91.9% on the official data).
* ``diversity``: distinct-1/2 (unique n-grams / all n-grams of the trait's answers) and the
  mean per-answer type-token ratio, per trait.
* ``near_duplicates``: share of answers whose TF-IDF cosine similarity to another answer is at
  least a threshold.
* ``distinctive_words``: weighted log-odds with an informative Dirichlet prior (Monroe, Colaresi
  and Quinn 2008), each trait against all others, as z-scores.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from interp.behaviour.alignment import fit_trait_classifier
from text2emoji.core.schema import TRAITS, Row

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters with inner apostrophes)."""
    return _WORD.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams over ``texts`` (n-grams do not cross texts)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        w = words(t)
        grams.extend(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def type_token_ratio(texts: Sequence[str]) -> float:
    """Mean over texts of each text's unique words / words (distinct-1 is the same ratio over
    the whole set; this one is not inflated by the set's size)."""
    ratios = [len(set(w)) / len(w) for w in map(words, texts) if w]
    return sum(ratios) / len(ratios) if ratios else 0.0


def log_odds(
    counts: dict[str, Counter[str]], prior_scale: float = 1.0
) -> dict[str, dict[str, float]]:
    """Weighted log-odds z-score of every word, each group against the rest.

    With y_w the group's count, z_w the rest's, a_w = prior_scale x corpus count, n and m the
    group's and the rest's totals, a0 = sum of a_w:
    ``delta = log((y+a)/(n+a0-y-a)) - log((z+a)/(m+a0-z-a))``, ``var = 1/(y+a) + 1/(z+a)``,
    score = delta / sqrt(var).
    """
    corpus: Counter[str] = Counter()
    for c in counts.values():
        corpus.update(c)
    a0 = prior_scale * sum(corpus.values())
    total = sum(corpus.values())
    out: dict[str, dict[str, float]] = {}
    for g, c in counts.items():
        n = sum(c.values())
        m = total - n
        scores = {}
        for w, cw in corpus.items():
            a = prior_scale * cw
            y = c[w]
            z = cw - y
            delta = math.log((y + a) / (n + a0 - y - a)) - math.log((z + a) / (m + a0 - z - a))
            scores[w] = delta / math.sqrt(1 / (y + a) + 1 / (z + a))
        out[g] = scores
    return out


def near_duplicate_rate(texts: Sequence[str], threshold: float = 0.8) -> tuple[float, list[tuple[int, int, float]]]:
    """Share of texts with a TF-IDF cosine >= ``threshold`` to another text, and the pairs."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) < 2:
        return 0.0, []
    x = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
    sim = (x @ x.T).tocoo()
    pairs = [(int(i), int(j), float(v)) for i, j, v in zip(sim.row, sim.col, sim.data, strict=True) if i < j and v >= threshold]
    dup = {i for i, _, _ in pairs} | {j for _, j, _ in pairs}
    return len(dup) / len(texts), sorted(pairs, key=lambda p: -p[2])


def classifier(rows: Sequence[Row], seed: int = 0) -> dict[str, Any]:
    """Train the trait classifier on train rows, score it on test rows."""
    from sklearn.metrics import classification_report, confusion_matrix

    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    if not train or not test:
        raise ValueError("the classifier needs rows in both the train and the test split")
    pred = fit_trait_classifier(train, seed).predict([r.answer for r in test])
    gold = [r.trait for r in test]
    labels = [t for t in TRAITS if t in set(gold) | set(pred)]
    report = classification_report(gold, pred, labels=labels, output_dict=True, zero_division=0)
    return {
        "test_accuracy": float(np.mean(np.array(gold) == pred)),
        "n_train": len(train),
        "n_test": len(test),
        "per_trait_f1": {t: round(report[t]["f1-score"], 4) for t in labels},
        "labels": labels,
        "confusion": confusion_matrix(gold, pred, labels=labels).tolist(),
    }


def quality_report(rows: Sequence[Row], top_words: int = 15, seed: int = 0) -> dict[str, Any]:
    """Everything ``text2emoji data quality`` prints (figures are drawn from this)."""
    by_trait = {t: [r.answer for r in rows if r.trait == t] for t in TRAITS}
    by_trait = {t: a for t, a in by_trait.items() if a}
    counts = {t: Counter(w for a in answers for w in words(a)) for t, answers in by_trait.items()}
    z = log_odds(counts)
    rate, pairs = near_duplicate_rate([r.answer for r in rows])
    clf = classifier(rows, seed) if {r.split for r in rows} >= {"train", "test"} else None
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    stop = ENGLISH_STOP_WORDS | {"i'm", "i've", "i'd", "i'll"}  # listed words carry content
    return {
        "classifier_test_accuracy": clf["test_accuracy"] if clf else None,
        "classifier": clf,
        "diversity": {
            t: {
                "distinct_1": round(distinct_n(a, 1), 4),
                "distinct_2": round(distinct_n(a, 2), 4),
                "type_token_ratio": round(type_token_ratio(a), 4),
                "n_answers": len(a),
            }
            for t, a in by_trait.items()
        },
        "near_duplicate_rate": round(rate, 4),
        "near_duplicate_threshold": 0.8,
        "near_duplicate_examples": [
            {"a": rows[i].where(), "b": rows[j].where(), "cosine": round(s, 3)} for i, j, s in pairs[:10]
        ],
        "distinctive_words": {
            t: [[w, round(s, 2)] for w, s in sorted(z[t].items(), key=lambda kv: -kv[1])
                if w not in stop][:top_words]
            for t in by_trait
        },
    }
