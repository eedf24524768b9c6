"""Typed configs (types, validation, files, flags, hash) and run directories (atomic writes,
reuse, force, resume, provenance)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Literal

import pytest

from text2emoji.config import (
    Config,
    ConfigError,
    add_arguments,
    config_from_args,
    option,
    save_config,
)
from text2emoji.errors import UserError
from text2emoji.runs import atomic_path, atomic_write_json, open_stage, stage_status


@dataclass
class Demo(Config):
    """A config with every kind of field."""

    file: str = option(help="input", positional=True)
    steps: int = option(3, help="steps")
    name: str | None = option(None, help="a name")
    mode: Literal["fast", "slow"] = option("fast", help="mode")
    verbose: bool = option(False, help="talk")
    emojis: list[str] = option([], help="emojis", flag="--emoji")
    out: str = option("o", help="output", hash=False)

    def validate(self) -> None:
        if self.mode == "fast" and self.steps > 100:
            raise ConfigError("steps, mode: more than 100 steps needs mode 'slow'")


def parse(argv, config_file=None):
    p = argparse.ArgumentParser()
    add_arguments(p, Demo)
    return config_from_args(Demo, p.parse_args(argv), config_file)


def test_types_and_validation():
    with pytest.raises(ConfigError, match=r"Demo.steps: expected int, got 'three'"):
        Demo(file="f", steps="three")
    with pytest.raises(ConfigError, match=r"Demo.mode: expected one of 'fast', 'slow', got 'medium'"):
        Demo(file="f", mode="medium")
    with pytest.raises(ConfigError, match="steps, mode: more than 100 steps"):
        Demo(file="f", steps=500)
    assert Demo(file="f", steps=500, mode="slow").steps == 500


def test_hash_covers_results_fields_only():
    a = Demo(file="f")
    assert a.config_hash() == Demo(file="f").config_hash()
    assert a.config_hash() != Demo(file="f", steps=4).config_hash()
    assert a.config_hash() == Demo(file="f", out="elsewhere").config_hash()


def test_flags_and_precedence(tmp_path):
    cfg = parse(["in.txt", "--steps", "7", "--verbose", "--emoji", "😀", "--emoji", "🎉"])
    assert (cfg.file, cfg.steps, cfg.verbose, cfg.emojis, cfg.mode) == ("in.txt", 7, True, ["😀", "🎉"], "fast")
    toml = tmp_path / "c.toml"
    toml.write_text('steps = 9\nmode = "slow"\nverbose = true\n')
    cfg = parse(["in.txt", "--no-verbose"], str(toml))
    assert (cfg.steps, cfg.mode, cfg.verbose) == (9, "slow", False)  # file over defaults, flags over file
    yml = tmp_path / "c.yaml"
    yml.write_text("steps: 11\nname: x\n")
    assert parse(["in.txt", "--steps", "12"], str(yml)).steps == 12
    assert parse(["in.txt"], str(yml)).name == "x"
    with pytest.raises(SystemExit):
        parse(["in.txt", "--mode", "medium"])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("c.toml", b"stepz = 1\n", r"c.toml: unknown field\(s\) stepz; valid: emojis, file, mode"),
        ("c.toml", b"steps = \n", r"c.toml: cannot parse config file"),
        ("c.yaml", b"steps: [\n", r"c.yaml: cannot parse config file"),
        ("c.json", b"{}", r"c.json: config file must end in .toml, .yaml or .yml"),
        ("c.toml", b"name = '\xff'\n", r"c.toml: config file is not UTF-8"),
        ("c.toml", b'steps = "x"\n', r"Demo.steps: expected int, got 'x'"),
    ],
)
def test_bad_config_files(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        parse(["in.txt"], str(f))


def test_save_config(tmp_path):
    save_config(Demo(file="f"), tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["steps"] == 3 and saved["help"]["steps"] == "steps"
    assert saved["config_hash"] == Demo(file="f").config_hash()


def test_atomic_path_keeps_old_content_on_error(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert json.loads(p.read_text()) == {"v": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_stage_reuse_force_conflict_and_resume(tmp_path):
    cfg = Demo(file="f")
    with open_stage(tmp_path, "s", cfg, seed=5) as st:
        assert not st.reused
        st.write_json("r.json", {"x": 1})
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["seed"] == 5 and meta["config_hash"] == cfg.config_hash()
    assert {"commit", "dirty"} <= set(meta["git"]) and meta["packages"]["torch"] and "cuda" in meta["device"]
    with open_stage(tmp_path, "s", Demo(file="f", out="other")) as st:
        assert st.reused and st.read_json("r.json") == {"x": 1}
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["finished"] == meta["finished"]
    with open_stage(tmp_path, "s", cfg, force=True) as st:
        assert not st.reused
    with pytest.raises(UserError, match=r"holds results of another config .*--force"):
        with open_stage(tmp_path, "s", Demo(file="f", steps=4)):
            pass
    # interrupted: stays "running", the next open resumes (not reused) and completes
    with pytest.raises(KeyboardInterrupt):
        with open_stage(tmp_path, "t", cfg):
            raise KeyboardInterrupt
    assert stage_status(tmp_path / "t") == ("running", cfg.config_hash())
    with open_stage(tmp_path, "t", cfg) as st:
        assert not st.reused
    assert stage_status(tmp_path / "t")[0] == "complete"
