"""``text2emoji run``: the whole study as a chain of stages, each a directory under ``--out``.

1. ``dataset``      validate the Opinion QA set (``--data`` or the bundled one), split it by topic
                    if it has no split (``opinion_qa.jsonl``, ``stats.json``)
   ``quality``      the dataset's trait classifier accuracy, diversity, word clouds
2. ``model``        load the model, record its facts (``model.json``)
3. ``train/<trait>`` QLoRA, one adapter per trait (``text2emoji train``)
4. ``evaluate``     base / PEFT / in-context answers, emoji table, trait alignment, ICL
                    explainability (``text2emoji evaluate``)
5. ``neurons``      last-layer neurons pre vs post on the probe suite (``text2emoji neurons``)
6. ``trace``        emoji probability pre vs post and the logit lens (``text2emoji trace``)
7. ``ablate``       top neurons ablated vs random neurons (``text2emoji ablate``)
8. ``patch``        post-PEFT values patched into the base vs random neurons (``text2emoji patch``)
9. report           ``report.md``, ``report.html``, ``metrics.json`` from the stages' results

Each stage is reused when its config is unchanged and resumes after an interruption (see
:mod:`text2emoji.core.runs`).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from interp.models import LoadedModel, ModelConfig, load_model
from text2emoji.core.config import Config, ConfigError, option
from text2emoji.core.files import atomic_write_json
from text2emoji.core.runs import log, open_stage

# What each preset sets in the stages after training (training has its own presets).
# quick: about 15 minutes on 2 CPU cores (bench/quick_run.py); paper: the study's scale.
PRESETS: dict[str, dict[str, int]] = {
    "quick": {"n_questions": 16, "max_new_tokens": 48, "n_random": 100, "n_random_generation": 1,
              "n_generation_questions": 8, "lens_emojis": 1},
    "paper": {"n_questions": 0, "max_new_tokens": 150, "n_random": 1000, "n_random_generation": 5,
              "n_generation_questions": 0, "lens_emojis": 3},
}


@dataclass
class RunConfig(ModelConfig):
    """The whole pipeline."""

    out: str = option("results/main", help="run directory; each stage writes out/<stage>/", hash=False)
    preset: Literal["quick", "paper"] = option(
        "quick", help="quick: about 15 minutes on 2 CPU cores; paper: the study's full scale"
    )
    data: list[str] = option([], help="Opinion QA files (CSV, JSONL, parquet; official or project "
                             "layout); default: the bundled dataset", flag="--data", metavar="PATH")
    seed: int = option(0, help="seed for everything random")
    batch_size: int = option(32, help="prompts per generation / forward batch")
    max_steps: int | None = option(None, help="QLoRA optimizer steps per trait (default: the preset's)")
    n_questions: int | None = option(None, help="test questions per trait for evaluation, ablation and "
                                     "patching (0 = all; default: the preset's)")
    max_new_tokens: int | None = option(None, help="tokens per generated answer (default: the preset's)")
    n_random: int | None = option(None, help="random neuron sets in the ablation/patching controls "
                                  "(default: the preset's)")
    force: bool = option(False, help="recompute stages even if finished with the same config", hash=False)

    def validate(self) -> None:
        super().validate()
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.adapter is not None:
            raise ConfigError("adapter: run trains its own adapters; leave --adapter unset")


@dataclass
class DatasetConfig(Config):
    """Stage ``dataset``: which files, by content."""

    files: list[str] = option(help="dataset files", hash=False)
    sha256: str = option(help="SHA-256 of the files' bytes, in order")
    tokenizer: str = option(help="model whose tokenizer measures lengths")
    max_length: int = option(512, help="training max length in tokens")
    seed: int = option(0, help="seed of the split (used only if the files have none)")


def stage_dataset(cfg: Any) -> tuple[Path, str]:
    """Validate and save the dataset; ``cfg`` is any config with out, data, model, seed, force.

    Returns the saved rows' path and the stage's config hash (which covers the files' bytes).
    """
    from finetune.io import bundled_path, write_jsonl
    from finetune.split import assign_splits, stats
    from finetune.validate import validate_files
    from interp.models import load_tokenizer
    from text2emoji.core.errors import UserError

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
            log("dataset: reused")
        else:
            report = validate_files(files, load_tokenizer(cfg.model), dcfg.max_length)
            report.raise_if_problems()
            rows = report.rows
            if any(r.split is None for r in rows):
                rows = assign_splits(rows, seed=dcfg.seed)
            write_jsonl(rows, st.path("opinion_qa.jsonl"))
            st.write_json("stats.json", {**stats(rows), "warnings": report.warnings})
            log(f"dataset: {len(rows)} rows from {', '.join(files)}")
        return st.path("opinion_qa.jsonl"), dcfg.config_hash()


@dataclass
class QualityStageConfig(Config):
    """Stage ``quality``: the dataset's trait classifier, diversity and word clouds."""

    dataset_hash: str = option(help="config hash of the dataset stage (covers its bytes)")
    top_words: int = option(15, help="distinctive words per trait")
    seed: int = option(0, help="classifier seed")


def stage_quality(cfg: RunConfig, dataset: Path, dataset_hash: str) -> dict[str, Any]:
    """What ``text2emoji data quality`` measures, on the run's dataset (word clouds included)."""
    from finetune.quality import quality_report
    from finetune.validate import load_rows
    from text2emoji.figures import word_clouds

    qcfg = QualityStageConfig(dataset_hash=dataset_hash, seed=cfg.seed)
    with open_stage(cfg.out, "quality", qcfg, force=cfg.force, seed=cfg.seed) as st:
        if not st.reused:
            report = quality_report(load_rows([dataset]), qcfg.top_words, qcfg.seed)
            st.write_json("quality.json", report)
            word_clouds(report, st.dir)
        return st.read_json("quality.json")


def _model_fields(cfg: ModelConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ModelConfig.__dataclass_fields__}


def stage_model(cfg: RunConfig, get_lm: Callable[[], LoadedModel]) -> dict[str, Any]:
    with open_stage(cfg.out, "model", ModelConfig(**_model_fields(cfg)), force=cfg.force) as st:
        if not st.reused:
            st.write_json("model.json", get_lm().info())
        return st.read_json("model.json")


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run every stage (reusing finished ones); write the report; return the headline numbers."""
    from text2emoji import eval_cli, probe_cli, train_cli
    from text2emoji.report import short_summary, write_report

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    preset = PRESETS[cfg.preset]
    n_q = preset["n_questions"] if cfg.n_questions is None else cfg.n_questions
    new_tokens = preset["max_new_tokens"] if cfg.max_new_tokens is None else cfg.max_new_tokens
    n_random = preset["n_random"] if cfg.n_random is None else cfg.n_random
    model = {k: getattr(cfg, k) for k in ("model", "device", "dtype")}
    common = dict(out=cfg.out, force=cfg.force, seed=cfg.seed)

    @functools.cache
    def get_lm() -> LoadedModel:  # loaded once, and only if a stage has work to do
        log(f"loading {cfg.model}")
        return load_model(cfg)

    dataset: list[Any] = []
    steps = [
        ("dataset", lambda: dataset.extend(stage_dataset(cfg))),
        ("quality", lambda: stage_quality(cfg, *dataset)),
        ("model", lambda: stage_model(cfg, get_lm)),
        ("train", lambda: train_cli.train_traits(train_cli.TrainCommandConfig(
            **model, preset=cfg.preset, data=cfg.data, all_traits=True, max_steps=cfg.max_steps, **common))),
        ("evaluate", lambda: eval_cli.evaluate(eval_cli.EvaluateConfig(
            **model, load_in_4bit=cfg.load_in_4bit, data=cfg.data, preset=cfg.preset, n_questions=n_q,
            max_new_tokens=new_tokens, batch_size=cfg.batch_size, **common))),
        ("neurons", lambda: probe_cli.neurons(probe_cli.NeuronsConfig(
            **model, load_in_4bit=cfg.load_in_4bit, batch_size=cfg.batch_size, **common))),
        ("trace", lambda: probe_cli.trace(probe_cli.TraceConfig(
            **model, load_in_4bit=cfg.load_in_4bit, batch_size=cfg.batch_size, lens_emojis=preset["lens_emojis"], **common))),
        ("ablate", lambda: probe_cli.ablate(probe_cli.AblateConfig(
            **model, load_in_4bit=cfg.load_in_4bit, data=cfg.data, n_questions=n_q, n_random=n_random,
            n_random_generation=preset["n_random_generation"], max_new_tokens=new_tokens,
            n_generation_questions=preset["n_generation_questions"],
            batch_size=cfg.batch_size, **common))),
        ("patch", lambda: probe_cli.patch(probe_cli.PatchConfig(
            **model, load_in_4bit=cfg.load_in_4bit, data=cfg.data, n_questions=n_q, n_random=n_random,
            batch_size=cfg.batch_size, **common))),
    ]
    seconds: dict[str, float] = {}
    for i, (name, step) in enumerate(steps, 1):
        t = time.perf_counter()
        log(f"run: stage {i}/{len(steps)} {name}")
        step()
        seconds[name] = round(time.perf_counter() - t, 1)
        log(f"run: {name} done in {seconds[name]:.0f}s (total {time.perf_counter() - t0:.0f}s)")
    t = time.perf_counter()
    summary = short_summary(write_report(Path(cfg.out)))
    seconds["report"] = round(time.perf_counter() - t, 1)
    # this invocation's times: a reused stage takes ~0 s
    summary["stage_seconds"] = seconds
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(Path(cfg.out) / "summary.json", summary)
    return summary
