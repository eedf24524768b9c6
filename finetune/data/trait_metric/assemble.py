"""Assemble the metric set from its parts (one JSONL per trait, one of neutral texts), check
every row, and assign each topic to ``fit`` or ``held_out`` (a quarter of the topics, by a hash
of the topic: the same topic is on one side whatever file it comes from).

    python finetune/data/trait_metric/assemble.py PARTS_DIR [--out metric_set.jsonl]

Checks (any failure stops with the file, row and field): the fields and their values; 12 to
70 words; no emoji, emoticon or emoji text form (``interp.emojis``); no topic of the bundled
Opinion QA set (case-blind); no text twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from interp.emojis import find_emojis, find_emoticons, find_text_symbols  # noqa: E402
from text2emoji.core.schema import TRAITS  # noqa: E402

FIELDS = ("text", "trait", "pole", "topic", "style", "sentences")
STYLES = {"opinion", "anecdote", "fact", "description", "instruction"}


def part_of(topic: str, held_out: float = 0.25) -> str:
    h = int(hashlib.sha256(topic.strip().lower().encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "held_out" if h < held_out else "fit"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", type=Path)
    ap.add_argument("--out", type=Path, default=HERE / "metric_set.jsonl")
    args = ap.parse_args()
    train_topics = {json.loads(line)["topic"].strip().lower()
                    for line in (HERE.parent / "opinion_qa.jsonl").read_text(encoding="utf-8").splitlines() if line}
    rows, problems, seen = [], [], {}
    for f in sorted(args.parts.glob("*.jsonl")):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            at = f"{f.name}:row {n}"
            d = json.loads(line)
            if set(d) != set(FIELDS):
                problems.append(f"{at}: fields {sorted(d)}")
                continue
            t, pole = d["trait"], d["pole"]
            if not ((pole in ("high", "low") and t in TRAITS) or (pole == "neutral" and t is None)):
                problems.append(f"{at}: field 'pole'/'trait': {pole!r} / {t!r}")
            if d["style"] not in STYLES:
                problems.append(f"{at}: field 'style': {d['style']!r}")
            text = d["text"].strip()
            if not 12 <= len(text.split()) <= 70:
                problems.append(f"{at}: field 'text': {len(text.split())} words")
            if find_emojis(text) or find_emoticons(text) or find_text_symbols(text):
                problems.append(f"{at}: field 'text': emoji or emoticon")
            if d["topic"].strip().lower() in train_topics:
                problems.append(f"{at}: field 'topic': {d['topic']!r} is a topic of the bundled dataset")
            key = " ".join(text.lower().split())
            if key in seen:
                problems.append(f"{at}: field 'text': the same text as {seen[key]}")
            seen[key] = at
            rows.append({"text": text, "trait": t, "pole": pole, "topic": d["topic"].strip(), "style": d["style"],
                         "sentences": d["sentences"], "part": part_of(d["topic"]), "source": f.stem})
    if problems:
        sys.exit("\n".join(problems))
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(json.dumps({"rows": len(rows), "held_out": sum(r["part"] == "held_out" for r in rows),
                      "topics": len({r["topic"].lower() for r in rows}), "out": str(args.out)}))


if __name__ == "__main__":
    main()
