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
from text2emoji.stages.base import Stage, artifact
from text2emoji.stages.registry import STAGES


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
    monkeypatch.setattr("text2emoji.stages.registry.STAGES", [*STAGES, COUNT])
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


# What `text2emoji run` gave each stage before the stages were declared once (the old
# pipeline's explicit arguments), per preset: the same values must reach the stages now. (Since
# the controls draw sequentially, n_random is their budget: quick 500, paper 10,000.)
EXPECTED = {
    "quick": {"evaluate": dict(n_questions=16, max_new_tokens=48, n_explain=8), "trace": dict(lens_emojis=1),
              "ablate": dict(n_questions=16, n_random=500, n_random_generation=1, n_generation_questions=8,
                             max_new_tokens=48),
              "patch": dict(n_questions=16, n_random=500), "calibrate": dict(n_questions=16, n_null=20, n_random_null=50),
              "organisms": dict(fractions=[1.0], negative=True, end_control=False, n_questions=16, n_random=500,
                                n_random_generation=1, n_generation_questions=8, max_new_tokens=48),
              "steering": dict(traits=["extraversion"], alphas=[0.0, 2.0, 4.0, 8.0], n_vector_questions=8,
                               n_sweep_questions=8, n_questions=16, max_new_tokens=48),
              "diffing": dict(n_texts=128),
              "train": dict(max_steps=24, r=16, batch_size=8, compute_dtype="bfloat16")},
    "paper": {"evaluate": dict(n_questions=0, max_new_tokens=150, n_explain=0), "trace": dict(lens_emojis=3),
              "ablate": dict(n_questions=0, n_random=10000, n_random_generation=5, n_generation_questions=0,
                             max_new_tokens=150),
              "patch": dict(n_questions=0, n_random=10000), "calibrate": dict(n_questions=0, n_null=200, n_random_null=200),
              "organisms": dict(fractions=[0.0, 0.02, 0.05, 0.1, 0.25, 0.5], negative=True, end_control=True,
                                n_questions=0, n_random=10000, n_random_generation=19, n_generation_questions=0,
                                max_new_tokens=150),
              "steering": dict(traits=[], alphas=[0.0, 1.0, 2.0, 4.0, 8.0, 16.0], n_vector_questions=32,
                               n_sweep_questions=32, n_questions=0, max_new_tokens=150),
              "diffing": dict(n_texts=0),
              "train": dict(max_steps=0, r=64, batch_size=2, compute_dtype="auto")},
}


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_run_gives_each_stage_the_presets_values(preset):
    from text2emoji.stages.base import RunConfig

    run = RunConfig(preset=preset, seed=3)
    by_name = {s.name: s for s in STAGES}
    for name, want in EXPECTED[preset].items():
        cfg = by_name[name].resolve(by_name[name].from_run(run))
        if name == "train":
            recipe = cfg.recipe.resolved()
            assert {k: getattr(recipe, k) for k in want} == want
            assert recipe.model.load_in_4bit and recipe.seed == 3 and cfg.all_traits  # QLoRA, every trait
            continue
        assert {k: getattr(cfg, k) for k in want} == want, name
        assert cfg.seed == 3 and cfg.batch_size == 32 and not cfg.model.load_in_4bit, name
    # flags override the preset
    over = RunConfig(preset=preset, n_random=7, n_questions=2, max_new_tokens=5, max_steps=1)
    ablate = by_name["ablate"].resolve(by_name["ablate"].from_run(over))
    assert (ablate.n_random, ablate.n_questions, ablate.max_new_tokens) == (7, 2, 5)
    assert by_name["train"].from_run(over).recipe.resolved().max_steps == 1
    steering = by_name["steering"].resolve(by_name["steering"].from_run(over))
    assert (steering.n_questions, steering.max_new_tokens) == (2, 5)
    # paper's [] is every trait; the resolved lists are copies, never the preset table's own
    from text2emoji.core.presets import PRESETS
    from text2emoji.core.schema import TRAITS

    assert steering.trait_list() == (["extraversion"] if preset == "quick" else list(TRAITS))
    assert steering.alphas == PRESETS[preset]["steering"]["alphas"] and steering.alphas is not PRESETS[preset]["steering"]["alphas"]


def test_train_command_prints_the_traits_it_was_asked_for(tmp_path, tiny_model_dir, capsys):
    from tests.test_cli import small_dataset
    from text2emoji.cli import main

    data = small_dataset(tmp_path / "d.jsonl")
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--data", str(data), "--out", str(tmp_path / "run"),
              "--max-steps", "1", "--eval-rows", "2", "--batch-size", "4"]
    for trait in ("neuroticism", "openness"):
        capsys.readouterr()
        assert main(["train", "--trait", trait, *common]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert list(printed) == [trait] and printed[trait]["steps"] == 1
    config = json.loads((tmp_path / "run" / "train" / "openness" / "config.json").read_text())
    assert config["config"]["model"]["load_in_4bit"] is True  # QLoRA unless told otherwise
