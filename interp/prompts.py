"""Read prompt files from ``prompts/``.

In a source checkout (and an editable install) that is the folder beside ``interp/``; a
regular wheel carries it as the package data ``text2emoji.prompts``.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

_SOURCE_TREE = Path(__file__).resolve().parent.parent / "prompts"


def prompts_dir() -> Traversable:
    if _SOURCE_TREE.is_dir():
        return _SOURCE_TREE
    return resources.files("text2emoji.prompts")


def load_prompt(name: str) -> Any:
    """Parse ``prompts/<name>`` (YAML or JSON; plain text for other suffixes).

    >>> load_prompt("chat_fallback.yaml")["generation_prompt"]
    'Assistant:'
    """
    text = prompts_dir().joinpath(name).read_text(encoding="utf-8")
    if name.endswith((".yaml", ".yml", ".json")):
        return yaml.safe_load(text)
    return text
