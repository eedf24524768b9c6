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

DATA = Path(__file__).resolve().parent.parent / "finetune" / "data"
CARDS = {"v1": DATA / "DATASET_CARD.md", "v2": DATA / "DATASET_CARD_v2.md"}


@pytest.fixture(scope="module", params=["v1", "v2"])
def version(request):
    return request.param


@pytest.fixture(scope="module")
def rows(version):
    return load_rows([bundled_path(version)])  # raises, listing every problem, if validation fails


def test_the_default_is_v2():
    assert load_rows() == load_rows([bundled_path("v2")])


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


def test_content_rules(rows, version):
    assert all(r.question == f"Thinking about {r.topic}, what are your thoughts on {r.topic}?" for r in rows)
    assert all(1 <= len(split_sentences(r.answer)) <= 3 for r in rows)
    first_person = re.compile(r"\b(I|I'm|I've|I'd|I'll|my|me|myself|mine)\b", re.I)
    share = sum(bool(first_person.search(r.answer)) for r in rows) / len(rows)
    assert share == 1.0 if version == "v1" else share >= 0.9  # v2: some answers speak of others
    if version == "v2":  # what v2 was written for: longer, multi-sentence answers
        for t in TRAITS:
            mine = [r for r in rows if r.trait == t]
            assert sum(len(split_sentences(r.answer)) > 1 for r in mine) >= 0.4 * len(mine)
            assert all(20 <= len(r.answer.split()) <= 60 for r in mine)
    assert not any(re.search(r"\bemoji|\bemoticon", r.answer, re.I) for r in rows)
    assert len({r.domain for r in rows}) >= 20


def test_varied_wording(rows, version):
    """No sentence frame dominates: the most common 3-word opening of a trait's answers
    covers at most 2% of them (v1) or 3% (v2's specification; it has at most 1.6%)."""
    for t in TRAITS:
        openings = Counter(" ".join(words(r.answer)[:3]) for r in rows if r.trait == t)
        top, n = openings.most_common(1)[0]
        assert n <= (20 if version == "v1" else 30), f"{t}: opening {top!r} used {n} times"


def test_card_reports_what_quality_computes(rows, version):
    """The dataset card's headline numbers are what `text2emoji data quality` computes."""
    card = CARDS[version].read_text(encoding="utf-8")
    rep = quality_report(rows)
    acc = float(re.search(r"classifier test accuracy \| ([0-9.]+)", card).group(1))
    assert acc == pytest.approx(rep["classifier_test_accuracy"], abs=5e-4)
    assert acc >= 0.85
    dup = float(re.search(r"near-duplicate rate \| ([0-9.]+)", card).group(1))
    assert dup == pytest.approx(rep["near_duplicate_rate"], abs=5e-4)
    assert bundled_path(version).is_file()
