"""The neuron-probe prompt suite (``prompts/probe_prompts.yaml``), read and validated.

>>> suite = load_probe_suite()
>>> len(suite.prompts) >= 17, sorted(suite.trait_emojis)[0]
(True, 'agreeableness')
>>> {p.kind for p in suite.prompts} >= {"neutral", "neutral_emoji", "trait", "conversational"}
True
>>> suite.n_clusters >= 40, int(suite.clusters()[0]), suite.prompts[0].cluster
(True, 0, 'walk')

Prompts are not independent units: the emoji variants of one sentence, or a sentence with and
without its emoji, are one **cluster**; the statistics resample and permute clusters
(:func:`interp.neurons.sign_flip_test`, :func:`interp.neurons.bootstrap_mean`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from jaxtyping import Int

from interp.emojis import find_emojis
from interp.prompts import prompts_dir
from text2emoji.core.errors import UserError
from text2emoji.core.schema import TRAITS

KINDS = ("neutral", "neutral_emoji", "trait", "trait_emoji", "conversational", "informal")
SUITE_FILE = "probe_prompts.yaml"


@dataclass(frozen=True)
class ProbePrompt:
    id: str
    text: str
    kind: str
    trait: str | None
    pair: str | None
    emoji: str | None
    contrast: str
    cluster: str  # the independent unit it belongs to (default: its pair, else its id)


@dataclass(frozen=True)
class ProbeSuite:
    prompts: list[ProbePrompt]
    trait_emojis: dict[str, list[str]]
    source: str

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    def clusters(self) -> Int[np.ndarray, "prompts"]:  # noqa: F821
        """Each prompt's cluster index, ``0..n_clusters-1`` in order of first appearance."""
        index: dict[str, int] = {}
        return np.array([index.setdefault(p.cluster, len(index)) for p in self.prompts], dtype=np.int64)

    @property
    def n_clusters(self) -> int:
        """How many independent clusters the prompts form."""
        return len({p.cluster for p in self.prompts})

    def pairs(self) -> list[tuple[int, int]]:
        """``(emoji variant index, emoji-free index)`` for every variant of a paired sentence."""
        plain = {p.pair: i for i, p in enumerate(self.prompts) if p.pair and p.emoji is None}
        return [(i, plain[p.pair]) for i, p in enumerate(self.prompts) if p.pair and p.emoji is not None]


def load_probe_suite(path: str | Path | None = None) -> ProbeSuite:
    """Read and check a probe suite (default: the bundled ``prompts/probe_prompts.yaml``).

    Raises:
        UserError: naming the file, the prompt's position and id, and the field that is wrong.
    """
    if path is None:
        where, raw = f"prompts/{SUITE_FILE}", prompts_dir().joinpath(SUITE_FILE).read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot read probe suite {path}: {e.strerror}") from e
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise UserError(f"{where}: invalid YAML ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("prompts"), list):
        raise UserError(f"{where}: expected a mapping with a 'prompts' list")
    emojis = doc.get("trait_emojis") or {}
    if not isinstance(emojis, dict) or set(emojis) != set(TRAITS):
        raise UserError(f"{where}: trait_emojis must list emojis for exactly the traits {', '.join(TRAITS)}")
    for trait, es in emojis.items():
        bad = [e for e in es if find_emojis(e) != [e]] if isinstance(es, list) and es else ["(none)"]
        if bad:
            raise UserError(f"{where}: trait_emojis.{trait}: not single RGI emojis: {bad}")
    prompts, seen = [], set()
    for i, row in enumerate(doc["prompts"], 1):
        at = f"{where}: prompt {i}"
        if not isinstance(row, dict):
            raise UserError(f"{at}: expected a mapping")
        at = f"{at} ({row.get('id', '?')})"
        p = _prompt(row, at)
        if p.id in seen:
            raise UserError(f"{at}: field 'id': duplicate id {p.id!r}")
        seen.add(p.id)
        prompts.append(p)
    suite = ProbeSuite(prompts, {t: list(emojis[t]) for t in TRAITS}, where)
    groups: dict[str, int] = {}
    for p in prompts:
        if p.pair and p.emoji is None:
            groups[p.pair] = groups.get(p.pair, 0) + 1
    for p in prompts:
        if p.pair and groups.get(p.pair) != 1:
            raise UserError(f"{where}: pair {p.pair!r} needs exactly one emoji-free variant (emoji: null)")
    # the variants of one sentence are one unit: a pair split across clusters would let the
    # statistics treat near-copies as independent
    pair_cluster: dict[str, tuple[str, int]] = {}
    for i, p in enumerate(prompts, 1):
        if not p.pair:
            continue
        first = pair_cluster.setdefault(p.pair, (p.cluster, i))
        if first[0] != p.cluster:
            raise UserError(f"{where}: prompt {i} ({p.id}): field 'cluster': {p.cluster!r}, but pair {p.pair!r} "
                            f"is in cluster {first[0]!r} (prompt {first[1]}); a pair must lie inside one cluster")
    if suite.n_clusters < 2:
        raise UserError(f"{where}: the prompts form {suite.n_clusters} cluster(s); cluster-level statistics (sign "
                        "flips, bootstrap, a select/estimate split) need at least 2 (field 'cluster')")
    return suite


def _prompt(row: dict[str, Any], at: str) -> ProbePrompt:
    for field in ("id", "text", "kind", "contrast"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise UserError(f"{at}: field {field!r} must be a non-empty string")
    if row["kind"] not in KINDS:
        raise UserError(f"{at}: field 'kind': {row['kind']!r} is not one of {', '.join(KINDS)}")
    trait = row.get("trait")
    if trait is not None and trait not in TRAITS:
        raise UserError(f"{at}: field 'trait': {trait!r} is not one of {', '.join(TRAITS)}")
    emoji = row.get("emoji")
    found = find_emojis(row["text"])
    if emoji is None and found and row.get("pair"):
        raise UserError(f"{at}: field 'emoji' is null but the text holds {found}")
    if emoji is not None and emoji not in found:
        raise UserError(f"{at}: field 'emoji': {emoji!r} does not occur in the text")
    pair = row.get("pair")
    if pair is not None and (not isinstance(pair, str) or not pair.strip()):
        raise UserError(f"{at}: field 'pair' must be a non-empty string or null")
    cluster = row.get("cluster")
    if cluster is None:
        cluster = pair or row["id"]
    elif not isinstance(cluster, str) or not cluster.strip():
        raise UserError(f"{at}: field 'cluster' must be a non-empty string (or absent: the pair, else the id)")
    return ProbePrompt(row["id"], row["text"], row["kind"], trait, pair, emoji, row["contrast"], cluster)
