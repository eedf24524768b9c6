"""Trait alignment and word contributions against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from interp.behaviour.alignment import (
    centred_logit,
    trait_alignment,
    trait_classifier,
    word_contributions,
)
from tests.test_quality import _separable_rows


def test_alignment_counts_match_predictions():
    rows = _separable_rows()
    clf = trait_classifier(rows)
    gens = [{"trait": r.trait, "method": "peft", "text": r.answer} for r in rows if r.split == "test"]
    gens += [{"trait": "openness", "method": "base", "text": r.answer} for r in rows if r.split == "test" and r.trait == "neuroticism"]
    ta = {(t.trait, t.method): t for t in trait_alignment(gens, clf).rows}
    peft = [g for g in gens if g["method"] == "peft" and g["trait"] == "openness"]
    expected = np.mean([clf.predict([g["text"]])[0] == "openness" for g in peft])
    assert ta[("openness", "peft")].trait_alignment == pytest.approx(expected)
    assert ta[("openness", "peft")].trait_alignment > 0.9
    assert ta[("openness", "base")].trait_alignment < 0.1  # neuroticism texts under the openness label
    assert sum(ta[("openness", "base")].predicted.values()) == ta[("openness", "base")].n_answers


def test_contributions_add_up_to_the_centred_logit():
    rows = _separable_rows()
    clf = trait_classifier(rows)
    text = next(r.answer for r in rows if r.trait == "agreeableness" and r.split == "test")
    contrib = word_contributions(text, "agreeableness", clf)
    lr = clf.named_steps["lr"]
    c = list(lr.classes_).index("agreeableness")
    intercept = lr.intercept_[c] - lr.intercept_.mean()
    assert sum(v for _, v in contrib) + intercept == pytest.approx(centred_logit(text, "agreeableness", clf))
    assert contrib[0][1] > 0 and contrib[0][0].startswith("agre")


def test_contribution_examples_take_each_traits_first_peft_answer():
    rows = _separable_rows()
    clf = trait_classifier(rows)
    tests = [r for r in rows if r.split == "test"]
    gens = [{"trait": r.trait, "method": "base", "topic": r.topic, "text": r.answer} for r in tests]
    gens += [{"trait": r.trait, "method": "peft", "topic": r.topic, "text": r.answer} for r in reversed(tests)]
    ta = trait_alignment(gens, clf, examples=True)
    assert set(ta.word_contributions) == {r.trait for r in tests}
    for trait, ex in ta.word_contributions.items():
        first = next(g for g in gens if g["method"] == "peft" and g["trait"] == trait)
        c = word_contributions(first["text"], trait, clf)
        assert (ex.method, ex.topic, ex.text) == ("peft", first["topic"], first["text"])
        assert ex.towards == c[:10] and ex.away == c[::-1][:10]
    d = ta.to_dict()  # what the evaluate stage writes to trait_alignment.json
    assert d["rows"][0] == vars(ta.rows[0]) and d["word_contributions"][trait]["towards"] == ex.towards
    assert trait_alignment(gens, clf).word_contributions == {}


def test_paired_mcnemar_and_wilson_by_hand():
    """Exact McNemar = two-sided binomial on the discordant pairs, by enumeration; the Wilson
    interval sits beside each share."""
    from math import comb

    import numpy as np

    from interp.behaviour.alignment import trait_alignment
    from interp.behaviour.emoji_metrics import wilson

    class Clf:  # an answer is "aligned" when its text says so
        classes_ = np.array(["extraversion", "neuroticism"])

        def predict(self, texts):
            return np.array(["extraversion" if t.startswith("yes") else "neuroticism" for t in texts])

    # peft aligned on 9 of 10 questions, in-context on 3; discordant: 7 peft-only, 1 incontext-only
    peft = ["yes"] * 9 + ["no"]
    ctx = ["yes", "yes", "no", "no", "no", "no", "no", "no", "no", "yes"]
    gens = [{"trait": "extraversion", "method": m, "question": f"q{i}", "text": t}
            for m, texts in (("peft", peft), ("incontext", ctx)) for i, t in enumerate(texts)]
    ta = trait_alignment(gens, Clf())
    (test,) = ta.paired
    assert (test.n_pairs, test.both, test.only_a, test.only_b, test.neither) == (10, 2, 7, 1, 0)
    n, k = 8, 1
    by_hand = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)
    assert test.p_mcnemar == by_hand  # 0.0703125
    row = ta.row("extraversion", "peft")
    assert row.trait_alignment == 0.9 and row.ci == [wilson(9, 10)["lo"], wilson(9, 10)["hi"]]


def test_holm_by_hand():
    """Holm's step-down: sorted p_(i) × (m − i + 1), made monotone, capped at 1."""
    import pytest

    from interp.behaviour.alignment import PairedTest, holm_adjusted

    ps = [0.01, 0.04, 0.03, 0.2, None]
    tests = [PairedTest("t", "peft", "b", 1, 0, 0, 0, 0, p) for p in ps]
    got = [t.p_holm for t in holm_adjusted(tests)]
    # sorted: 0.01×4 = 0.04; 0.03×3 = 0.09; 0.04×2 = 0.08 -> 0.09 (monotone); 0.2×1 = 0.2
    assert got[:4] == pytest.approx([0.04, 0.09, 0.09, 0.2]) and got[4] is None
