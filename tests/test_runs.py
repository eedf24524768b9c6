"""text2emoji.core.runs (atomic writes, stage reuse/force/conflict/resume, provenance) and
interp.textfiles.read_rows (JSONL/text rows, FILE:LINE errors)."""

from __future__ import annotations

import json
import re
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from interp.textfiles import read_rows
from text2emoji.core import runs
from text2emoji.core.config import Config, option
from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_path, atomic_write_json
from text2emoji.core.runs import open_stage, provenance, stage_status


@dataclass
class StageConfig(Config):
    steps: int = option(3, help="steps")
    label: str = option("a", help="label")
    out: str = option("o", help="output dir", hash=False)


class FakeClock:
    """Stands in for the ``time`` module inside runs: each strftime call returns a new stamp, so
    any rewrite of meta.json shows in its started/finished fields."""

    def __init__(self) -> None:
        self.calls = 0

    def strftime(self, fmt: str) -> str:
        self.calls += 1
        return f"T{self.calls:04d}"

    def perf_counter(self) -> float:
        return float(self.calls)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(runs, "time", types.SimpleNamespace(
        strftime=fake.strftime, perf_counter=fake.perf_counter))
    return fake


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def run_stage(out: Path, config: Config, *, force: bool = False, seed: int | None = None,
              result: object = "r") -> bool:
    """Open the stage; compute (write result.json) unless reused. Returns ``reused``."""
    with open_stage(out, "stage", config, force=force, seed=seed) as st:
        if not st.reused:
            st.write_json("result.json", result)
        return st.reused


# --------------------------------------------------------------------------- atomic_path


