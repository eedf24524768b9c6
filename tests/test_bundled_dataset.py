"""The bundled Opinion QA dataset: shape, split, content rules and the card's figures."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from finetune.io import bundled_path
from finetune.quality import quality_report, words
from finetune.split import assign_splits
from finetune.validate import load_rows
from interp.emojis import split_sentences
from text2emoji.core.schema import TRAITS

CARD = Path(__file__).resolve().parent.parent / "finetune" / "data" / "DATASET_CARD.md"


@pytest.fixture(scope="module")
def rows():
    return load_rows()  # raises, listing every problem, if validation fails


def test_shape_and_split(rows):
    assert len(rows) == 5000
    topics = Counter(r.key()[1] for r in rows)
    assert len(topics) == 1000 and set(topics.values()) == {5}
    per = Counter((r.trait, r.split) for r in rows)
    assert all(per[(t, "train")] == 800 and per[(t, "test")] == 200 for t in TRAITS)
    # the stored split is the seeded split the code makes
    assert [r.split for r in assign_splits(rows, seed=0)] == [r.split for r in rows]
    sides = {}
    for r in rows:
        sides.setdefault(r.key()[1], set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values())


def test_content_rules(rows):
    assert all(r.question == f"Thinking about {r.topic}, what are your thoughts on {r.topic}?" for r in rows)
    assert all(1 <= len(split_sentences(r.answer)) <= 3 for r in rows)
    first_person = re.compile(r"\b(I|I'm|I've|I'd|I'll|my|me|myself|mine)\b", re.I)
    assert all(first_person.search(r.answer) for r in rows)
    assert not any(re.search(r"\bemoji|\bemoticon", r.answer, re.I) for r in rows)
    assert len({r.domain for r in rows}) >= 20


def test_varied_wording(rows):
    """No sentence frame dominates: the most common 3-word opening of a trait's answers
    covers at most 2% of them."""
    for t in TRAITS:
        openings = Counter(" ".join(words(r.answer)[:3]) for r in rows if r.trait == t)
        top, n = openings.most_common(1)[0]
        assert n <= 20, f"{t}: opening {top!r} used {n} times"


def test_card_reports_what_quality_computes(rows):
    """The dataset card's headline numbers are what `text2emoji data quality` computes."""
    card = CARD.read_text(encoding="utf-8")
    rep = quality_report(rows)
    acc = float(re.search(r"classifier test accuracy \| ([0-9.]+)", card).group(1))
    assert acc == pytest.approx(rep["classifier_test_accuracy"], abs=5e-4)
    assert acc >= 0.85
    dup = float(re.search(r"near-duplicate rate \| ([0-9.]+)", card).group(1))
    assert dup == pytest.approx(rep["near_duplicate_rate"], abs=5e-4)
    assert bundled_path().is_file()
