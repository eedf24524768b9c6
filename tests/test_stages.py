"""The stage registry: one record makes a subcommand, a place in ``run``, a redraw in
``figures``, figures in the report and numbers in metrics.json (README, "Adding an analysis")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from text2emoji.core.config import Config, member, option
from text2emoji.core.files import atomic_write_json
from text2emoji.core.runs import RunDir
from text2emoji.stages import STAGES, Stage, artifact


@dataclass
class CountConfig(Config):
    """A toy analysis: counts to n."""

    run_dir: RunDir = member(RunDir, help="the run directory", hash=False)
    n: int = option(3, help="how far to count")


CALLS: list[int] = []


def _compute(cfg: CountConfig, out: Path) -> None:
    CALLS.append(cfg.n)
    atomic_write_json(out / "count.json", {"values": list(range(cfg.n))})


def _draw(stage_dir: Path) -> list[Path]:
    from text2emoji.figures import _plt, save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(json.loads((stage_dir / "count.json").read_text())["values"])
    return save(fig, stage_dir, "count")


COUNT = Stage(
    name="count", help="count to n (a toy analysis)", config=CountConfig,
    from_run=lambda run: CountConfig(run_dir=run.run_dir), compute=_compute, draw=_draw,
    metrics=lambda d: {"count": (json.loads((d / "count.json").read_text()) if (d / "count.json").is_file() else None)},
    figures=(("count.png", "Counting"),),
)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr("text2emoji.stages.STAGES", [*STAGES, COUNT])
    CALLS.clear()
    return COUNT


def test_one_record_gives_command_figures_report_and_metrics(registered, tmp_path, capsys):
    from text2emoji.cli import build_parser, main
    from text2emoji.report import redraw

    assert "count" in build_parser()._subparsers._group_actions[0].choices
    out = tmp_path / "run"
    assert main(["count", "--out", str(out), "--n", "4"]) == 0
    assert CALLS == [4] and (out / "count" / "count.png").is_file()
    assert main(["count", "--out", str(out), "--n", "4"]) == 0  # reused: computed once
    assert CALLS == [4]
    (out / "count" / "count.png").unlink()
    paths = redraw(out)
    assert out / "count" / "count.png" in paths
    assert json.loads((out / "metrics.json").read_text())["count"] == {"values": [0, 1, 2, 3]}
    report = (out / "report.md").read_text()
    assert "## Further analyses" in report and "](count/count.png)" in report


def test_run_executes_registered_stages_in_order(registered, monkeypatch, tmp_path):
    from text2emoji import pipeline
    from text2emoji.stages.base import RunConfig

    seen = []
    monkeypatch.setattr(pipeline, "execute", lambda stage, cfg: seen.append((stage.name, cfg)))
    cfg = RunConfig(run_dir=RunDir(out=str(tmp_path / "r")))
    pipeline.run(cfg)
    assert [name for name, _ in seen] == [s.name for s in STAGES] + ["count"]
    assert seen[0][1].run_dir.out == str(tmp_path / "r")


def test_artifact_paths():
    assert artifact("o", "adapter", trait="openness") == Path("o/train/openness/adapter")
    assert artifact("o", "top_neurons") == Path("o/neurons/top_neurons.json")
    assert artifact("o", "ablate") == Path("o/ablate")
    # every stage's name is a directory of its own
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names))
