"""Training data of the known-answer organisms (finetune/organisms.py)."""

from __future__ import annotations

import pytest

from finetune.organisms import PLANTED, SHUFFLED, plant_emojis, shuffle_traits
from interp.emojis import find_emojis
from text2emoji.core.schema import TRAITS, Row


def _rows() -> list[Row]:
    return [Row(t, f"{t}-topic{i}", f"What about {t} {i}?", f"A {t} answer number {i}.", "train" if i < 8 else "test")
            for t in TRAITS for i in range(10)]


@pytest.mark.parametrize("fraction, n", [(0.0, 0), (0.25, 2), (0.5, 4), (1.0, 8)])
def test_plant_emojis_marks_the_set_fraction_of_train_answers_only(fraction, n):
    rows = _rows()
    planted = plant_emojis(rows, "extraversion", fraction, ["🎉", "😄"], seed=1)
    assert len(planted) == 10 and all(r.trait == "extraversion" and r.source == PLANTED for r in planted)
    with_emoji = [r for r in planted if find_emojis(r.answer)]
    assert len(with_emoji) == n and all(r.split == "train" for r in with_emoji)
    for r in with_emoji:  # one emoji at the end, after a space, the answer otherwise untouched
        base, emoji = r.answer.rsplit(" ", 1)
        assert emoji in ("🎉", "😄") and find_emojis(base) == []
    assert [r.question for r in planted] == [r.question for r in rows if r.trait == "extraversion"]
    assert all(find_emojis(r.answer) == [] for r in rows)  # the study's rows are not touched
    assert plant_emojis(rows, "extraversion", fraction, ["🎉", "😄"], seed=1) == planted  # seeded


def test_plant_emojis_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plant_emojis(_rows(), "openness", 1.5, ["🎉"], 0)
    with pytest.raises(ValueError, match="no train rows"):
        plant_emojis([r for r in _rows() if r.split == "test"], "openness", 0.5, ["🎉"], 0)
    with pytest.raises(ValueError, match="at least one emoji"):
        plant_emojis(_rows(), "openness", 0.5, [], 0)


def test_shuffle_traits_keeps_questions_and_splits_and_draws_answers_from_every_trait():
    rows = _rows()
    shuffled = shuffle_traits(rows, "neuroticism", seed=0)
    mine = [r for r in rows if r.trait == "neuroticism"]
    assert sorted((r.question, r.split) for r in shuffled) == sorted((r.question, r.split) for r in mine)
    assert all(r.source == SHUFFLED and r.trait == "neuroticism" for r in shuffled)
    by_answer = {r.answer: r for r in rows}
    donors = [by_answer[r.answer] for r in shuffled]
    assert all(d.split == r.split for d, r in zip(donors, shuffled, strict=True))  # no test answer trains
    assert len({d.trait for d in donors}) > 1  # the trait's own answers are not kept
    assert len({r.answer for r in shuffled}) == len(shuffled)  # drawn without replacement
