"""One typed, validated config style for every stage.

A stage's config is a dataclass that subclasses :class:`Config`. Every field carries a help text
(``field(metadata={"help": ...})``); field types are checked at construction (beartype), and
``validate()`` rejects incompatible options with a message naming the fields. The same class
gives the stage's CLI flags (:func:`add_arguments`), reads a TOML or YAML file, and is saved
next to the outputs with a hash that decides whether a finished stage can be reused.

Precedence: dataclass defaults < ``--config FILE`` < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from beartype.door import is_bearable

from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_write_json

C = TypeVar("C", bound="Config")


class ConfigError(UserError):
    """A config value is missing, of the wrong type, or inconsistent with another."""


def option(default: Any = dataclasses.MISSING, *, help: str, hash: bool = True, **meta: Any):
    """A config field with its help text.

    Args:
        default: the default value (a list default is copied per instance).
        help: one line for ``--help`` and for the saved config.
        hash: whether the field takes part in the config hash (False for output paths, flags
            like ``--force`` that do not change results).
        **meta: CLI details: ``flag`` (flag name instead of ``--field-name``), ``positional``
            (True: a positional argument), ``metavar``.
    """
    metadata = {"help": help, "hash": hash, **meta}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class Config:
    """Base class of every stage config."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            base, _ = _strip_optional(hints[f.name])
            # bool is an int subclass; `max_steps = true` in a file must not pass as 1
            wrong_bool = isinstance(value, bool) and base in (int, float)
            if wrong_bool or not is_bearable(value, hints[f.name]):
                raise ConfigError(
                    f"{type(self).__name__}.{f.name}: expected {_type_name(hints[f.name])}, "
                    f"got {value!r}"
                )
        self.validate()

    def validate(self) -> None:
        """Reject inconsistent values (override; raise :class:`ConfigError` naming the fields)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the fields that change results."""
        hashed = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("hash", True)
        }
        blob = json.dumps({"class": type(self).__name__, **hashed}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _type_name(hint: Any) -> str:
    base, optional = _strip_optional(hint)
    if optional:
        return f"{_type_name(base)} | None"
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) is not None:  # list[str], dict[str, str]: keep the item types
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of field values."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: config file is not UTF-8 ({e.reason} at byte {e.start})") from e
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config file must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot parse config file: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config file must hold a table/mapping of field = value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Construct ``cls`` from ``values``; unknown keys are an error naming ``source``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required field(s) {', '.join(missing)}")
    return cls(**values)


def add_arguments(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """Add one CLI argument per field of ``cls`` (flags default to 'not given')."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, _ = _strip_optional(hints[f.name])  # Optional[X] parses as X; None is the default
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        help_text = meta.get("help", "")
        if has_default and default is not None and default is not False and default != []:
            help_text += f" (default: {default})"
        kwargs["help"] = help_text.replace("%", "%%")  # argparse formats help with %
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(hint) is Literal:
            kwargs["choices"] = list(get_args(hint))
        elif get_origin(hint) is list and meta.get("positional"):
            (item,) = get_args(hint)
            kwargs["type"] = item
            kwargs["nargs"] = "*" if has_default else "+"
        elif get_origin(hint) is list:
            (item,) = get_args(hint)
            kwargs["type"] = item
            kwargs["action"] = "append"
            kwargs["help"] += " (repeatable)"
        elif hint in (int, float, str):
            kwargs["type"] = hint
        else:
            kwargs["type"] = str
        if meta.get("positional"):
            kwargs.pop("dest")
            if has_default:
                # argparse runs a positional's default through `type`: give it the real one
                kwargs["default"] = default
                kwargs.setdefault("nargs", "?")
            parser.add_argument(f.name, **kwargs)
        else:
            flag = meta.get("flag", "--" + f.name.replace("_", "-"))
            parser.add_argument(flag, **kwargs)


def config_from_args(cls: type[C], args: argparse.Namespace, config_file: str | None) -> C:
    """Merge defaults < ``config_file`` < explicit CLI flags into ``cls``."""
    values: dict[str, Any] = {}
    source = "command line"
    if config_file:
        values.update(read_config_file(config_file))
        source = str(config_file)
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return build_config(cls, values, source)


def save_config(config: Config, path: str | Path) -> None:
    """Write the config with its hash and each field's help text (atomically)."""
    atomic_write_json(
        path,
        {
            "class": type(config).__name__,
            "config_hash": config.config_hash(),
            "config": config.to_dict(),
            "help": config.field_help(),
        },
    )
