"""``text2emoji run``: the study as a chain of stages, each a directory under ``--out``.

Stages present so far (later issues add training, evaluation, neurons, report):

1. ``dataset``        validate the Opinion QA set (``--data`` or the bundled one), split it by
                      topic if it has no split, save the rows used and their stats
                      (``opinion_qa.jsonl``, ``stats.json``)
2. ``model``          load the model, record its facts (``model.json``)
3. ``base_answers``   the base model's answers to the test split's questions
                      (``answers.jsonl``: topic, question, text)
4. ``emoji_metrics``  ESR and emoji rate of those answers (``metrics.json``)

Each stage is reused when its config is unchanged (see :mod:`text2emoji.runs`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from interp.emojis import emoji_stats
from interp.generation import DecodeSettings, generate
from interp.models import LoadedModel, ModelConfig, load_model
from interp.textfiles import read_rows
from text2emoji.config import Config, ConfigError, option
from text2emoji.runs import atomic_path, atomic_write_json, open_stage

# What each preset changes. quick: a few minutes on 2 CPU cores; paper: the study's settings.
PRESETS: dict[str, dict[str, int]] = {
    "quick": {"n_questions": 8, "max_new_tokens": 48},
    "paper": {"n_questions": 0, "max_new_tokens": 150},  # 0 = every question
}


@dataclass
class RunConfig(ModelConfig):
    """The whole pipeline."""

    out: str = option("results/main", help="run directory; each stage writes out/<stage>/", hash=False)
    preset: Literal["quick", "paper"] = option(
        "quick", help="quick: minutes on 2 CPU cores; paper: the study's full scale"
    )
    data: list[str] = option([], help="Opinion QA files (CSV, JSONL, parquet; official or project "
                             "layout); default: the bundled dataset", flag="--data", metavar="PATH")
    seed: int = option(0, help="seed for everything random")
    batch_size: int = option(8, help="prompts per generation batch")
    force: bool = option(False, help="recompute stages even if finished with the same config", hash=False)

    def validate(self) -> None:
        super().validate()
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")


@dataclass
class DatasetConfig(Config):
    """Stage ``dataset``: which files, by content."""

    files: list[str] = option(help="dataset files", hash=False)
    sha256: str = option(help="SHA-256 of the files' bytes, in order")
    tokenizer: str = option(help="model whose tokenizer measures lengths")
    max_length: int = option(512, help="training max length in tokens")
    seed: int = option(0, help="seed of the split (used only if the files have none)")


@dataclass
class AnswersConfig(ModelConfig):
    """Stage ``base_answers``: which questions, which decoding."""

    dataset_hash: str = option("", help="config hash of the dataset stage the questions come from")
    n_questions: int = option(8, help="how many questions (0 = all)")
    max_new_tokens: int = option(48, help="tokens generated per answer")
    seed: int = option(0, help="seed")
    batch_size: int = option(8, help="prompts per generation batch", hash=False)


@dataclass
class MetricsConfig(Config):
    """Stage ``emoji_metrics``: the answers it scores (by their stage's config hash)."""

    answers_hash: str = option(help="config hash of the base_answers stage")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def test_questions(dataset: Path, n: int) -> list[dict[str, str]]:
    """The first ``n`` (0 = all) test-split questions, one per topic, in topic order."""
    by_topic: dict[str, dict[str, str]] = {}
    for r in read_rows(dataset, field="answer"):
        if r.get("split") == "test":
            by_topic.setdefault(r["topic"].lower(), {"topic": r["topic"], "question": r["question"]})
    return [by_topic[k] for k in sorted(by_topic)][: n or None]


def stage_dataset(cfg: Any) -> tuple[Path, str]:
    """Validate and save the dataset; ``cfg`` is any config with out, data, model, seed, force.

    Returns the saved rows' path and the stage's config hash (which covers the files' bytes).
    """
    from finetune.io import bundled_path, write_jsonl
    from finetune.split import assign_splits, stats
    from finetune.validate import validate_files
    from interp.models import load_tokenizer
    from text2emoji.errors import UserError

    files = cfg.data or [str(bundled_path())]
    digest = hashlib.sha256()
    for f in files:
        try:
            digest.update(Path(f).read_bytes())
        except OSError as e:
            raise UserError(f"{f}: cannot read dataset file ({e.strerror or e})") from e
    dcfg = DatasetConfig(files=files, sha256=digest.hexdigest(), tokenizer=cfg.model, seed=cfg.seed)
    with open_stage(cfg.out, "dataset", dcfg, force=cfg.force, seed=cfg.seed) as st:
        if st.reused:
            _log("dataset: reused")
        else:
            report = validate_files(files, load_tokenizer(cfg.model), dcfg.max_length)
            report.raise_if_problems()
            rows = report.rows
            if any(r.split is None for r in rows):
                rows = assign_splits(rows, seed=dcfg.seed)
            write_jsonl(rows, st.path("opinion_qa.jsonl"))
            st.write_json("stats.json", {**stats(rows), "warnings": report.warnings})
            _log(f"dataset: {len(rows)} rows from {', '.join(files)}")
        return st.path("opinion_qa.jsonl"), dcfg.config_hash()


def _model_fields(cfg: ModelConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ModelConfig.__dataclass_fields__}


def stage_model(cfg: RunConfig, get_lm: Callable[[], LoadedModel]) -> dict[str, Any]:
    with open_stage(cfg.out, "model", ModelConfig(**_model_fields(cfg)), force=cfg.force) as st:
        if not st.reused:
            st.write_json("model.json", get_lm().info())
        return st.read_json("model.json")


def stage_base_answers(
    cfg: RunConfig, get_lm: Callable[[], LoadedModel], dataset: Path, dataset_hash: str
) -> tuple[Path, str]:
    preset = PRESETS[cfg.preset]
    acfg = AnswersConfig(**_model_fields(cfg), dataset_hash=dataset_hash, seed=cfg.seed,
                         batch_size=cfg.batch_size, **preset)
    with open_stage(cfg.out, "base_answers", acfg, force=cfg.force, seed=cfg.seed) as st:
        if st.reused:
            _log("base_answers: reused")
        else:
            questions = test_questions(dataset, acfg.n_questions)
            settings = DecodeSettings(max_new_tokens=acfg.max_new_tokens, seed=acfg.seed)
            _log(f"base_answers: generating {len(questions)} answers")
            lm = get_lm()
            t0 = time.perf_counter()
            texts = generate(
                lm.model, lm.tokenizer, [q["question"] for q in questions], settings,
                batch_size=acfg.batch_size,
            )
            _log(f"base_answers: done in {time.perf_counter() - t0:.1f}s")
            with atomic_path(st.path("answers.jsonl")) as tmp, open(tmp, "w", encoding="utf-8") as f:
                for q, text in zip(questions, texts, strict=True):
                    f.write(json.dumps({**q, "text": text}, ensure_ascii=False) + "\n")
            st.write_json("decoding.json", settings.__dict__)
        return st.path("answers.jsonl"), acfg.config_hash()


def stage_emoji_metrics(cfg: RunConfig, answers: Path, answers_hash: str) -> dict[str, Any]:
    with open_stage(cfg.out, "emoji_metrics", MetricsConfig(answers_hash), force=cfg.force) as st:
        if not st.reused:
            rows = read_rows(answers)
            st.write_json("metrics.json", emoji_stats([r["text"] for r in rows]).to_dict())
        return st.read_json("metrics.json")


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run every stage that exists; return the headline numbers."""
    torch.manual_seed(cfg.seed)

    @functools.cache
    def get_lm() -> LoadedModel:  # loaded once, and only if a stage has work to do
        _log(f"loading {cfg.model}")
        return load_model(cfg)

    dataset, dataset_hash = stage_dataset(cfg)
    info = stage_model(cfg, get_lm)
    answers, answers_hash = stage_base_answers(cfg, get_lm, dataset, dataset_hash)
    metrics = stage_emoji_metrics(cfg, answers, answers_hash)
    summary = {
        "out": cfg.out,
        "model": info["name"],
        "base_answers": str(answers),
        "base_emoji_rate": metrics["emoji_rate"],
        "base_esr": metrics["esr"],
        "base_top_emojis": metrics["top_emojis"],
    }
    atomic_write_json(Path(cfg.out) / "summary.json", summary)
    return summary
