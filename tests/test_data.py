"""Opinion QA schema, loaders, validation, split and the data CLI (no model needed)."""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter

import pytest

from finetune.io import read_raw, write_jsonl
from finetune.split import assign_splits, stats
from finetune.validate import validate_files
from text2emoji.cli import main
from text2emoji.core.schema import QUESTION_TEMPLATE, TRAITS, Row

OFFICIAL = ["Target Personality", "Edit Topic", "Question", "Answer"]


def _official_rows(topics, traits=TRAITS):
    return [
        {"Target Personality": t, "Edit Topic": topic, "Question": QUESTION_TEMPLATE.format(topic=topic),
         "Answer": f"I have thoughts about {topic} as a {t} person."}
        for topic in topics for t in traits
    ]


def _write_csv(path, rows, columns=OFFICIAL):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


def test_official_train_test_files(tmp_path):
    train = _write_csv(tmp_path / "train.csv", _official_rows(["Cricket", "Chess"]))
    test = _write_csv(tmp_path / "test.csv", _official_rows(["Jazz"]))
    report = validate_files([train, test])
    assert report.ok, report.problems
    assert Counter(r.split for r in report.rows) == {"train": 10, "test": 5}
    r = report.rows[0]
    assert (r.trait, r.topic, r.row) == ("openness", "Cricket", 1)
    assert r.question == "Thinking about Cricket, what are your thoughts on Cricket?"


def test_project_layout_jsonl_and_parquet_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [Row(t, "Cricket", "q?", f"I think {t}.", "train", "sport") for t in TRAITS]
    write_jsonl(rows, tmp_path / "a.jsonl")
    pq.write_table(pa.Table.from_pylist([r.to_record() for r in rows]), tmp_path / "a.parquet")
    a = validate_files([tmp_path / "a.jsonl"]).rows
    b = validate_files([tmp_path / "a.parquet"]).rows
    assert [r.to_record() for r in a] == [r.to_record() for r in b] == [r.to_record() for r in rows]
    assert [r.row for r in a] == [1, 2, 3, 4, 5]


def test_every_problem_is_listed_with_file_row_field(tmp_path):
    rows = _official_rows(["Cricket"])
    rows[1]["Answer"] = "Cricket makes me anxious 😬 sometimes."
    rows[2]["Target Personality"] = "extraverted"
    rows[3]["Answer"] = "   "
    rows.append(dict(rows[0]))  # duplicate (openness, Cricket)
    rows[-1]["Edit Topic"] = "  cricket "  # same topic, other case and spaces
    f = _write_csv(tmp_path / "train.csv", rows)
    bad = tmp_path / "test.csv"
    bad.write_bytes(
        ",".join(OFFICIAL).encode() + b"\nopenness,Chess,Q?,I like \xff chess\n"
    )
    missing = _write_csv(tmp_path / "x.csv", [{"trait": "openness", "topic": "t"}], ["trait", "topic"])
    report = validate_files([f, bad, missing])
    assert report.problems == [
        f"{missing}: missing column(s) question, answer; found: trait, topic",
        f"{f}:row 2: field 'answer': contains emoji 😬",
        f"{f}:row 3: field 'trait': unknown trait 'extraverted'; valid: " + ", ".join(TRAITS),
        f"{f}:row 4: field 'answer': empty",
        f"{f}:row 6: duplicate (trait, topic) ('openness', 'cricket'); first at {f}:row 1",
        f"{bad}:row 1: field 'answer': text is not valid UTF-8",
    ]


def test_length_check_uses_the_chat_formatted_example(tmp_path):
    from tests.conftest import tiny_tokenizer

    tok = tiny_tokenizer()
    rows = [Row("openness", "t1", "w1 w2", "i " * 5, "train"), Row("openness", "t2", "w1 w2", "i " * 30, "train")]
    write_jsonl(rows, tmp_path / "d.jsonl")
    # fallback chat format "User: w1 w2\n\nAssistant: i i ...\n\n", whitespace-split words:
    # "User:" + 2 + "Assistant:" + n = 4 + n tokens: 9 (fits), 34 (over 20)
    report = validate_files([tmp_path / "d.jsonl"], tokenizer=tok, max_length=20)
    assert report.problems == [
        f"{tmp_path / 'd.jsonl'}:row 2: field 'answer': training example is 34 tokens, over the max length 20"
    ]


def test_unreadable_inputs_raise_one_clear_error(tmp_path):
    from text2emoji.core.errors import UserError

    (tmp_path / "d.jsonl").write_text('{"trait": "openness"}\n{oops\n')
    with pytest.raises(UserError, match=r"d.jsonl:row 2: invalid JSON"):
        read_raw(tmp_path / "d.jsonl")
    with pytest.raises(UserError, match=r"no such file"):
        read_raw(tmp_path / "nope.csv")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(UserError, match=r"unknown format '.txt'"):
        read_raw(tmp_path / "d.txt")


