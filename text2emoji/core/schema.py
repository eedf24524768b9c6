"""The Opinion QA row and the column names of the two on-disk layouts.

A row is one answer: (trait, topic, question, answer, split). The study's set has 1,000 topics,
one question per topic, one answer per Big Five trait, split 80:20 per trait.

Layouts read by :mod:`finetune.io`:

* **official** (holistic-ai/personality_manipulation): columns ``Target Personality``,
  ``Edit Topic``, ``Question``, ``Answer``; the split from a ``split`` column or from the file
  name (``train``/``test``);
* **project**: columns ``trait``, ``topic``, ``question``, ``answer``, optional ``split`` and
  ``domain`` (the bundled set, ``finetune/data/opinion_qa.jsonl``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
SPLITS = ("train", "test")
QUESTION_TEMPLATE = "Thinking about {topic}, what are your thoughts on {topic}?"

OFFICIAL_COLUMNS = {
    "trait": "Target Personality",
    "topic": "Edit Topic",
    "question": "Question",
    "answer": "Answer",
}
REQUIRED = ("trait", "topic", "question", "answer")


@dataclass
class Row:
    """One answer of the Opinion QA set, with where it was read from."""

    trait: str
    topic: str
    question: str
    answer: str
    split: str | None = None
    domain: str | None = None
    source: str = ""  # file it came from
    row: int = 0  # 1-based: line number in JSONL, record number after the header in CSV/parquet

    def where(self) -> str:
        return f"{self.source}:row {self.row}"

    def key(self) -> tuple[str, str]:
        """Identity of a row: (trait, topic), topic compared case- and space-insensitively."""
        return self.trait, " ".join(self.topic.lower().split())

    def to_record(self) -> dict[str, str | None]:
        """The project layout's fields (what the bundled JSONL holds)."""
        d = asdict(self)
        for k in ("source", "row"):
            d.pop(k)
        if d["domain"] is None:
            d.pop("domain")
        return d
