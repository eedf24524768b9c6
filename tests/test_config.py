"""text2emoji.core.config: typed fields, validate(), the config hash, TOML/YAML files, CLI flags,
precedence defaults < file < flags, and save_config."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from text2emoji.core.config import (
    Config,
    ConfigError,
    add_arguments,
    build_config,
    config_from_args,
    option,
    read_config_file,
    save_config,
)
from text2emoji.core.errors import UserError


@dataclass
class Example(Config):
    """One field of each kind the stages use."""

    input_file: str = option(help="input file", positional=True, metavar="FILE")
    max_steps: int = option(10, help="training steps")
    run_name: str | None = option(None, help="a name for the run")
    mode: Literal["fast", "slow"] = option("fast", help="speed/quality trade-off")
    verbose: bool = option(False, help="print progress")
    emojis: list[str] = option([], help="emojis to keep", flag="--emoji")
    out_dir: str = option("results", help="where outputs go", hash=False)

    def validate(self) -> None:
        if self.mode == "fast" and self.max_steps > 100:
            raise ConfigError(
                "max_steps, mode: more than 100 max_steps needs mode 'slow' "
                f"(got max_steps={self.max_steps}, mode={self.mode!r})"
            )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="example")
    add_arguments(p, Example)
    return p


def from_cli(argv: list[str], config_file: str | Path | None = None) -> Example:
    args = parser().parse_args(argv)
    return config_from_args(Example, args, str(config_file) if config_file else None)


# --------------------------------------------------------------------------- types, validate()


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("max_steps", "three", "int"),
        ("max_steps", 2.5, "int"),
        ("run_name", 7, "str | None"),
        ("mode", "medium", "one of 'fast', 'slow'"),
        ("verbose", "yes", "bool"),
        ("emojis", "🙂", "list"),
        ("emojis", ["🙂", 3], "list"),
        ("input_file", None, "str"),
    ],
)
def test_wrong_type_names_class_field_and_value(field, value, expected):
    kwargs = {"input_file": "in.txt", field: value}
    with pytest.raises(ConfigError) as err:
        Example(**kwargs)
    msg = str(err.value)
    assert msg.startswith(f"Example.{field}: expected ")
    assert expected in msg
    assert msg.endswith(f"got {value!r}")


def test_wrong_type_of_pep604_optional_names_the_type():
    @dataclass
    class Pep604(Config):
        name: str | None = option(None, help="a name")

    with pytest.raises(ConfigError, match=r"^Pep604\.name: expected str \| None, got 7$"):
        Pep604(name=7)


def test_valid_values_are_kept():
    c = Example(input_file="in.txt", max_steps=3, run_name="r", mode="slow", verbose=True,
                emojis=["🙂", "🎉"], out_dir="o")
    assert (c.input_file, c.max_steps, c.run_name, c.mode, c.verbose, c.emojis, c.out_dir) == (
        "in.txt", 3, "r", "slow", True, ["🙂", "🎉"], "o"
    )
    assert Example(input_file="x").run_name is None  # Optional accepts None


def test_bool_is_not_accepted_for_an_int_field():
    with pytest.raises(ConfigError, match=r"Example\.max_steps"):
        Example(input_file="x", max_steps=True)


def test_list_default_is_not_shared_between_instances():
    a, b = Example(input_file="x"), Example(input_file="x")
    a.emojis.append("🙂")
    assert b.emojis == []


def test_validate_rejects_inconsistent_pair_naming_both_fields():
    with pytest.raises(ConfigError) as err:
        Example(input_file="x", max_steps=500)  # mode defaults to "fast"
    msg = str(err.value)
    assert "max_steps" in msg and "mode" in msg and "500" in msg
    # each value alone is fine
    assert Example(input_file="x", max_steps=500, mode="slow").max_steps == 500
    assert Example(input_file="x", max_steps=100, mode="fast").max_steps == 100


def test_replace_rechecks_types_and_validate():
    c = Example(input_file="x")
    assert c.replace(max_steps=5).max_steps == 5
    assert c.max_steps == 10  # the original is untouched
    with pytest.raises(ConfigError, match=r"Example\.max_steps"):
        c.replace(max_steps="5")
    with pytest.raises(ConfigError, match="max_steps, mode"):
        c.replace(max_steps=101)


# --------------------------------------------------------------------------- hash


def test_config_hash_is_stable_across_instances():
    a = Example(input_file="x", emojis=["🙂"], run_name="r")
    b = Example(input_file="x", emojis=["🙂"], run_name="r")
    assert a is not b
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() == a.config_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", a.config_hash())


@pytest.mark.parametrize(
    "change",
    [
        {"input_file": "y"},
        {"max_steps": 11},
        {"run_name": "r"},
        {"mode": "slow"},
        {"verbose": True},
        {"emojis": ["🙂"]},
    ],
)
def test_config_hash_changes_with_each_hashed_field(change):
    base = Example(input_file="x")
    assert base.replace(**change).config_hash() != base.config_hash()


def test_config_hash_ignores_hash_false_field():
    base = Example(input_file="x")
    moved = base.replace(out_dir="somewhere/else")
    assert moved.out_dir != base.out_dir
    assert moved.config_hash() == base.config_hash()


def test_config_hash_depends_on_the_class():
    @dataclass
    class Other(Example):
        pass

    assert Other(input_file="x").config_hash() != Example(input_file="x").config_hash()


# --------------------------------------------------------------------------- files


TOML_TEXT = """
input-file = "from_file.txt"
max-steps = 50
run_name = "toml run"
mode = "slow"
verbose = true
emojis = ["🙂", "🎉"]
"""

YAML_TEXT = """
input-file: from_file.txt
max-steps: 50
run_name: yaml run
mode: slow
verbose: true
emojis: ["🙂", "🎉"]
"""


@pytest.mark.parametrize("suffix, text", [(".toml", TOML_TEXT), (".yaml", YAML_TEXT),
                                          (".yml", YAML_TEXT)])
def test_toml_and_yaml_files_read_with_dashed_keys(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text, encoding="utf-8")
    values = read_config_file(path)
    assert set(values) == {"input_file", "max_steps", "run_name", "mode", "verbose", "emojis"}
    c = build_config(Example, values, str(path))
    assert c.input_file == "from_file.txt"
    assert c.max_steps == 50
    assert c.run_name in ("toml run", "yaml run")
    assert c.mode == "slow" and c.verbose is True
    assert c.emojis == ["🙂", "🎉"]
    assert c.out_dir == "results"  # not in the file: default


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    assert read_config_file(path) == {}
    c = from_cli(["in.txt"], path)
    assert c == Example(input_file="in.txt")


def test_precedence_defaults_then_file_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'max-steps = 50\nmode = "slow"\nrun_name = "file"\nverbose = true\nemojis = ["🙂"]\n',
        encoding="utf-8",
    )
    c = from_cli(["cli.txt", "--max-steps", "120", "--no-verbose", "--emoji", "🎉"], path)
    assert c.input_file == "cli.txt"   # flag only
    assert c.max_steps == 120          # flag beats file
    assert c.mode == "slow"            # file beats default
    assert c.run_name == "file"        # file beats default
    assert c.verbose is False          # --no-verbose beats file's true
    assert c.emojis == ["🎉"]          # flag replaces file's list
    assert c.out_dir == "results"      # default only

    # without flags the file's values stand
    c2 = from_cli(["cli.txt"], path)
    assert (c2.max_steps, c2.mode, c2.run_name, c2.verbose, c2.emojis) == (
        50, "slow", "file", True, ["🙂"]
    )
    # without file or flags: defaults
    assert from_cli(["cli.txt"]) == Example(input_file="cli.txt")


def test_file_value_of_wrong_type_is_config_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('max-steps = "many"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"Example\.max_steps: expected int, got 'many'"):
        from_cli(["in.txt"], path)


def test_file_values_are_validated_together_with_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('mode = "slow"\nmax-steps = 500\n', encoding="utf-8")
    assert from_cli(["in.txt"], path).max_steps == 500
    with pytest.raises(ConfigError, match="max_steps, mode"):
        from_cli(["in.txt", "--mode", "fast"], path)


@pytest.mark.parametrize("suffix, text", [(".toml", 'max_steps = 3\nbogus = 1\n'),
                                          (".yaml", "max_steps: 3\nbogus: 1\n")])
def test_unknown_key_names_file_key_and_valid_fields(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        from_cli(["in.txt"], path)
    msg = str(err.value)
    assert str(path) in msg
    assert "bogus" in msg
    for name in ("input_file", "max_steps", "run_name", "mode", "verbose", "emojis", "out_dir"):
        assert name in msg.split("valid:", 1)[1]


def test_missing_required_field_named(tmp_path):
    with pytest.raises(ConfigError, match=r"src: missing required field\(s\) input_file"):
        build_config(Example, {"max_steps": 3}, "src")


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("bad.toml", b"\xff\xfe max_steps = 3\n", "not UTF-8"),
        ("bad.yaml", b"mode: \xe9t\xe9\n", "not UTF-8"),
        ("bad.toml", b"max_steps = = 3\n", "cannot parse"),
        ("bad.yaml", b"emojis: [1, 2\n", "cannot parse"),
        ("bad.json", b'{"max_steps": 3}\n', ".toml, .yaml or .yml"),
        ("bad.cfg", b"max_steps = 3\n", ".toml, .yaml or .yml"),
        ("list.yaml", b"- 1\n- 2\n", "table/mapping"),
    ],
)
def test_bad_config_file_is_config_error_naming_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        read_config_file(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert expected in msg
    # the same through the CLI route
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        from_cli(["in.txt"], path)


def test_missing_config_file_is_config_error(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read config file")):
        read_config_file(path)


# --------------------------------------------------------------------------- flags


def test_flags_default_to_not_given():
    ns = parser().parse_args(["in.txt"])
    assert vars(ns) == {"input_file": "in.txt"}


def test_bool_flags_both_ways():
    assert from_cli(["x"]).verbose is False
    assert from_cli(["x", "--verbose"]).verbose is True
    assert from_cli(["x", "--verbose", "--no-verbose"]).verbose is False
    assert from_cli(["x", "--no-verbose", "--verbose"]).verbose is True


def test_list_flag_is_repeatable_under_its_custom_name(capsys):
    c = from_cli(["x", "--emoji", "a", "--emoji", "b"])
    assert c.emojis == ["a", "b"]
    assert from_cli(["x"]).emojis == []
    with pytest.raises(SystemExit):
        parser().parse_args(["x", "--emojis", "a"])  # the field name is not the flag
    assert "--emojis" in capsys.readouterr().err


def test_int_and_optional_str_flags():
    c = from_cli(["x", "--max-steps", "7", "--run-name", "named"])
    assert c.max_steps == 7 and c.run_name == "named"


def test_int_flag_rejects_non_int(capsys):
    with pytest.raises(SystemExit) as err:
        parser().parse_args(["x", "--max-steps", "seven"])
    assert err.value.code == 2
    assert "--max-steps" in capsys.readouterr().err


def test_literal_choices_enforced_by_argparse(capsys):
    assert from_cli(["x", "--mode", "slow"]).mode == "slow"
    with pytest.raises(SystemExit) as err:
        parser().parse_args(["x", "--mode", "medium"])
    assert err.value.code == 2
    stderr = capsys.readouterr().err
    assert "medium" in stderr and "fast" in stderr and "slow" in stderr


def test_required_positional(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args([])
    assert "FILE" in capsys.readouterr().err


def test_help_lists_fields_help_and_defaults():
    text = parser().format_help()
    for needle in ("--max-steps", "training steps", "(default: 10)", "--emoji", "(repeatable)",
                   "--verbose", "--no-verbose", "--run-name", "--out-dir", "FILE"):
        assert needle in text


def test_percent_in_help_does_not_break_argparse():
    @dataclass
    class Pct(Config):
        rate: float = option(0.5, help="fraction in % of rows")

    p = argparse.ArgumentParser()
    add_arguments(p, Pct)
    assert "% of rows" in p.format_help()


# --------------------------------------------------------------------------- save_config


def test_save_config_writes_config_hash_and_help(tmp_path):
    c = Example(input_file="in.txt", emojis=["🙂"], max_steps=3)
    path = tmp_path / "sub" / "config.json"
    save_config(c, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["class"] == "Example"
    assert data["config_hash"] == c.config_hash()
    assert data["config"] == c.to_dict()
    assert data["config"]["emojis"] == ["🙂"]
    assert data["help"]["max_steps"] == "training steps"
    assert set(data["help"]) == set(data["config"])
    # round trip: the saved values rebuild the same config
    assert build_config(Example, data["config"]).config_hash() == c.config_hash()
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]


def test_save_config_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    save_config(Example(input_file="old"), path)
    before = path.read_bytes()

    real_write_text = Path.write_text

    def half_write_then_fail(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_config(Example(input_file="new"), path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left



def test_positional_with_a_typed_default():
    from dataclasses import dataclass

    @dataclass
    class Pos(Config):
        count: int = option(3, help="how many", positional=True)

    p = argparse.ArgumentParser()
    add_arguments(p, Pos)
    assert config_from_args(Pos, p.parse_args([]), None).count == 3
    assert config_from_args(Pos, p.parse_args(["5"]), None).count == 5
