"""Trait alignment (TA): the share of generated answers that a trait classifier assigns to their
target trait, and word-level contributions for one answer.

The study's classifier is the trait metric (:mod:`interp.behaviour.trait_metric`, fitted on the
independent metric set; it may answer "none"); :func:`trait_classifier` is the dataset's own
TF-IDF + logistic regression fitted on the train split, kept as the baseline it replaced. For a
linear model the score of trait c is ``b_c + sum_w x_w * W_cw``; the
contribution of word feature w towards trait c against the others is
``x_w * (W_cw - mean_k W_kw)`` (softmax is invariant to a shift common to all traits), so the
contributions plus the intercept term add up to the trait's centred logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class AlignmentRow:
    """One (trait, method): how many answers, the share classified as the target trait, and
    how many went to each trait."""

    trait: str
    method: str
    n_answers: int
    trait_alignment: float
    predicted: dict[str, int]
    ci: list[float] = field(default_factory=list)  # 95% Wilson interval of trait_alignment

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """Methods ``a`` and ``b`` on the same questions of one trait: how many answers each got
    aligned, and the exact McNemar test (two-sided binomial on the discordant pairs)."""

    trait: str
    a: str
    b: str
    n_pairs: int
    both: int
    only_a: int
    only_b: int
    neither: int
    p_mcnemar: float | None  # None: no pairs
    p_holm: float | None = None  # Holm-adjusted over every paired test of the call (traits x comparisons)
    diff: float | None = None  # share aligned, a - b
    diff_ci: list[float] = field(default_factory=list)  # 95% Newcombe interval for paired proportions

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ContributionExample:
    """One answer of a trait with its ten features pushing most towards the trait and the ten
    pushing most away (``(feature, contribution)`` pairs, see :func:`word_contributions`)."""

    method: str
    topic: str
    text: str
    towards: list[tuple[str, float]]
    away: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "topic": self.topic, "text": self.text,
                "towards": list(self.towards), "away": list(self.away)}


@dataclass(frozen=True)
class TraitAlignment:
    """:func:`trait_alignment`: one row per (trait, method) in the order the generations give
    them, and per trait a word-contribution example (when asked for)."""

    rows: list[AlignmentRow]
    word_contributions: dict[str, ContributionExample] = field(default_factory=dict)
    paired: list[PairedTest] = field(default_factory=list)

    def row(self, trait: str, method: str) -> AlignmentRow:
        return next(r for r in self.rows if (r.trait, r.method) == (trait, method))

    def to_dict(self) -> dict[str, Any]:
        """``trait_alignment.json``."""
        return {"rows": [r.to_dict() for r in self.rows],
                "word_contributions": {t: e.to_dict() for t, e in self.word_contributions.items()},
                "paired": [p.to_dict() for p in self.paired]}


def trait_alignment(generations: Sequence[dict[str, Any]], clf: Any, *, examples: bool = False) -> TraitAlignment:
    """Per (trait, method): n, the share classified as the target trait, and the predicted mix.
    With ``examples``, also each trait's first PEFT answer (or first answer; generations then
    need a ``topic``) with its word contributions (:func:`contribution_examples`)."""
    from interp.behaviour.emoji_metrics import wilson

    groups: dict[tuple[str, str], list[str]] = {}
    for g in generations:
        groups.setdefault((g["trait"], g["method"]), []).append(g["text"])
    rows = []
    for (trait, method), texts in groups.items():
        pred = clf.predict(texts)
        k = int(np.sum(pred == trait))
        ci = wilson(k, len(texts))
        rows.append(AlignmentRow(trait, method, len(texts), k / len(texts),
                                 {c: int(np.sum(pred == c)) for c in clf.classes_}, [ci["lo"], ci["hi"]]))
    paired = paired_tests(generations, clf)
    return TraitAlignment(rows, contribution_examples(generations, clf) if examples else {}, paired)


def paired_tests(generations: Sequence[dict[str, Any]], clf: Any, a: str = "peft",
                 others: Sequence[str] = ("incontext", "base")) -> list[PairedTest]:
    """Per trait, method ``a`` against each of ``others`` on the questions both answered
    (paired by ``question``): the exact McNemar test (statsmodels) of whether each answer is
    classified as its trait, and the difference in the share aligned with its Newcombe interval
    (:func:`paired_difference_ci`). Generations without a question are not paired."""
    from statsmodels.stats.contingency_tables import mcnemar

    gens = [g for g in generations if g.get("question")]
    preds = clf.predict([g["text"] for g in gens]) if gens else []
    aligned = {(g["trait"], g["method"], g["question"]): bool(p == g["trait"]) for g, p in zip(gens, preds, strict=True)}
    methods = {(t, m) for t, m, _ in aligned}
    tests = []
    for trait in dict.fromkeys(t for t, _, _ in aligned):
        for b in others:
            if (trait, a) not in methods or (trait, b) not in methods:
                continue
            pairs = [(x, aligned[(trait, b, q)]) for (t, m, q), x in aligned.items()
                     if (t, m) == (trait, a) and (trait, b, q) in aligned]
            n11 = sum(x and y for x, y in pairs)
            n10 = sum(x and not y for x, y in pairs)
            n01 = sum(y and not x for x, y in pairs)
            n00 = len(pairs) - n11 - n10 - n01
            p = float(mcnemar([[n11, n10], [n01, n00]], exact=True).pvalue) if pairs else None
            ci = paired_difference_ci(n11, n10, n01, n00) if pairs else []
            tests.append(PairedTest(trait, a, b, len(pairs), n11, n10, n01, n00, p,
                                    diff=(n10 - n01) / len(pairs) if pairs else None, diff_ci=ci))
    return holm_adjusted(tests)


def paired_difference_ci(both: int, a_only: int, b_only: int, neither: int, level: float = 0.95) -> list[float]:
    """The interval of p_a - p_b for paired proportions by Newcombe's hybrid score method
    (Newcombe 1998, Stat Med 17:2635, method 10): the two Wilson intervals combined with the
    pairs' phi correlation (0 where a margin is empty). Never a point: with every pair
    concordant it is ± the Wilson bound of the shared proportion.

    >>> [round(x, 4) for x in paired_difference_ci(0, 0, 0, 16)]
    [-0.1936, 0.1936]
    """
    from interp.behaviour.emoji_metrics import wilson

    n = both + a_only + b_only + neither
    pa, pb = (both + a_only) / n, (both + b_only) / n
    wa, wb = wilson(both + a_only, n, level), wilson(both + b_only, n, level)
    den = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = (both * neither - a_only * b_only) / np.sqrt(den) if den > 0 else 0.0
    d = pa - pb
    lo = d - np.sqrt(max(0.0, (pa - wa["lo"]) ** 2 - 2 * phi * (pa - wa["lo"]) * (wb["hi"] - pb) + (wb["hi"] - pb) ** 2))
    hi = d + np.sqrt(max(0.0, (wa["hi"] - pa) ** 2 - 2 * phi * (wa["hi"] - pa) * (pb - wb["lo"]) + (pb - wb["lo"]) ** 2))
    return [float(max(-1.0, lo)), float(min(1.0, hi))]


def holm_adjusted(tests: list[PairedTest]) -> list[PairedTest]:
    """The tests with ``p_holm``: Holm's step-down adjustment over all of them."""
    from dataclasses import replace

    from interp.results import holm

    return [replace(t, p_holm=q) if q is not None else t for t, q in zip(tests, holm([t.p_mcnemar for t in tests]), strict=True)]


