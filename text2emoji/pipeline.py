"""``text2emoji run``: the study as a chain of stages, each a directory under ``--out``.

Stages present so far (later issues add dataset, training, evaluation, neurons, report):

1. ``model``          load the model, record its facts (``model.json``)
2. ``base_answers``   the base model's answers to the study's opinion questions
                      (``answers.jsonl``: topic, question, text)
3. ``emoji_metrics``  ESR and emoji rate of those answers (``metrics.json``)

Each stage is reused when its config is unchanged (see :mod:`text2emoji.runs`).
"""

from __future__ import annotations

import functools
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
from interp.prompts import load_prompt
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
    seed: int = option(0, help="seed for everything random")
    batch_size: int = option(8, help="prompts per generation batch")
    force: bool = option(False, help="recompute stages even if finished with the same config", hash=False)

    def validate(self) -> None:
        super().validate()
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")


@dataclass
class AnswersConfig(ModelConfig):
    """Stage ``base_answers``: which questions, which decoding."""

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


def opinion_questions(n: int) -> list[dict[str, str]]:
    spec = load_prompt("opinion_questions.yaml")
    topics = spec["topics"][: n or None]
    return [{"topic": t, "question": spec["question"].format(topic=t)} for t in topics]


def _model_fields(cfg: ModelConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ModelConfig.__dataclass_fields__}


def stage_model(cfg: RunConfig, get_lm: Callable[[], LoadedModel]) -> dict[str, Any]:
    with open_stage(cfg.out, "model", ModelConfig(**_model_fields(cfg)), force=cfg.force) as st:
        if not st.reused:
            st.write_json("model.json", get_lm().info())
        return st.read_json("model.json")


def stage_base_answers(cfg: RunConfig, get_lm: Callable[[], LoadedModel]) -> tuple[Path, str]:
    preset = PRESETS[cfg.preset]
    acfg = AnswersConfig(**_model_fields(cfg), seed=cfg.seed, batch_size=cfg.batch_size, **preset)
    with open_stage(cfg.out, "base_answers", acfg, force=cfg.force, seed=cfg.seed) as st:
        if st.reused:
            _log("base_answers: reused")
        else:
            questions = opinion_questions(acfg.n_questions)
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

    info = stage_model(cfg, get_lm)
    answers, answers_hash = stage_base_answers(cfg, get_lm)
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
