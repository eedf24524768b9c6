"""Files a stage writes: atomic writes (temp file + rename), an append-only JSONL reader that
repairs a torn last line, and content hashes of input files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On an exception the temporary file is removed and ``path`` keeps its old content.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(p) as tmp:
    ...     _ = tmp.write_text("done")
    >>> p.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def file_hash(*paths: Path) -> str:
    """SHA-256 (16 hex digits) over the files' bytes, in order; "" when one is missing (the
    stage that needs it then names it)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            h.update(Path(p).read_bytes())
        except OSError:
            return ""
    return h.hexdigest()[:16]


def read_appended_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file that a resumable stage appends to; a last line torn by a crash
    (no trailing newline) is cut from the file, so appending can go on after it."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(raw))
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def check_writable_dir(path: str | Path, what: str = "output directory") -> None:
    """Raise a UserError unless ``path`` is a writable directory or could be created as one;
    creates nothing (a command checks its outputs before any work)."""
    from text2emoji.core.errors import UserError

    p = Path(path)
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{path}: cannot be the {what}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot be the {what}: {probe} is not writable")
    try:  # root passes os.access on a read-only or immutable folder: try a file, removed at once
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UserError(f"{path}: cannot be the {what}: {probe} is not writable ({e.strerror or e})") from e
