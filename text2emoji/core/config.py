"""One typed, validated config style for every stage.

A stage's config is a dataclass that subclasses :class:`Config`. Every field carries a help text
(``field(metadata={"help": ...})``); field types are checked at construction (beartype), and
``validate()`` rejects incompatible options with a message naming the fields. The same class
gives the stage's CLI flags (:func:`add_arguments`), reads a TOML or YAML file, and is saved
next to the outputs with a hash that decides whether a finished stage can be reused.

Configs are composed, not inherited: shared settings (which model, which run directory) are
*members* (:func:`member`), each a config of its own. A member's fields are flat flags on the
command line (``--model``, ``--out``) and may be given flat or as a table (``[model]``) in a
config file.

Precedence: dataclass defaults < ``--config FILE`` < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
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
        **meta: bounds checked at construction (``low``/``high`` inclusive, ``gt``/``lt``
            exclusive; None always passes) and CLI details: ``flag`` (flag name instead of
            ``--field-name``), ``positional`` (True: a positional argument), ``metavar``.
    """
    metadata = {"help": help, "hash": hash, **meta}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def member(cls: type[Config], *, help: str, hash: bool = True, **defaults: Any):
    """A config field that holds another config (composition; its fields become flat flags).

    Args:
        cls: the member's config class.
        help: what the member is for (saved with the config).
        hash: whether the member's hashed fields take part in the config hash.
        **defaults: field values of this member's default instance (e.g. ``load_in_4bit=True``).
    """
    return dataclasses.field(default_factory=lambda: cls(**defaults),
                             metadata={"help": help, "hash": hash, "member": cls})


def _members(cls: type[Config]) -> dict[str, type[Config]]:
    return {f.name: f.metadata["member"] for f in dataclasses.fields(cls) if f.metadata.get("member")}


def _flat_names(cls: type[Config]) -> set[str]:
    """The field names a flat config file may use: own fields and every member's, nested."""
    members = _members(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in members}
    for m in members.values():
        names |= _flat_names(m)
    return names


