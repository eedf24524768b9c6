"""Stages ``dataset`` (the Opinion QA set used, validated and split), ``quality`` (its trait
classifier, diversity, word clouds) and ``model`` (the loaded model's facts)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2emoji.core.config import Config, option
from text2emoji.core.errors import UserError
from text2emoji.core.runs import log, open_stage, stage_status
from text2emoji.stages.base import RunConfig, Stage, artifact, read_json


@dataclass
class DatasetConfig(Config):
    """Stage ``dataset``: which files, by content."""

    files: list[str] = option(help="dataset files", hash=False)
    sha256: str = option(help="SHA-256 of the files' bytes, in order")
    tokenizer: str = option(help="model whose tokenizer measures lengths")
    max_length: int = option(512, help="training max length in tokens", low=1)
    seed: int = option(0, help="seed of the split (used only if the files have none)")
    allow_emoticons: bool = option(False, help="ASCII emoticons and emojis' text forms accepted in the answers")


def dataset_config(cfg: Any) -> DatasetConfig:
    """The dataset stage's config for any command config with ``data``, ``model``, ``seed``."""
    from finetune.io import bundled_path, data_path

    files = [str(data_path(f)) for f in cfg.data] or [str(bundled_path())]
    digest = hashlib.sha256()
    for f in files:
        try:
            digest.update(Path(f).read_bytes())
        except OSError as e:
            raise UserError(f"{f}: cannot read dataset file ({e.strerror or e})") from e
    return DatasetConfig(files=files, sha256=digest.hexdigest(), tokenizer=cfg.model.model, seed=cfg.seed,
                         allow_emoticons=bool(getattr(cfg, "allow_emoticons", False)))


def dataset(cfg: Any, force: bool | None = None) -> tuple[Path, str]:
    """Validate and save the dataset (reused when its files and settings are unchanged).

    Args:
        cfg: any command config with ``data``, ``model``, ``seed`` and ``run_dir``.
        force: recompute; default: the command's ``--force``.

    Returns:
        The saved rows' path and the stage's config hash (which covers the files' bytes).
    """
    from finetune.io import write_jsonl
    from finetune.split import assign_splits, stats
    from finetune.validate import validate_files
    from interp.models import load_tokenizer

    dcfg = dataset_config(cfg)
    out = cfg.run_dir.out
    if force is False and stage_status(artifact(out, "dataset").parent)[1] not in (None, dcfg.config_hash()):
        raise UserError(
            f"{artifact(out, 'dataset').parent} holds another dataset (other --data files, --model tokenizer "
            "or split --seed than this command's); give the run's settings, or recompute it with "
            "`text2emoji run --force` or `text2emoji evaluate --force`"
        )
    force = cfg.run_dir.force if force is None else force
    with open_stage(cfg.run_dir.out, "dataset", dcfg, force=force, seed=cfg.seed) as st:
        if st.reused:
            log("dataset: reused")
        else:
            report = validate_files(dcfg.files, load_tokenizer(dcfg.tokenizer), dcfg.max_length, dcfg.allow_emoticons)
            report.raise_if_problems()
            rows = report.rows
            if any(r.split is None for r in rows):
                rows = assign_splits(rows, seed=dcfg.seed)
            write_jsonl(rows, artifact(cfg.run_dir.out, "dataset"))
            st.write_json("stats.json", {**stats(rows), "warnings": report.warnings})
            log(f"dataset: {len(rows)} rows from {', '.join(dcfg.files)}")
    return artifact(cfg.run_dir.out, "dataset"), dcfg.config_hash()


def dataset_rows(cfg: Any, force: bool = False) -> tuple[list, str]:
    """The run's dataset rows and its hash (the dataset stage reused unless ``force``)."""
    from finetune.validate import load_rows

    path, digest = dataset(cfg, force=force)
    # validated when the stage saved it, by the rules its config records (emoticons allowed or not)
    return load_rows([path], allow_emoticons=True), digest


def held_out_questions(cfg: Any) -> dict[str, list[str]]:
    """Each of ``cfg``'s traits' first ``n_questions`` held-out test questions (by topic), from
    the run's dataset stage (reused, never forced from here): what ablation, patching and
    calibration measure on."""
    rows, _ = dataset_rows(cfg)
    out = {}
    for trait in cfg.trait_list():
        tests = sorted((r for r in rows if r.trait == trait and r.split == "test"), key=lambda r: r.topic.lower())
        out[trait] = [r.question for r in tests[: cfg.n_questions or None]]
    return out


DATASET = Stage(
    name="dataset", help="the Opinion QA set used: validated, split by topic if it had no split",
    config=None, from_run=lambda run: run, execute=lambda cfg: dataset(cfg)[0].parent,
)


@dataclass
class QualityStageConfig(Config):
    """Stage ``quality``: the dataset's trait classifier, diversity and word clouds."""

    dataset_hash: str = option(help="config hash of the dataset stage (covers its bytes)")
    top_words: int = option(15, help="distinctive words per trait", low=1)
    seed: int = option(0, help="classifier seed")


def _quality(run: RunConfig) -> Path:
    from finetune.quality import quality_report
    from finetune.validate import load_rows
    from text2emoji.figures import word_clouds

    path, digest = dataset(run, force=False)
    qcfg = QualityStageConfig(dataset_hash=digest, seed=run.seed)
    with open_stage(run.run_dir.out, "quality", qcfg, force=run.run_dir.force, seed=run.seed) as st:
        if not st.reused:
            report = quality_report(load_rows([path], allow_emoticons=True), qcfg.top_words, qcfg.seed)
            st.write_json("quality.json", report)
            word_clouds(report, st.dir)
    return st.dir


def _draw_quality(stage_dir: Path) -> list[Path]:
    from text2emoji.figures import word_clouds

    report = read_json(stage_dir / "quality.json")
    return word_clouds(report, stage_dir) if report else []


def _quality_metrics(stage_dir: Path) -> dict[str, Any]:
    q = read_json(stage_dir / "quality.json")
    return {"quality": q and {k: q[k] for k in ("classifier_test_accuracy", "near_duplicate_rate")}}


QUALITY = Stage(
    name="quality", help="the dataset's trait classifier accuracy, diversity, near-duplicates, word clouds",
    config=None, from_run=lambda run: run, execute=_quality, draw=_draw_quality, metrics=_quality_metrics,
    figures=(("wordclouds.png", "The training answers' most distinctive words per trait (weighted log-odds)"),),
)


def _model(run: RunConfig) -> Path:
    from interp.models import load_model

    with open_stage(run.run_dir.out, "model", run.model, force=run.run_dir.force) as st:
        if not st.reused:
            st.write_json("model.json", load_model(run.model).info())
    return st.dir


def _model_metrics(stage_dir: Path) -> dict[str, Any]:
    m = read_json(stage_dir / "model.json")
    return {"model": m and {k: m[k] for k in ("name", "architecture", "n_layers", "d_mlp", "dtype", "device")}}


MODEL = Stage(
    name="model", help="the loaded model's facts", config=None, from_run=lambda run: run,
    execute=_model, metrics=_model_metrics,
)
