"""Read answer/prompt files: JSONL with a text field, or plain text with one item per line.

Every problem is reported as ``FILE:LINE: what is wrong`` (a :class:`~text2emoji.core.errors.UserError`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from text2emoji.core.errors import UserError

Format = Literal["auto", "jsonl", "text"]


def json_object(line: str, where: str) -> dict[str, Any]:
    """Parse one JSONL line that must hold an object; errors start with ``where``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def detect_format(path: Path) -> Literal["jsonl", "text"]:
    """``.jsonl``/``.json``/``.ndjson`` files are JSONL; anything else is plain text."""
    return "jsonl" if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else "text"


def read_rows(
    path: str | Path, field: str = "text", fmt: Format = "auto", require: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Read a file into rows that each have a string ``field``.

    Args:
        path: the file.
        field: the text field JSONL rows must have (plain-text lines are stored under it).
        fmt: ``jsonl``, ``text``, or ``auto`` (by suffix, see :func:`detect_format`).
        require: further fields every JSONL row must have.

    Returns:
        One dict per row (JSONL) or per non-empty line (text); each has ``_line``, its
        1-based line number.

    Raises:
        UserError: unreadable file, bad UTF-8, bad JSON, a missing or non-string field; the
        message names the file and line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e
    kind = detect_format(path) if fmt == "auto" else fmt
    rows: list[dict[str, Any]] = []
    for lineno, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start} of the line)") from e
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not content
        if not line.strip():
            continue
        if kind == "text":
            rows.append({field: line, "_line": lineno})
            continue
        row = json_object(line, f"{path}:{lineno}")
        for name in (field, *require):
            if name not in row:
                raise UserError(f"{path}:{lineno}: field {name!r} missing")
        if not isinstance(row[field], str):
            raise UserError(
                f"{path}:{lineno}: field {field!r} must be a string, got {type(row[field]).__name__}"
            )
        row["_line"] = lineno
        rows.append(row)
    return rows