@dataclasses.dataclass
class Config:
    """Base class of every stage config."""

    def __post_init__(self) -> None:
        _check_values(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.validate()

    def validate(self) -> None:
        """Reject inconsistent values (override; raise :class:`ConfigError` naming the fields)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that change results (members: their own hashed fields, nested)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("hash", True):
                v = getattr(self, f.name)
                out[f.name] = v.hashed_fields() if isinstance(v, Config) else v
        return out

    def config_hash(self, inputs: dict[str, str] | None = None) -> str:
        """SHA-256 (first 16 hex digits) of the fields that change results, and of ``inputs``
        (content hashes of the files a stage reads) where given."""
        blob = {"class": type(self).__name__, **self.hashed_fields()}
        if inputs is not None:
            blob["inputs"] = inputs
        text = json.dumps(blob, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_help(cls) -> dict[str, Any]:
        """Each field's help text; a member's as a nested dict."""
        members = _members(cls)
        return {f.name: members[f.name].field_help() if f.name in members else f.metadata.get("help", "")
                for f in dataclasses.fields(cls)}


def _check_values(cls: type[Config], values: dict[str, Any]) -> None:
    """Each value of the right type and within its field's bounds, or a ConfigError naming it."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        base, _ = _strip_optional(hints[f.name])
        # bool is an int subclass; `max_steps = true` in a file must not pass as 1
        wrong_bool = isinstance(value, bool) and base in (int, float)
        if wrong_bool or not is_bearable(value, hints[f.name]):
            raise ConfigError(f"{cls.__name__}.{f.name}: expected {_type_name(hints[f.name])}, got {value!r}")
        _check_bounds(f, value)


_BOUNDS = {"low": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "high": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def _check_bounds(f: dataclasses.Field, value: Any) -> None:
    """A number outside its field's bounds, or a float that is not finite, is a ConfigError
    naming the field and its flag."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{f.name} ({flag}): must be a finite number, got {value!r}")
    for key, (_, ok) in _BOUNDS.items():
        bound = f.metadata.get(key)
        if bound is not None and not ok(value, bound):
            rule = " and ".join(f"{_BOUNDS[k][0]} {f.metadata[k]}" for k in _BOUNDS if f.metadata.get(k) is not None)
            raise ConfigError(f"{f.name} ({flag}): must be {rule}, got {value!r}")


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


def build_config(cls: type[C], values: dict[str, Any], source: str = "config", defaults: C | None = None) -> C:
    """Construct ``cls`` from ``values``; unknown keys are an error naming ``source``.

    A member's values come as a nested mapping under its name, as flat keys (its field names),
    or both (the nested ones win: the command line gives them nested); fields not given keep
    the member's default (``defaults``: the instance whose values fill what is not given).
    """
    values = dict(values)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    members = _members(cls)
    own = set(fields) - set(members)
    built: dict[str, Any] = {}
    for name, mcls in members.items():
        given = values.pop(name, None)
        if isinstance(given, Config):
            built[name] = given
            continue
        if given is not None and not isinstance(given, dict):
            values[name] = given  # a flat value of the member's field of the same name
            given = None
        sub_names = _flat_names(mcls)
        sub = {k: values.pop(k) for k in list(values) if k in sub_names and k not in own}
        if given is not None or sub:
            base = getattr(defaults, name) if defaults is not None else fields[name].default_factory()
            built[name] = build_config(mcls, {**sub, **(given or {})}, f"{source} [{name}]", defaults=base)
    unknown = sorted(set(values) - own)
    if unknown:
        valid = sorted(_flat_names(cls))
        raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    if defaults is not None:
        values = {k: getattr(defaults, k) for k in own} | values
        built = {k: getattr(defaults, k) for k in members} | built
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values and f.name not in built
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required field(s) {', '.join(missing)}")
    _check_values(cls, values)  # before construction: a typed __init__ would raise its own error
    return cls(**values, **built)


def add_arguments(parser: argparse.ArgumentParser, cls: type[Config], _prefix: str = "",
                  _defaults: Config | None = None) -> None:
    """Add one CLI argument per field of ``cls`` (flags default to 'not given'); a member's
    fields are flat flags whose destinations are ``member.field``."""
    hints = typing.get_type_hints(cls)
    members = _members(cls)
    for f in dataclasses.fields(cls):
        if f.name in members:
            # the member's defaults as its owner sets them (a member of a member: the outer one's)
            inner = getattr(_defaults, f.name) if _defaults is not None else f.default_factory()
            add_arguments(parser, members[f.name], f"{_prefix}{f.name}.", inner)
            continue
        hint, _ = _strip_optional(hints[f.name])  # Optional[X] parses as X; None is the default
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": _prefix + f.name, "default": argparse.SUPPRESS}
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if _defaults is not None:
            default = getattr(_defaults, f.name)
        else:
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
        if _prefix and hint is not bool and "choices" not in kwargs:
            kwargs.setdefault("metavar", f.name.upper())
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
    for dest, value in vars(args).items():
        if dest.startswith("_") or dest in ("config_file", "command", "subcommand"):
            continue
        # a member's flag (``member.field``) goes in nested, so it wins over the file's flat keys
        *path, name = dest.split(".")
        where = values
        for m in path:
            if not isinstance(where.get(m), dict):
                # a flat value under the member's name belongs to its field of that name
                where[m] = {} if m not in where else {m: where[m]}
            where = where[m]
        where[name] = value
    return build_config(cls, values, source)


def save_config(config: Config, path: str | Path, inputs: dict[str, str] | None = None) -> None:
    """Write the config with its hash, each field's help text and the stage's input hashes
    (atomically)."""
    record = {
        "class": type(config).__name__,
        "config_hash": config.config_hash(inputs),
        "config": config.to_dict(),
        "help": config.field_help(),
    }
    if inputs is not None:
        record["inputs"] = inputs
    atomic_write_json(path, record)
