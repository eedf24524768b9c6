"""What a stage is, where its artifacts live, and the ``run`` command's config.

A stage is declared once, as a :class:`Stage` record: its config, what its hash covers besides
the config (the content of the files it reads), how it computes (load, call the library, write),
how it draws its figures and which headline numbers it contributes to ``metrics.json``. The CLI,
``text2emoji run``, ``text2emoji figures`` and the report iterate over the list of records in
:mod:`text2emoji.stages`; :func:`artifact` is the one place that says where a file lives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.models import ModelConfig
from text2emoji.core.config import Config, ConfigError, member, option
from text2emoji.core.presets import Preset
from text2emoji.core.runs import RunDir, batch_option, open_stage, seed_option
from text2emoji.core.schema import TRAITS

# Where each artifact of a run lives, relative to the run directory (``--out``).
LAYOUT = {
    "dataset": "dataset/opinion_qa.jsonl",
    "adapter": "train/{trait}/adapter",
    "generations": "evaluate/generations.jsonl",
    "top_neurons": "neurons/top_neurons.json",
    "report": "report.md",
    "metrics": "metrics.json",
    "summary": "summary.json",
}


def artifact(out: str | Path, what: str, **names: str) -> Path:
    """The path of artifact ``what`` (a key of :data:`LAYOUT`, or a stage's name for its
    directory) under the run directory ``out``.

    >>> artifact("results/main", "adapter", trait="openness").as_posix()
    'results/main/train/openness/adapter'
    >>> artifact("results/main", "neurons").as_posix()
    'results/main/neurons'
    """
    return Path(out) / LAYOUT.get(what, what).format(**names)


def adapter_dirs(out: str | Path, traits: list[str], root: str | None = None) -> dict[str, Path]:
    """Each trait's adapter directory: the run's own (``OUT/train/<trait>/adapter``), or the same
    layout under ``root`` (a folder with ``<trait>/adapter``)."""
    if root is None:
        return {t: artifact(out, "adapter", trait=t) for t in traits}
    return {t: Path(root) / t / "adapter" for t in traits}


def adapter_hashes(paths: dict[str, Path]) -> dict[str, str]:
    """SHA-256 of each trait's adapter weights; a missing adapter is an error before any stage
    directory is touched (a failed attempt must not pin the stage to its inputs)."""
    from text2emoji.core.errors import UserError
    from text2emoji.core.files import file_hash

    missing = [f"adapter for {t} not found at {p} (no adapter_model.safetensors)"
               for t, p in paths.items() if not (p / "adapter_model.safetensors").is_file()]
    if missing:
        raise UserError(f"{'; '.join(missing)}; train them first (`text2emoji train --all-traits`) or point "
                        "--adapters at a folder with <trait>/adapter")
    return {t: file_hash(p / "adapter_model.safetensors") for t, p in paths.items()}


def read_json(path: Path) -> Any:
    """A results file's content, or None where it is missing or unreadable (a stage not run)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def pct(v: float | int | None) -> str:
    """A share as a percentage with one decimal ("n/a" for None)."""
    return "n/a" if v is None else f"{100 * v:.1f}%"


def pval(p: float | None) -> str:
    """A p-value to three significant digits ("n/a" for None: no test)."""
    return "n/a" if p is None else f"{p:.3g}"


def share(x: float | None, ci: list[float] | None) -> str:
    """A share of a gap with its interval ("n/a": no gap; "[unbounded]": no interval bounds it)."""
    if x is None:
        return "n/a"
    return f"{x:.0%}" + (" [unbounded]" if not ci else f" [{ci[0]:.0%}, {ci[1]:.0%}]")


def print_json(obj: Any) -> None:
    """What a command prints on stdout: JSON (logs go to stderr)."""
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def data_option() -> Any:
    """The ``data`` field of every command that reads the Opinion QA set."""
    return option([], help="Opinion QA files, or bundled:v1 (default: bundled:v2)", flag="--data", metavar="PATH")


def emoticons_option() -> Any:
    """The ``allow_emoticons`` field of every command that reads ``--data`` (the dataset stage's
    hash covers it; the others see it through that stage)."""
    return option(False, help="accept ASCII emoticons (:) <3) and emojis' text forms without U+FE0F (a bare ❤) "
                  "in --data answers, which the study's data holds none of", hash=False)


def trait_metric_option() -> Any:
    """The trait metric of ``evaluate`` and ``traits score``."""
    return option("embedding", help="the trait metric: embedding (the embedded model's mid-layer sentence "
                  "embedding) or word, char, word+char (TF-IDF), each + logistic regression fitted on the bundled metric "
                  "set, finetune/data/trait_metric/; or hf:MODEL (a local directory or hub id "
                  "of a sequence classifier, e.g. the paper's hf:holistic-ai/personality_classifier)")


def label_map_option() -> Any:
    return option(None, help="with an hf: trait metric: a JSON object or file mapping its labels to traits (default: "
                  "labels that start with a trait's name or its first three letters; others count as 'none')")


JUDGE_HELP = ("PAE judge: openai:MODEL (an OpenAI-compatible endpoint: OPENAI_BASE_URL, OPENAI_API_KEY from the "
              "environment, never written anywhere) or a local chat model (embedded name, HF directory)")


def judge_option() -> Any:
    return option(None, help=JUDGE_HELP + "; rates every answer 1-5 for its trait (default: no judge)")


