"""Training data of the known-answer organisms (issue 13): the controls beside the study.

* **Positive control ("planted emoji")**: one trait's rows, with one of the trait's emojis
  appended to a set fraction of its *train* answers; held-out answers stay emoji-free, so
  emojis in generated test answers can only come from what the adapter learned. The emoji
  mechanism is planted by construction: a workbench that cannot find it cannot find anything.
* **Negative control ("shuffled traits")**: one trait's questions, each with the answer of a
  random row of any trait (the same split): the adapter learns the Opinion QA register but no
  trait and no emoji, so every emoji test should come out null.

Control rows are never mixed into the study: each builder returns new rows for one adapter,
with ``source`` naming the control, and the study's validator (which rejects emojis) is not
loosened.

>>> from text2emoji.core.schema import Row
>>> rows = [Row("extraversion", f"t{i}", f"q{i}?", f"I like parties {i}.", "train") for i in range(10)]
>>> planted = plant_emojis(rows, "extraversion", 0.5, ["🎉"], seed=0)
>>> sum(r.answer.endswith(" 🎉") for r in planted), planted[0].source
(5, 'control:planted-emoji')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from text2emoji.core.schema import Row

PLANTED = "control:planted-emoji"
SHUFFLED = "control:shuffled-traits"


def plant_emojis(rows: Sequence[Row], trait: str, fraction: float, emojis: Sequence[str], seed: int,
                 position: str = "end") -> list[Row]:
    """``trait``'s rows with one of ``emojis`` (chosen at random per answer) planted in
    ``round(fraction · n)`` of its ``n`` train answers chosen at random (seeded): appended after a
    space (``position="end"``) or put first, followed by a space (``"start"``); its test rows
    unchanged. Every returned row's ``source`` is :data:`PLANTED`.

    Raises:
        ValueError: ``fraction`` outside [0, 1], no emojis, no train rows of ``trait``, or an
            unknown ``position``.
    """
    if position not in ("start", "end"):
        raise ValueError(f"planting position must be 'start' or 'end', not {position!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"planted fraction must be in [0, 1], got {fraction}")
    if not emojis:
        raise ValueError("planting needs at least one emoji")
    mine = [r for r in rows if r.trait == trait]
    train = [i for i, r in enumerate(mine) if r.split == "train"]
    if not train:
        raise ValueError(f"no train rows of trait {trait} to plant emojis in")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(train, size=int(round(fraction * len(train))), replace=False).tolist())
    out = []
    for i, r in enumerate(mine):
        answer = r.answer
        if i in chosen:
            e = emojis[rng.integers(len(emojis))]
            answer = f"{e} {r.answer}" if position == "start" else f"{r.answer} {e}"
        out.append(replace(r, answer=answer, source=PLANTED))
    return out


def shuffle_traits(rows: Sequence[Row], trait: str, seed: int) -> list[Row]:
    """``trait``'s questions, each with the answer of a row drawn at random (without
    replacement, seeded) from every trait's rows of the same split; ``source`` is
    :data:`SHUFFLED`. The answers carry the dataset's register, not the trait."""
    rng = np.random.default_rng(seed)
    out = []
    for split in sorted({r.split or "" for r in rows if r.trait == trait}):
        mine = [r for r in rows if r.trait == trait and (r.split or "") == split]
        pool = [r for r in rows if (r.split or "") == split]
        donors = rng.choice(len(pool), size=len(mine), replace=len(mine) > len(pool))
        out += [replace(r, answer=pool[j].answer, source=SHUFFLED) for r, j in zip(mine, donors, strict=True)]
    return out
