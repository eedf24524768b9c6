"""A seeded train/test split by topic, stratified by trait, and dataset statistics.

All rows of a topic go to the same side, so no topic is in both train and test. With every
topic answered for every trait (the study's layout: 1,000 topics x 5 traits), taking 20% of
the topics gives exactly 800 train / 200 test answers per trait.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from interp.emojis import split_sentences
from text2emoji.core.schema import TRAITS, Row


def assign_splits(rows: Sequence[Row], test_fraction: float = 0.2, seed: int = 0) -> list[Row]:
    """Return copies of ``rows`` with ``split`` set by a seeded shuffle of their topics.

    Topics are first grouped by the set of traits they have, and each group is split on its
    own, so every trait gets ``test_fraction`` of its topics (rounded) even when some topics
    lack some traits. The result depends only on the rows' topics and traits and the seed, not
    on row order.

    Args:
        rows: the dataset.
        test_fraction: share of topics in the test split (0 < f < 1).
        seed: the shuffle's seed.

    >>> rows = [Row(t, f"topic {i}", "q", "a") for i in range(10) for t in ("openness", "neuroticism")]
    >>> sorted(Counter((r.trait, r.split) for r in assign_splits(rows)).items())
    [(('neuroticism', 'test'), 2), (('neuroticism', 'train'), 8), (('openness', 'test'), 2), (('openness', 'train'), 8)]
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    traits_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        traits_of[r.key()[1]].add(r.trait)
    groups: dict[frozenset[str], list[str]] = defaultdict(list)
    for topic, traits in traits_of.items():
        groups[frozenset(traits)].append(topic)
    rng = random.Random(seed)
    test: set[str] = set()
    for key in sorted(groups, key=lambda k: sorted(k)):
        topics = sorted(groups[key])
        rng.shuffle(topics)
        test.update(topics[: round(len(topics) * test_fraction)])
    return [replace(r, split="test" if r.key()[1] in test else "train") for r in rows]


def stats(rows: Sequence[Row]) -> dict[str, Any]:
    """Counts per trait and split, topics, and answer lengths (what ``data stats`` prints)."""
    per = Counter((r.trait, r.split or "unsplit") for r in rows)
    splits = sorted({s for _, s in per})
    words = [len(r.answer.split()) for r in rows]
    sentences = [len(split_sentences(r.answer)) for r in rows]
    out: dict[str, Any] = {
        "n_rows": len(rows),
        "n_topics": len({r.key()[1] for r in rows}),
        "per_trait": {
            t: {s: per[(t, s)] for s in splits} | {"total": sum(per[(t, s)] for s in splits)}
            for t in TRAITS
            if any(per[(t, s)] for s in splits)
        },
        "per_split": {s: sum(per[(t, s)] for t in TRAITS) for s in splits},
        "answer_words": _summary(words),
        "answer_sentences": _summary(sentences),
    }
    domains = Counter(r.domain for r in rows if r.domain)
    if domains:
        out["topics_per_domain"] = {
            d: len({r.key()[1] for r in rows if r.domain == d}) for d in sorted(domains)
        }
    return out


def _summary(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    s = sorted(values)
    return {"min": s[0], "median": s[len(s) // 2], "mean": round(sum(s) / len(s), 2), "max": s[-1]}
