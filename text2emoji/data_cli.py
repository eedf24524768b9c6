"""``text2emoji data ...``: validate, stats, split, quality and build for Opinion QA sets."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from interp.embedded import DEFAULT_MODEL
from text2emoji.core.config import Config, ConfigError, option


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


@dataclass
class ValidateConfig(Config):
    """``text2emoji data validate``."""

    paths: list[str] = option(help="dataset files: CSV, JSONL or parquet; official or project layout",
                              positional=True, metavar="PATH")
    max_length: int = option(512, help="training max length in tokens (the chat-formatted example)", low=1)
    tokenizer: str = option(DEFAULT_MODEL, help="model whose tokenizer measures lengths; 'none' skips that check")
    allow_emoticons: bool = option(False, help="accept ASCII emoticons (:) <3) and emojis' text forms without "
                                   "U+FE0F (a bare ❤)")


def cmd_validate(cfg: ValidateConfig) -> None:
    from finetune.validate import validate_files
    from interp.models import load_tokenizer

    tok = None if cfg.tokenizer == "none" else load_tokenizer(cfg.tokenizer)
    report = validate_files(cfg.paths, tokenizer=tok, max_length=cfg.max_length, allow_emoticons=cfg.allow_emoticons)
    for w in report.warnings:
        print(f"text2emoji: warning: {w}", file=sys.stderr)
    report.raise_if_problems()
    _print_json({"ok": True, "n_rows": len(report.rows), "files": cfg.paths,
                 "length_checked": tok is not None, "warnings": report.warnings})


@dataclass
class StatsConfig(Config):
    """``text2emoji data stats``."""

    paths: list[str] = option([], help="dataset files (none: the bundled dataset)",
                              positional=True, metavar="PATH")


def cmd_stats(cfg: StatsConfig) -> None:
    from finetune.split import stats
    from finetune.validate import load_rows

    _print_json(stats(load_rows(cfg.paths or None)))


@dataclass
class SplitConfig(Config):
    """``text2emoji data split``."""

    paths: list[str] = option(help="dataset files to split", positional=True, metavar="PATH")
    out: str = option(help="output JSONL (project layout, with a split field)", hash=False)
    test_fraction: float = option(0.2, help="share of topics in the test split", gt=0, lt=1)
    seed: int = option(0, help="shuffle seed")


def cmd_split(cfg: SplitConfig) -> None:
    from finetune.io import write_jsonl
    from finetune.split import assign_splits, stats
    from finetune.validate import load_rows

    rows = assign_splits(load_rows(cfg.paths), cfg.test_fraction, cfg.seed)
    write_jsonl(rows, cfg.out)
    _print_json({"out": cfg.out, **stats(rows)})


@dataclass
class QualityConfig(Config):
    """``text2emoji data quality``."""

    paths: list[str] = option([], help="dataset files with a split (none: the bundled dataset)",
                              positional=True, metavar="PATH")
    out: str = option("results/dataset", help="run directory; writes out/quality/", hash=False)
    top_words: int = option(15, help="distinctive words listed (and drawn) per trait", low=1)
    seed: int = option(0, help="classifier seed")


def cmd_quality(cfg: QualityConfig) -> None:
    from finetune.quality import quality_report
    from finetune.validate import load_rows
    from text2emoji.core.runs import open_stage
    from text2emoji.figures import word_clouds

    rows = load_rows(cfg.paths or None)
    if not any(r.split == "train" for r in rows) or not any(r.split == "test" for r in rows):
        print("text2emoji: warning: the rows have no train/test split: the trait classifier's accuracy is "
              "not measured (null); `text2emoji data split` adds one", file=sys.stderr)
    # cheap (seconds) and the data files may change under the same config: always recompute
    with open_stage(cfg.out, "quality", cfg, force=True, seed=cfg.seed) as st:
        report = quality_report(rows, cfg.top_words, cfg.seed)
        st.write_json("quality.json", report)
        figures = word_clouds(report, st.dir)
    summary = {k: report[k] for k in ("classifier_test_accuracy", "near_duplicate_rate", "diversity")}
    _print_json({**summary, "quality_json": str(st.path("quality.json")),
                 "figures": [str(p) for p in figures]})


@dataclass
class BuildConfig(Config):
    """``text2emoji data build``."""

    topics: str = option(help="topics: text file, one per line, or JSONL with topic (and domain)")
    generator: str = option(
        DEFAULT_MODEL,
        help="local chat model (embedded name, HF directory, hub id) or openai:MODEL for an "
        "OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY)",
    )
    traits: list[str] = option([], help="traits to write (default: all five)", flag="--traits")
    out: str = option("results/dataset/built.jsonl", help="output JSONL; rows already there are kept", hash=False)
    seed: int = option(0, help="sampling seed (retries add to it)")
    attempts: int = option(3, help="tries per (topic, trait) before it is reported as rejected", low=1)
    batch_size: int = option(8, help="requests per batch", low=1)
    max_new_tokens: int = option(96, help="tokens per answer (local generators)", low=1)
    max_length: int = option(512, help="training max length in tokens", low=1)
    tokenizer: str = option(DEFAULT_MODEL, help="model whose tokenizer measures lengths; 'none' skips that check")
    device: str = option("auto", help="device for a local generator")

    def validate(self) -> None:
        from text2emoji.core.schema import TRAITS

        bad = [t for t in self.traits if t not in TRAITS]
        if bad:
            raise ConfigError(f"traits: unknown {', '.join(bad)}; valid: {', '.join(TRAITS)}")


def cmd_build(cfg: BuildConfig) -> None:
    from finetune.build import build_rows, local_generator, openai_generator, read_topics
    from interp.models import load_tokenizer
    from text2emoji.core.config import save_config
    from text2emoji.core.schema import TRAITS

    topics = read_topics(cfg.topics)
    if cfg.generator.startswith("openai:"):
        gen = openai_generator(cfg.generator.removeprefix("openai:"))
    else:
        gen = local_generator(cfg.generator, cfg.max_new_tokens, cfg.batch_size, cfg.device)
    save_config(cfg, f"{cfg.out}.config.json")
    result = build_rows(
        topics, cfg.traits or list(TRAITS), gen, cfg.out, seed=cfg.seed, attempts=cfg.attempts,
        batch_size=cfg.batch_size, max_length=cfg.max_length,
        tokenizer=None if cfg.tokenizer == "none" else load_tokenizer(cfg.tokenizer),
    )
    _print_json({"out": cfg.out, "written": result.written, "kept": result.skipped_existing,
                 "rejected": result.rejected})