def contribution_examples(generations: Sequence[dict[str, Any]], clf: Any, n: int = 10) -> dict[str, ContributionExample]:
    """Per trait, its first PEFT answer (or its first answer) with the ``n`` features pushing
    most towards the trait and the ``n`` pushing most away."""
    out = {}
    for g in sorted(generations, key=lambda g: g["method"] != "peft"):
        if g["trait"] not in out:
            c = word_contributions(g["text"], g["trait"], clf)
            out[g["trait"]] = ContributionExample(g["method"], g["topic"], g["text"], c[:n], c[::-1][:n])
    return out


def word_contributions(text: str, trait: str, clf: Any) -> list[tuple[str, float]]:
    """Each feature of ``text`` (word or bigram) with its contribution towards ``trait``
    against the other traits, largest first (negative = pushes away)."""
    vec, lr = clf.named_steps["tfidf"], clf.named_steps["lr"]
    x = vec.transform([text]).tocoo()
    c = list(lr.classes_).index(trait)
    w = lr.coef_ - lr.coef_.mean(0, keepdims=True)
    names = [_feature_name(str(n)) for n in vec.get_feature_names_out()]
    contrib = [(names[j], float(v * w[c, j])) for j, v in zip(x.col, x.data, strict=True)]
    return sorted(contrib, key=lambda kv: -kv[1])


def _feature_name(name: str) -> str:
    """A feature as a reader sees it: words as they are, a character n-gram between ‹ ›
    (feature unions prefix their parts' names: ``word__``, ``char__``)."""
    if name.startswith("char__"):
        return f"‹{name.removeprefix('char__')}›"
    return name.removeprefix("word__")


def centred_logit(text: str, trait: str, clf: Any) -> float:
    """The trait's decision score minus the mean over traits (what the contributions sum to,
    plus the centred intercept)."""
    lr = clf.named_steps["lr"]
    scores = clf.decision_function([text])[0]
    c = list(lr.classes_).index(trait)
    return float(scores[c] - scores.mean())
