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
