"""Assemble the bundled Opinion QA set v2 (``opinion_qa_v2.jsonl``) from its eight part files,
check every row, keep 1,000 topics and split them 800/200 by topic (``finetune.split``, seed 0).

    python finetune/data/assemble_v2.py PARTS_DIR [--out finetune/data/opinion_qa_v2.jsonl]

Checks (any failure stops with the file, row and field): the study's validator
(``finetune.validate``: fields, traits, no emoji, emoticon or emoji text form, no duplicate
(trait, topic)); the question template; 20 to 60 words and 1 to 3 sentences; five traits per
topic; no topic of the trait-metric set (whose independence needs it). A topic that an earlier
part already holds (case-blind) is dropped from the later part; of the rest, the 1,000 topics
whose SHA-256 comes first are kept. Prints the statistics the card reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from finetune.io import write_jsonl  # noqa: E402
from finetune.quality import words  # noqa: E402
from finetune.split import assign_splits  # noqa: E402
from finetune.validate import check_rows  # noqa: E402
from interp.emojis import split_sentences  # noqa: E402
from text2emoji.core.schema import QUESTION_TEMPLATE, TRAITS, Row  # noqa: E402

N_TOPICS = 1000


def stats(rows: list[Row]) -> dict:
    """What the card reports: per trait, sentences, words, "!" and "?", openings, first person."""
    first_person = re.compile(r"\b(I|I'm|I've|I'd|I'll|my|me|myself|mine|we|our|us)\b", re.I)
    out = {"rows": len(rows), "topics": len({r.topic for r in rows}),
           "domains": dict(Counter(r.domain for r in rows if r.trait == TRAITS[0]).most_common())}
    for t in TRAITS:
        mine = [r for r in rows if r.trait == t]
        sent = Counter(min(len(split_sentences(r.answer)), 3) for r in mine)
        n_words = [len(r.answer.split()) for r in mine]
        openings = Counter(" ".join(words(r.answer)[:3]) for r in mine)
        top, n_top = openings.most_common(1)[0]
        out[t] = {"sentences_1_2_3": [sent[1], sent[2], sent[3]],
                  "multi_sentence": round((sent[2] + sent[3]) / len(mine), 3),
                  "words_min_mean_max": [min(n_words), round(sum(n_words) / len(mine), 1), max(n_words)],
                  "exclamation": round(sum("!" in r.answer for r in mine) / len(mine), 3),
                  "question_mark": round(sum("?" in r.answer for r in mine) / len(mine), 3),
                  "top_opening": [top, n_top, round(n_top / len(mine), 4)],
                  "first_person": round(sum(bool(first_person.search(r.answer)) for r in mine) / len(mine), 3),
                  "topic_first": round(sum(r.answer.lower().startswith(r.topic.lower()) for r in mine) / len(mine), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", type=Path)
    ap.add_argument("--out", type=Path, default=HERE / "opinion_qa_v2.jsonl")
    args = ap.parse_args()
    metric_topics = {json.loads(line)["topic"].lower()
                     for line in (HERE / "trait_metric" / "metric_set.jsonl").read_text(encoding="utf-8").splitlines()}
    rows: list[Row] = []
    problems: list[str] = []
    owner: dict[str, str] = {}
    dropped: Counter = Counter()
    for f in sorted(args.parts.glob("part*.jsonl")):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            d = json.loads(line)
            r = Row(d["trait"], d["topic"].strip(), d["question"], d["answer"].strip(), None, d.get("domain"), str(f), n)
            key = r.topic.lower()
            if owner.setdefault(key, f.name) != f.name:
                dropped[f.name] += 1
                continue
            at = r.where()
            if r.question != QUESTION_TEMPLATE.format(topic=r.topic):
                problems.append(f"{at}: field 'question': not the template")
            if not 20 <= len(r.answer.split()) <= 60:
                problems.append(f"{at}: field 'answer': {len(r.answer.split())} words")
            if not 1 <= len(split_sentences(r.answer)) <= 3:
                problems.append(f"{at}: field 'answer': {len(split_sentences(r.answer))} sentences")
            if key in metric_topics:
                problems.append(f"{at}: field 'topic': {r.topic!r} is a topic of the trait-metric set")
            rows.append(r)
    problems += check_rows(rows)
    per_topic = Counter(r.topic.lower() for r in rows)
    problems += [f"topic {t!r}: {k} rows, not 5" for t, k in per_topic.items() if k != 5]
    if problems:
        sys.exit("\n".join(problems))
    keep = set(sorted(per_topic, key=lambda t: hashlib.sha256(t.encode()).hexdigest())[:N_TOPICS])
    rows = assign_splits([r for r in rows if r.topic.lower() in keep], test_fraction=0.2, seed=0)
    write_jsonl(rows, args.out)
    print(json.dumps({"dropped_rows_as_duplicate_topics": dict(dropped), "topics_available": len(per_topic),
                      **stats(rows)}, indent=1))


if __name__ == "__main__":
    main()
