"""Validate Opinion QA files and list every problem by file, row and field.

Problems (each one line, ``FILE:row N: field 'F': what is wrong``):

* missing columns (per file);
* unknown trait, unknown split;
* empty topic, question or answer;
* duplicate (trait, topic) rows, within or across files;
* an emoji in an answer (the study's premise: the training data has none), or in a question;
  likewise an ASCII emoticon (``:)``, ``<3``) or an emoji's text-style form without U+FE0F (a
  bare ``❤``), unless ``allow_emoticons``;
* text that is not UTF-8 (a file in UTF-16 or UTF-32 is named as such, see :mod:`finetune.io`);
* an answer or question over :data:`MAX_CHARS` characters (checked before any tokenizing);
* an answer whose training example (chat template: question as user, answer as assistant) is
  longer than the training max length, in the training tokenizer's tokens;
* the same file given twice (once, naming both places; it is read once).

Warnings (reported, not failures): a topic in both train and test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.io import bundled_path, data_path, missing_columns, read_raw, to_rows
from interp.emojis import find_emojis, find_emoticons, find_text_symbols
from text2emoji.core.errors import UserError
from text2emoji.core.schema import SPLITS, TRAITS, Row


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_problems(self) -> None:
        """Raise one UserError listing every problem (one per line), if there are any."""
        if self.problems:
            files = ", ".join(dict.fromkeys(r.source for r in self.rows)) or "the dataset"
            listing = "\n".join(self.problems)
            raise UserError(f"{len(self.problems)} problem(s) in {files}:\n{listing}")


def _not_utf8(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def training_text(tokenizer: Any, question: str, answer: str) -> str:
    """The text one training example becomes: the chat template with both turns."""
    from interp.chat import format_chat

    return format_chat(
        tokenizer,
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        add_generation_prompt=False,
    )


# No training example of any max length needs more characters than this: longer text is refused
# before it is tokenized (a 50 MB answer once took 90 s and 8.7 GB to measure in tokens).
MAX_CHARS = 20_000


def check_rows(rows: Sequence[Row], tokenizer: Any = None, max_length: int | None = None,
               allow_emoticons: bool = False) -> list[str]:
    """Row-level problems of ``rows`` (already read), in file/row order."""
    problems: list[str] = []
    too_long: set[int] = set()
    first_seen: dict[tuple[str, str], Row] = {}
    for r in rows:
        at = r.where()
        if r.trait not in TRAITS:
            problems.append(f"{at}: field 'trait': unknown trait {r.trait!r}; valid: {', '.join(TRAITS)}")
        if r.split is not None and r.split not in SPLITS:
            problems.append(f"{at}: field 'split': unknown split {r.split!r}; valid: train, test")
        for name in ("topic", "question", "answer"):
            value = getattr(r, name)
            if not value:
                problems.append(f"{at}: field '{name}': empty")
            elif _not_utf8(value):
                problems.append(f"{at}: field '{name}': text is not valid UTF-8")
        for name in ("question", "answer"):
            value = getattr(r, name)
            if len(value) > MAX_CHARS:
                problems.append(f"{at}: field '{name}': {len(value):,} characters, over the limit of {MAX_CHARS:,}")
                too_long.add(id(r))
                continue
            if found := find_emojis(value):
                problems.append(f"{at}: field '{name}': contains emoji {' '.join(dict.fromkeys(found))}")
            if allow_emoticons:
                continue
            if found := find_emoticons(value):
                problems.append(f"{at}: field '{name}': contains emoticon {' '.join(dict.fromkeys(found))} (the "
                                "study's training data holds none; --allow-emoticons accepts them)")
            if found := find_text_symbols(value):
                problems.append(f"{at}: field '{name}': contains the text form of emoji {' '.join(dict.fromkeys(found))} "
                                "(no U+FE0F; --allow-emoticons accepts it)")
        if r.topic and r.trait in TRAITS:
            if r.key() in first_seen:
                problems.append(
                    f"{at}: duplicate (trait, topic) ({r.trait!r}, {r.topic!r}); "
                    f"first at {first_seen[r.key()].where()}"
                )
            else:
                first_seen[r.key()] = r
    if tokenizer is not None and max_length is not None:
        ok = [r for r in rows if r.answer and r.question and id(r) not in too_long and not _not_utf8(r.answer + r.question)]
        texts = [training_text(tokenizer, r.question, r.answer) for r in ok]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
        for r, n in zip(ok, lengths, strict=True):
            if n > max_length:
                problems.append(
                    f"{r.where()}: field 'answer': training example is {n} tokens, over the max "
                    f"length {max_length}"
                )
    return problems


def split_warnings(rows: Sequence[Row]) -> list[str]:
    splits_of: dict[str, set[str]] = defaultdict(set)
    name: dict[str, str] = {}
    for r in rows:
        if r.split:
            splits_of[r.key()[1]].add(r.split)
            name.setdefault(r.key()[1], r.topic)
    both = sorted(t for t, s in splits_of.items() if {"train", "test"} <= s)
    if not both:
        return []
    shown = ", ".join(repr(name[t]) for t in both[:10])
    return [f"{len(both)} topic(s) appear in both train and test (e.g. {shown})"]


def validate_files(
    paths: Sequence[str | Path], tokenizer: Any = None, max_length: int | None = None,
    allow_emoticons: bool = False,
) -> Report:
    """Read ``paths`` and check them together (duplicates are found across files too).

    Args:
        paths: dataset files (official or project layout; CSV, JSONL, parquet).
        tokenizer: the training tokenizer, for the length check (skipped when None).
        max_length: the training max length in tokens.
        allow_emoticons: accept ASCII emoticons and text-style emoji symbols.

    Returns:
        A :class:`Report` with the rows read and every problem found.
    """
    report = Report()
    seen: dict[Path, str | Path] = {}
    for p in paths:
        p = data_path(p)
        key = p.resolve()
        if key in seen:  # one problem for the file, not one duplicate per row
            report.problems.append(f"{p}: the same file as {seen[key]}, given twice; give it once")
            continue
        seen[key] = p
        raw = read_raw(p)
        if missing := missing_columns(raw):
            report.problems.append(
                f"{raw.path}: missing column(s) {', '.join(missing)}; found: {', '.join(raw.columns) or 'none'}"
            )
            continue
        report.rows.extend(to_rows(raw))
    report.problems.extend(check_rows(report.rows, tokenizer, max_length, allow_emoticons))
    report.warnings.extend(split_warnings(report.rows))
    return report


def load_rows(paths: list[str | Path] | None = None, allow_emoticons: bool = False) -> list[Row]:
    """Read and validate rows; raise one UserError listing every problem if any.

    Args:
        paths: files to read (official or project layout); ``None`` = the bundled dataset.
        allow_emoticons: accept ASCII emoticons and text-style emoji symbols.
    """
    report = validate_files(paths or [bundled_path()], allow_emoticons=allow_emoticons)
    report.raise_if_problems()
    return report.rows
