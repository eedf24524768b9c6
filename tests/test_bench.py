"""Every benchmark shows its command in its docstring and parses its arguments (here: --help);
the timed work itself is for people, not CI (bench/README.md holds the figures)."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.stem != "common")


def test_there_is_a_benchmark_per_target():
    assert {p.stem for p in SCRIPTS} >= {"generation", "capture", "qlora", "quick_run"}
    cuda = (BENCH / "cuda.sh").read_text(encoding="utf-8")
    for script in ("generation.py", "capture.py", "qlora.py"):
        assert script in cuda


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_docstring_and_help(script, monkeypatch, capsys):
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
    assert doc and f"python bench/{script.name}" in doc
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(script), run_name="__main__")
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out