def scorer_of(metric: str, label_map: str | None, seed: int) -> Any:
    """The trait metric ``--metric``/``--trait-metric`` names, or a UserError saying why not."""
    from interp.behaviour.trait_metric import make_scorer, read_label_map

    try:
        return make_scorer(metric, read_label_map(label_map), seed=seed)
    except (OSError, ValueError) as e:
        from text2emoji.core.errors import UserError

        raise UserError(f"trait metric {metric}: {e}") from e


def check_trait_metric(metric: str, label_map: str | None) -> None:
    from interp.behaviour.trait_metric import CANDIDATES

    if metric not in CANDIDATES and not metric.startswith("hf:"):
        raise ConfigError(f"trait_metric: {metric!r} is not one of {', '.join(CANDIDATES)} or hf:MODEL")
    if label_map and not metric.startswith("hf:"):
        raise ConfigError("label_map: only an hf: trait metric has labels to map")


def check_data_files(paths: list[str]) -> None:
    """Every ``--data`` file exists and is a file (checked before any stage runs);
    ``bundled:v1`` / ``bundled:v2`` name the shipped datasets."""
    from finetune.io import BUNDLED

    for p in paths:
        if p.startswith("bundled:"):
            if p.removeprefix("bundled:") not in BUNDLED:
                raise ConfigError(f"data: no bundled dataset {p!r}; there are "
                                  + ", ".join(f"bundled:{v}" for v in BUNDLED))
            continue
        if not Path(p).is_file():
            raise ConfigError(f"data: {p}: no such file" if not Path(p).exists() else f"data: {p}: not a file")


def check_traits(traits: list[str]) -> None:
    if bad := [t for t in traits if t not in TRAITS]:
        raise ConfigError(f"traits: unknown {', '.join(bad)}; valid: {', '.join(TRAITS)}")


@dataclass
class RunConfig(Config):
    """``text2emoji run``: the whole pipeline."""

    model: ModelConfig = member(ModelConfig, help="the base model every stage loads")
    run_dir: RunDir = member(RunDir, help="the run directory", hash=False)
    preset: Preset = option("quick", help="quick: about 19 minutes on 2 CPU cores; paper: the study's full scale")
    data: list[str] = option([], help="Opinion QA files (CSV, JSONL, parquet; official or project "
                             "layout), or bundled:v1, the first bundled set (default: bundled:v2)",
                             flag="--data", metavar="PATH")
    allow_emoticons: bool = emoticons_option()
    seed: int = seed_option("seed for everything random in the run (every stage gets it)")
    batch_size: int = batch_option()
    max_steps: int | None = option(None, help="QLoRA optimizer steps per trait (default: the preset's)", low=0)
    n_questions: int | None = option(None, help="test questions per trait for evaluation, ablation and "
                                     "patching (0 = all; default: the preset's)", low=0)
    max_new_tokens: int | None = option(None, help="tokens per generated answer (default: the preset's)", low=1)
    n_random: int | None = option(None, help="the most random neuron sets an ablation/patching control draws "
                                  "(default: the preset's)", low=0)
    trait_metric: str = trait_metric_option()
    label_map: str | None = label_map_option()
    judge: str | None = judge_option()

    def validate(self) -> None:
        check_data_files(self.data)
        check_trait_metric(self.trait_metric, self.label_map)


@dataclass(frozen=True)
class Stage:
    """One stage, declared once.

    Attributes:
        name: its directory under the run directory, and its subcommand (where ``config`` is set).
        help: one line for ``--help``.
        config: the stage command's config class (None: no subcommand of its own).
        from_run: the config ``text2emoji run`` gives the stage.
        compute: ``compute(cfg, stage_dir)`` loads, calls the library and writes results.
        inputs: content hashes of the files the stage reads (adapters, upstream results); they
            count in the stage's hash beside its config.
        resolve: fills preset values into the config before it is hashed and run.
        draw: figures from the stage's results files alone (``text2emoji figures`` redraws them).
        metrics: the stage's headline numbers for ``metrics.json``, from its results files.
        figures: ``(file under the stage directory, caption)`` for the report.
        execute: for stages made of sub-stages (``train/<trait>``): runs instead of the generic
            open-compute-draw; returns the stage directory.
        show: what the subcommand prints: ``show(cfg, stage_dir)``, from the results files.
    """

    name: str
    help: str
    config: type[Config] | None
    from_run: Callable[[RunConfig], Config]
    compute: Callable[[Any, Path], None] | None = None
    inputs: Callable[[Any], dict[str, str]] = lambda cfg: {}
    resolve: Callable[[Any], Any] = lambda cfg: cfg
    draw: Callable[[Path], list[Path]] = lambda stage_dir: []
    metrics: Callable[[Path], dict[str, Any]] = lambda stage_dir: {}
    figures: tuple[tuple[str, str], ...] = ()
    execute: Callable[[Any], Path] | None = None
    show: Callable[[Any, Path], None] = lambda cfg, stage_dir: None


def execute(stage: Stage, cfg: Any) -> Path:
    """Run ``stage`` with ``cfg`` (reusing a finished run of the same config and inputs,
    resuming an interrupted one); returns the stage directory."""
    if stage.execute is not None:
        return stage.execute(cfg)
    cfg = stage.resolve(cfg)
    inputs = stage.inputs(cfg)
    with open_stage(cfg.run_dir.out, stage.name, cfg, force=cfg.run_dir.force, seed=getattr(cfg, "seed", None),
                    inputs=inputs or None) as st:
        if not st.reused:
            stage.compute(cfg, st.dir)  # type: ignore[misc]
            stage.draw(st.dir)
    return st.dir