def test_atomic_path_replaces_on_success_without_leftovers(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old", encoding="utf-8")
    with atomic_path(p) as tmp:
        assert tmp != p and tmp.parent == p.parent
        tmp.write_text("new", encoding="utf-8")
        assert p.read_text(encoding="utf-8") == "old"  # not visible before the block ends
    assert p.read_text(encoding="utf-8") == "new"
    assert listing(tmp_path) == ["x.txt"]


def test_atomic_path_keeps_old_content_and_no_temp_file_when_body_raises(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(p) as tmp:
            tmp.write_text("half-written", encoding="utf-8")
            raise RuntimeError("boom")
    assert p.read_text(encoding="utf-8") == "old"
    assert listing(tmp_path) == ["x.txt"]


def test_atomic_path_new_file_not_created_when_body_raises(tmp_path):
    p = tmp_path / "deep" / "new.json"
    with pytest.raises(ValueError):
        with atomic_path(p) as tmp:
            tmp.write_text("{", encoding="utf-8")
            raise ValueError
    assert not p.exists()
    assert listing(p.parent) == []


def test_atomic_path_body_may_not_write_at_all(tmp_path):
    p = tmp_path / "x.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p):
            raise KeyboardInterrupt  # not an Exception subclass: still cleaned up
    assert listing(tmp_path) == []


def test_atomic_write_json_round_trips_unicode(tmp_path):
    p = tmp_path / "a" / "b.json"
    atomic_write_json(p, {"emoji": "🙂", "path": Path("x")})
    assert "🙂" in p.read_text(encoding="utf-8")  # ensure_ascii=False
    assert json.loads(p.read_text(encoding="utf-8")) == {"emoji": "🙂", "path": "x"}


# --------------------------------------------------------------------------- provenance


def test_provenance_keys():
    prov = provenance(seed=5)
    assert prov["seed"] == 5
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["git"]["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["git"]["commit"])
    assert prov["packages"]["torch"]  # torch is installed: a version string
    assert "cuda" in prov["device"] and "python" in prov["device"]
    assert provenance()["seed"] is None


# --------------------------------------------------------------------------- open_stage


def test_first_run_writes_config_and_complete_meta(tmp_path, clock):
    cfg = StageConfig(steps=4)
    with open_stage(tmp_path, "stage", cfg, seed=11) as st:
        assert st.reused is False
        assert st.dir == tmp_path / "stage"
        # while running: config saved, meta says running
        assert stage_status(st.dir) == ("running", cfg.config_hash())
        st.write_json("result.json", {"x": 1})
    d = tmp_path / "stage"
    assert set(listing(d)) == {"config.json", "meta.json", "result.json"}

    saved = json.loads((d / "config.json").read_text(encoding="utf-8"))
    assert saved["config"] == cfg.to_dict()
    assert saved["config_hash"] == cfg.config_hash()
    assert saved["help"]["steps"] == "steps"

    meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "complete"
    assert meta["stage"] == "stage"
    assert meta["config_hash"] == cfg.config_hash()
    assert set(meta["git"]) >= {"commit", "dirty"}
    assert "torch" in meta["packages"]
    assert isinstance(meta["device"], dict) and "cuda" in meta["device"]
    assert meta["seed"] == 11
    assert meta["started"] and meta["finished"]
    assert meta["finished"] != meta["started"]
    assert stage_status(d) == ("complete", cfg.config_hash())


def test_second_open_reuses_and_does_not_rewrite(tmp_path, clock):
    cfg = StageConfig()
    assert run_stage(tmp_path, cfg, result="first") is False
    d = tmp_path / "stage"
    meta_before = (d / "meta.json").read_bytes()
    config_before = (d / "config.json").read_bytes()
    finished = json.loads(meta_before)["finished"]

    with open_stage(tmp_path, "stage", StageConfig(), seed=99) as st:
        assert st.reused is True
        assert st.read_json("result.json") == "first"
        assert st.meta()["finished"] == finished

    assert json.loads((d / "meta.json").read_bytes())["finished"] == finished
    assert (d / "meta.json").read_bytes() == meta_before
    assert (d / "config.json").read_bytes() == config_before


def test_hash_false_field_change_still_reuses(tmp_path, clock):
    run_stage(tmp_path, StageConfig(out="a"))
    assert run_stage(tmp_path, StageConfig(out="b")) is True


def test_force_recomputes(tmp_path, clock):
    cfg = StageConfig()
    run_stage(tmp_path, cfg, result="first")
    finished = json.loads((tmp_path / "stage" / "meta.json").read_bytes())["finished"]
    assert run_stage(tmp_path, cfg, force=True, result="second") is False
    d = tmp_path / "stage"
    assert json.loads((d / "result.json").read_bytes()) == "second"
    meta = json.loads((d / "meta.json").read_bytes())
    assert meta["status"] == "complete" and meta["finished"] != finished
    # and the next plain open reuses the forced result
    assert run_stage(tmp_path, cfg) is True


def test_different_config_is_error_unless_forced(tmp_path, clock):
    old, new = StageConfig(steps=3), StageConfig(steps=4)
    run_stage(tmp_path, old, result="old")
    d = tmp_path / "stage"
    before = {name: (d / name).read_bytes() for name in listing(d)}

    with pytest.raises(UserError) as err:
        with open_stage(tmp_path, "stage", new):
            pytest.fail("the block must not run")
    msg = str(err.value)
    assert "--force" in msg
    assert str(d) in msg
    assert old.config_hash() in msg and new.config_hash() in msg
    # nothing was touched
    assert {name: (d / name).read_bytes() for name in listing(d)} == before

    assert run_stage(tmp_path, new, force=True, result="new") is False
    assert stage_status(d) == ("complete", new.config_hash())
    saved = json.loads((d / "config.json").read_bytes())
    assert saved["config_hash"] == new.config_hash() and saved["config"]["steps"] == 4
    assert json.loads((d / "result.json").read_bytes()) == "new"
    # now the old config is the stranger
    with pytest.raises(UserError, match="--force"):
        run_stage(tmp_path, old)


def test_exception_leaves_running_and_next_open_resumes(tmp_path, clock):
    cfg = StageConfig()
    d = tmp_path / "stage"
    with pytest.raises(RuntimeError, match="interrupted"):
        with open_stage(tmp_path, "stage", cfg) as st:
            st.write_json("partial.json", [1, 2])
            raise RuntimeError("interrupted")
    assert stage_status(d) == ("running", cfg.config_hash())
    meta = json.loads((d / "meta.json").read_bytes())
    assert "finished" not in meta

    with open_stage(tmp_path, "stage", cfg) as st:
        assert st.reused is False
        assert st.read_json("partial.json") == [1, 2]  # resumed in place: partial results kept
        st.write_json("result.json", "done")
    assert stage_status(d) == ("complete", cfg.config_hash())
    assert run_stage(tmp_path, cfg) is True


def test_interrupted_stage_of_other_config_is_still_protected(tmp_path, clock):
    # interrupted after a partial result (one that a resume would keep); a stage that fails
    # before any result leaves nothing behind (tests/test_bad_input.py)
    with pytest.raises(RuntimeError):
        with open_stage(tmp_path, "stage", StageConfig(steps=1)) as st:
            st.write_json("partial.json", {"done": 1})
            raise RuntimeError
    with pytest.raises(UserError, match="--force"):
        run_stage(tmp_path, StageConfig(steps=2))
    assert run_stage(tmp_path, StageConfig(steps=2), force=True) is False


def test_unreadable_meta_is_treated_as_fresh(tmp_path, clock):
    d = tmp_path / "stage"
    d.mkdir()
    (d / "meta.json").write_text("{not json", encoding="utf-8")
    assert stage_status(d) == (None, None)
    assert stage_status(tmp_path / "absent") == (None, None)
    assert run_stage(tmp_path, StageConfig()) is False
    assert stage_status(d)[0] == "complete"


def test_stages_are_separate_directories(tmp_path, clock):
    with open_stage(tmp_path, "one", StageConfig(steps=1)) as a:
        a.write_json("r.json", 1)
    with open_stage(tmp_path, "two", StageConfig(steps=2)) as b:
        assert b.reused is False
    assert listing(tmp_path) == ["one", "two"]


# --------------------------------------------------------------------------- read_rows


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_read_rows_jsonl_with_line_numbers(tmp_path):
    p = write(tmp_path / "a.jsonl",
              b'{"text": "one", "k": 1}\n\n   \n{"text": "tw\\u00f6 \xf0\x9f\x99\x82"}\r\n{"text": ""}\n')
    rows = read_rows(p)
    assert rows == [
        {"text": "one", "k": 1, "_line": 1},
        {"text": "twö 🙂", "_line": 4},
        {"text": "", "_line": 5},
    ]


def test_read_rows_text_lines(tmp_path):
    p = write(tmp_path / "a.txt", "first line\n\n  \nsecond 🙂\r\n{\"not\": \"json\"}\nlast".encode())
    rows = read_rows(p)
    assert rows == [
        {"text": "first line", "_line": 1},
        {"text": "second 🙂", "_line": 4},
        {"text": '{"not": "json"}', "_line": 5},
        {"text": "last", "_line": 6},
    ]
    assert read_rows(p, field="answer")[0] == {"answer": "first line", "_line": 1}


@pytest.mark.parametrize("name, fmt", [("a.jsonl", "auto"), ("a.txt", "jsonl"), ("a.JSON", "auto"),
                                       ("a.ndjson", "auto")])
def test_read_rows_bom_stripped_jsonl(tmp_path, name, fmt):
    p = write(tmp_path / name, '\ufeff{"text": "x"}\n{"text": "y"}\n'.encode())
    assert read_rows(p, fmt=fmt) == [{"text": "x", "_line": 1}, {"text": "y", "_line": 2}]


def test_read_rows_bom_stripped_text(tmp_path):
    p = write(tmp_path / "a.txt", "\ufeffhello\nworld\n".encode())
    assert read_rows(p) == [{"text": "hello", "_line": 1}, {"text": "world", "_line": 2}]
    # a BOM-only first line is blank and skipped
    q = write(tmp_path / "b.txt", "\ufeff\nworld\n".encode())
    assert read_rows(q) == [{"text": "world", "_line": 2}]


def test_read_rows_fmt_text_overrides_suffix(tmp_path):
    p = write(tmp_path / "a.jsonl", b'{"text": "x"}\n')
    assert read_rows(p, fmt="text") == [{"text": '{"text": "x"}', "_line": 1}]


def test_read_rows_empty_file(tmp_path):
    assert read_rows(write(tmp_path / "e.jsonl", b"")) == []
    assert read_rows(write(tmp_path / "e.txt", b"\n\n")) == []


@pytest.mark.parametrize(
    "content, line, expected",
    [
        (b'{"text": "ok"}\n{"text": oops}\n', 2, "invalid JSON"),
        (b'{"text": "ok"}\n\n["a", "b"]\n', 3, "expected a JSON object, got list"),
        (b'"just a string"\n', 1, "expected a JSON object, got str"),
        (b'{"text": "ok"}\n{"other": "x"}\n', 2, "field 'text' missing"),
        (b'{"text": 5}\n', 1, "field 'text' must be a string, got int"),
        (b'{"text": null}\n', 1, "field 'text' must be a string, got NoneType"),
        (b'{"text": "ok"}\n{"text": "ok"}\n{"text": "\xff"}\n', 3, "not valid UTF-8"),
    ],
)
def test_read_rows_errors_name_file_and_line(tmp_path, content, line, expected):
    p = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(UserError) as err:
        read_rows(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:{line}: ")
    assert expected in msg
    assert "\n" not in msg


def test_read_rows_invalid_utf8_in_text_file(tmp_path):
    p = write(tmp_path / "bad.txt", b"fine\n\nbad \xe9 byte\n")
    with pytest.raises(UserError, match=re.escape(f"{p}:3: not valid UTF-8 (byte 4 of the line)")):
        read_rows(p)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_read_rows_unreadable_path(tmp_path, kind):
    p = tmp_path / "absent.jsonl"
    if kind == "directory":
        p.mkdir()
    with pytest.raises(UserError) as err:
        read_rows(p)
    assert str(err.value).startswith(f"{p}: cannot read")


def test_read_rows_require_extra_fields(tmp_path):
    p = write(tmp_path / "a.jsonl", b'{"text": "x", "label": 1, "id": "a"}\n'
                                    b'{"text": "y", "label": 0}\n')
    with pytest.raises(UserError, match=re.escape(f"{p}:2: field 'id' missing")):
        read_rows(p, require=("label", "id"))
    rows = read_rows(p, require=("label",))
    assert [(r["text"], r["label"], r["_line"]) for r in rows] == [("x", 1, 1), ("y", 0, 2)]
    # a required extra field need not be a string
    assert read_rows(p, require=("label",))[1]["label"] == 0


def test_read_rows_custom_field(tmp_path):
    p = write(tmp_path / "a.jsonl", b'{"answer": "x", "text": 3}\n')
    assert read_rows(p, field="answer") == [{"answer": "x", "text": 3, "_line": 1}]
    with pytest.raises(UserError, match=":1: field 'text' must be a string, got int"):
        read_rows(p)


def test_force_starts_from_an_empty_stage(tmp_path):
    """Partial outputs of a forced stage (checkpoints, generations) are not resumed."""
    cfg = StageConfig()
    with open_stage(tmp_path, "s", cfg) as st:
        st.write_json("partial.json", {"x": 1})
    with open_stage(tmp_path, "s", cfg, force=True) as st:
        assert not st.path("partial.json").exists()
