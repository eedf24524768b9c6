"""Read Opinion QA files (CSV, JSONL, parquet; official or project layout) into raw records.

Reading never stops at the first bad value: text that is not UTF-8 is kept (with surrogate
escapes) so that :mod:`finetune.validate` can list every problem by file, row and field. Only a
file that cannot be parsed at all raises :class:`~text2emoji.core.errors.UserError`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from interp.textfiles import json_object
from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_path
from text2emoji.core.schema import OFFICIAL_COLUMNS, REQUIRED, Row

# the datasets shipped with the package, by version; v2 is the default, v1 kept for reproducibility
BUNDLED = {"v1": "opinion_qa.jsonl", "v2": "opinion_qa_v2.jsonl"}
DEFAULT_VERSION = "v2"


def bundled_path(version: str = DEFAULT_VERSION) -> Path:
    """A dataset shipped with the package (``finetune/data/``; default: v2)."""
    if version not in BUNDLED:
        raise UserError(f"no bundled dataset {version!r}; there are {', '.join(BUNDLED)}")
    return Path(str(resources.files("finetune").joinpath("data", BUNDLED[version])))


def data_path(spec: str | Path) -> Path:
    """A ``--data`` value as a path: ``bundled:v1`` / ``bundled:v2`` name a shipped dataset,
    anything else is a file path."""
    s = str(spec)
    return bundled_path(s.removeprefix("bundled:")) if s.startswith("bundled:") else Path(s)


@dataclass
class RawFile:
    """A file's records with their 1-based row numbers, and the columns it has."""

    path: Path
    columns: list[str]
    records: list[tuple[int, dict[str, Any]]]
    layout: str = "project"  # or "official"
    problems: list[str] = field(default_factory=list)  # file-level problems found while reading


# byte-order marks of the encodings a text file might be saved in instead of UTF-8 (longest first)
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"), (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
         (b"\xff\xfe", "UTF-16 (little-endian)"), (b"\xfe\xff", "UTF-16 (big-endian)"))


def _decode(raw: bytes, path: Path) -> str:
    """The file's text. A UTF-16 or UTF-32 file (a byte-order mark, or NUL bytes between ASCII
    characters) is refused by name: read as UTF-8 it would only show as broken JSON or CSV."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise UserError(f"{path}: the file is encoded as {name}; save it as UTF-8")
    if b"\x00" in raw[:4096]:
        even, odd = raw[:4096:2].count(0), raw[1:4096:2].count(0)
        name = "UTF-16 (big-endian)" if even > odd else "UTF-16 (little-endian)"
        raise UserError(f"{path}: the file holds NUL bytes, as {name} (or another non-UTF-8 encoding) would; "
                        "save it as UTF-8")
    # surrogateescape keeps undecodable bytes as lone surrogates: the validator finds them.
    return raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    reader = csv.DictReader(io.StringIO(_decode(path.read_bytes(), path), newline=""))
    try:
        records = [(i, dict(rec)) for i, rec in enumerate(reader, start=1)]
    except csv.Error as e:
        raise UserError(f"{path}:line {reader.line_num}: CSV parse error: {e}") from e
    return list(reader.fieldnames or []), records


def _read_jsonl(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    records, columns = [], {}
    for lineno, line in enumerate(_decode(path.read_bytes(), path).splitlines(), start=1):
        if not line.strip():
            continue
        rec = json_object(line, f"{path}:row {lineno}")
        columns.update(dict.fromkeys(rec))
        records.append((lineno, rec))
    return list(columns), records


def _read_parquet(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency
        raise UserError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from e
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for broken files
        raise UserError(f"{path}: cannot read parquet ({e})") from e
    return table.column_names, list(enumerate(table.to_pylist(), start=1))


def read_raw(path: str | Path) -> RawFile:
    """Read one file by its suffix (``.csv``, ``.jsonl``/``.json``, ``.parquet``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".json": _read_jsonl, ".parquet": _read_parquet}
    if suffix not in readers:
        raise UserError(f"{path}: unknown format {suffix!r}; use .csv, .jsonl or .parquet")
    columns, records = readers[suffix](path)
    layout = "official" if OFFICIAL_COLUMNS["answer"] in columns else "project"
    return RawFile(path, columns, records, layout)


def _split_from_name(path: Path) -> str | None:
    stem = path.stem.lower()
    for split in ("train", "test"):
        if split in stem.replace("-", "_").split("_") or stem == split:
            return split
    return None


def to_rows(raw: RawFile) -> list[Row]:
    """Map a file's records to :class:`Row` (values as found; validation judges them)."""
    names = OFFICIAL_COLUMNS if raw.layout == "official" else {k: k for k in REQUIRED}
    default_split = _split_from_name(raw.path)
    rows = []
    for n, rec in raw.records:
        text = {k: "" if rec.get(col) is None else str(rec.get(col)).strip() for k, col in names.items()}
        split = rec.get("split") or default_split
        rows.append(
            Row(
                trait=text["trait"].lower(),
                topic=text["topic"],
                question=text["question"],
                answer=text["answer"],
                split=str(split).strip().lower() if split else None,
                domain=rec.get("domain"),
                source=str(raw.path),
                row=n,
            )
        )
    return rows


def missing_columns(raw: RawFile) -> list[str]:
    names = OFFICIAL_COLUMNS if raw.layout == "official" else {k: k for k in REQUIRED}
    return [names[k] for k in REQUIRED if names[k] not in raw.columns]


def write_jsonl(rows: list[Row], path: str | Path) -> None:
    """Write rows in the project layout, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r.to_record(), ensure_ascii=False) + "\n")
