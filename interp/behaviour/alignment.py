"""Trait alignment (TA): the share of generated answers that a trait classifier trained on the
dataset assigns to their target trait, and word-level contributions for one answer.

The classifier is the dataset's TF-IDF + logistic regression (``finetune.quality``), fitted on
the train split. For a linear model the score of trait c is ``b_c + sum_w x_w * W_cw``; the
contribution of word feature w towards trait c against the others is
``x_w * (W_cw - mean_k W_kw)`` (softmax is invariant to a shift common to all traits), so the
contributions plus the intercept term add up to the trait's centred logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from text2emoji.core.schema import Row


def fit_trait_classifier(rows: Sequence[Row], seed: int = 0) -> Any:
    """TF-IDF (word 1-2-grams) + logistic regression fitted on ``rows`` (a sklearn Pipeline
    with steps ``tfidf`` and ``lr``); ``predict`` takes raw answer texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    model = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
        ("lr", LogisticRegression(C=10.0, max_iter=2000, random_state=seed)),
    ])
    return model.fit([r.answer for r in rows], [r.trait for r in rows])


def trait_classifier(rows: Sequence[Row], seed: int = 0) -> Any:
    """The trait metric model: fitted on the train split of ``rows``."""
    return fit_trait_classifier([r for r in rows if r.split == "train"], seed)


def trait_alignment(generations: Sequence[dict[str, Any]], clf: Any) -> list[dict[str, Any]]:
    """Per (trait, method): n, the share classified as the target trait, and the predicted mix."""
    groups: dict[tuple[str, str], list[str]] = {}
    for g in generations:
        groups.setdefault((g["trait"], g["method"]), []).append(g["text"])
    out = []
    for (trait, method), texts in groups.items():
        pred = clf.predict(texts)
        out.append({
            "trait": trait, "method": method, "n_answers": len(texts),
            "trait_alignment": float(np.mean(pred == trait)),
            "predicted": {c: int(np.sum(pred == c)) for c in clf.classes_},
        })
    return out


def word_contributions(text: str, trait: str, clf: Any) -> list[tuple[str, float]]:
    """Each feature of ``text`` (word or bigram) with its contribution towards ``trait``
    against the other traits, largest first (negative = pushes away)."""
    vec, lr = clf.named_steps["tfidf"], clf.named_steps["lr"]
    x = vec.transform([text]).tocoo()
    c = list(lr.classes_).index(trait)
    w = lr.coef_ - lr.coef_.mean(0, keepdims=True)
    names = vec.get_feature_names_out()
    contrib = [(str(names[j]), float(v * w[c, j])) for j, v in zip(x.col, x.data, strict=True)]
    return sorted(contrib, key=lambda kv: -kv[1])


def centred_logit(text: str, trait: str, clf: Any) -> float:
    """The trait's decision score minus the mean over traits (what the contributions sum to,
    plus the centred intercept)."""
    lr = clf.named_steps["lr"]
    scores = clf.decision_function([text])[0]
    c = list(lr.classes_).index(trait)
    return float(scores[c] - scores.mean())