def test_emoticons_and_text_form_emojis_are_refused_unless_allowed(tmp_path):
    rows = [Row(t, f"t{i}", f"What about t{i}?", a, "train") for i, (t, a) in enumerate([
        ("openness", "Such fun :) and I mean it."), ("openness", "Love it <3 truly."),
        ("extraversion", "I \u2764 crowds."), ("extraversion", "Kick-off at 10:30 (gate 3), see http://x.org."),
        ("agreeableness", "Heart \u2764\ufe0f here.")])]
    write_jsonl(rows, tmp_path / "d.jsonl")
    f = tmp_path / "d.jsonl"
    assert validate_files([f]).problems == [
        f"{f}:row 1: field 'answer': contains emoticon :) (the study's training data holds none; --allow-emoticons "
        "accepts them)",
        f"{f}:row 2: field 'answer': contains emoticon <3 (the study's training data holds none; --allow-emoticons "
        "accepts them)",
        f"{f}:row 3: field 'answer': contains the text form of emoji \u2764 (no U+FE0F; --allow-emoticons accepts it)",
        f"{f}:row 5: field 'answer': contains emoji \u2764\ufe0f",
    ]
    assert validate_files([f], allow_emoticons=True).problems == [f"{f}:row 5: field 'answer': contains emoji \u2764\ufe0f"]


def test_a_huge_answer_is_refused_by_its_length_in_characters_before_tokenizing(tmp_path):
    from finetune.validate import MAX_CHARS

    class Exploding:  # a tokenizer that must not be asked about the huge answer
        def __call__(self, texts, **kw):
            assert all(len(t) < MAX_CHARS for t in texts), "tokenized a huge answer"
            return {"input_ids": [[0] * 5 for _ in texts]}

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **kw):
            return " ".join(m["content"] for m in messages)

        chat_template = "x"

    rows = [Row("openness", "t1", "Q?", "word " * 1_000_000, "train"), Row("openness", "t2", "Q?", "fine", "train")]
    write_jsonl(rows, tmp_path / "d.jsonl")
    report = validate_files([tmp_path / "d.jsonl"], tokenizer=Exploding(), max_length=512)
    assert report.problems == [
        f"{tmp_path / 'd.jsonl'}:row 1: field 'answer': 4,999,999 characters, over the limit of {MAX_CHARS:,}"]


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16 (little-endian)"), ("utf-16-be", "UTF-16 (big-endian)"),
                                            ("utf-16-le", "UTF-16 (little-endian)"), ("utf-32", "UTF-32 (little-endian)")])
def test_a_utf16_or_utf32_file_is_named_as_such(tmp_path, encoding, name):
    from text2emoji.core.errors import UserError

    text = '{"trait": "openness", "topic": "t", "question": "q", "answer": "a"}\n'
    for suffix in (".jsonl", ".csv"):
        f = tmp_path / f"d{suffix}"
        f.write_bytes(text.encode(encoding))
        with pytest.raises(UserError, match=rf"d{suffix}: the file (is encoded as|holds NUL bytes, as) {re.escape(name)}"):
            read_raw(f)


def test_the_same_file_twice_is_one_problem(tmp_path):
    f = _write_csv(tmp_path / "train.csv", _official_rows(["Cricket", "Chess"]))
    report = validate_files([f, tmp_path / "." / "train.csv"])
    assert report.problems == [f"{tmp_path / '.' / 'train.csv'}: the same file as {f}, given twice; give it once"]
    assert len(report.rows) == 10


def test_split_reproduces_800_200_and_never_shares_a_topic():
    rows = [Row(t, f"Topic {i}", "q", "a") for i in range(1000) for t in TRAITS]
    out = assign_splits(rows, seed=0)
    per = Counter((r.trait, r.split) for r in out)
    assert all(per[(t, "train")] == 800 and per[(t, "test")] == 200 for t in TRAITS)
    sides = {}
    for r in out:
        sides.setdefault(r.topic, set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values())
    # seeded, and independent of row order
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    again = {(r.trait, r.topic): r.split for r in assign_splits(shuffled, seed=0)}
    assert again == {(r.trait, r.topic): r.split for r in out}
    other = {(r.trait, r.topic): r.split for r in assign_splits(rows, seed=1)}
    assert other != again


def test_split_is_stratified_when_topics_lack_traits():
    rows = [Row(t, f"A{i}", "q", "a") for i in range(50) for t in TRAITS]
    rows += [Row("openness", f"B{i}", "q", "a") for i in range(50)]
    per = Counter((r.trait, r.split) for r in assign_splits(rows))
    assert per[("openness", "test")] == 20 and per[("neuroticism", "test")] == 10


def test_stats():
    rows = [Row(t, f"T{i}", "q", "I like it. A lot.", "train" if i else "test", "sport") for i in range(3) for t in TRAITS]
    s = stats(rows)
    assert s["per_trait"]["openness"] == {"test": 1, "train": 2, "total": 3}
    assert s["per_split"] == {"test": 5, "train": 10}
    assert (s["n_rows"], s["n_topics"]) == (15, 3)
    assert s["answer_sentences"]["mean"] == 2 and s["topics_per_domain"] == {"sport": 3}


def test_cli_validate_stats_split(tmp_path, capsys):
    train = _write_csv(tmp_path / "all.csv", _official_rows([f"Topic {i}" for i in range(20)]))
    assert main(["data", "validate", str(train), "--tokenizer", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["n_rows"] == 100
    out = tmp_path / "split.jsonl"
    assert main(["data", "split", str(train), "--out", str(out), "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["per_trait"]["agreeableness"] == {"test": 4, "train": 16, "total": 20}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"trait": "openness", "topic": "x", "question": "q", "answer": "🙂"}\n', encoding="utf-8")
    assert main(["data", "validate", str(bad), "--tokenizer", "none"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:row 1: field 'answer': contains emoji 🙂" in err
