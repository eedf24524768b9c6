"""Every probe script shows its command in its docstring and runs (here: --help)."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import pytest

PROBES = sorted((Path(__file__).resolve().parent.parent / "probes").glob("*.py"))


def test_there_is_a_script_per_analysis():
    names = {p.stem for p in PROBES}
    assert {"neuron_diff", "emoji_trace", "ablation", "patching", "calibration", "emoji_table", "train_adapters"} <= names


@pytest.mark.parametrize("script", PROBES, ids=lambda p: p.stem)
def test_script_docstring_and_help(script, monkeypatch, capsys):
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
    assert doc and f"python probes/{script.name}" in doc
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(script), run_name="__main__")
    assert e.value.code == 0
    assert "usage: text2emoji" in capsys.readouterr().out
