"""Stage ``trace``: each trait's emoji probability pre/post PEFT on the probe suite, and its
logit lens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2emoji.core.config import option
from text2emoji.core.files import atomic_write_json, atomic_write_text
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import Progress
from text2emoji.stages.base import RunConfig, Stage, print_json, read_json
from text2emoji.stages.probing import (
    REMOTE_HELP,
    ProbeConfig,
    check_remote_probe,
    load_suite,
    open_models,
    probe_inputs,
)


@dataclass
class TraceConfig(ProbeConfig):
    """``text2emoji trace``: each trait's emoji probability pre/post and its logit lens."""

    preset: Preset = option("quick", help="quick: one lens emoji per trait; paper: three")
    lens_emojis: int | None = option(None, help="how many of each trait's emojis the logit lens decodes (its first n; "
                                     "each costs a vocabulary projection per layer and prompt; default: the preset's)", low=1)
    remote: bool = option(False, help=REMOTE_HELP)

    def validate(self) -> None:
        super().validate()
        check_remote_probe(self)


def _trace(cfg: TraceConfig, out: Path) -> None:
    from interp.trace_analysis import trace_emojis

    suite = load_suite(cfg)
    traits = cfg.trait_list()
    texts = suite.texts
    model, tokenizer, patches = open_models(cfg)
    measure = None
    if patches is not None:  # --remote
        from interp.remote_probe import emoji_trace_nnsight

        def measure(adapter: str | None, emojis: list[str], lens: list[str]) -> dict[str, Any]:
            return emoji_trace_nnsight(model, tokenizer, texts, emojis, lens_emojis=lens, chat=True,
                                       patches=patches[adapter] if adapter else (), batch_size=cfg.batch_size,
                                       remote=True)
    prog = Progress("trace", len(traits) + 1)
    res = trace_emojis(model, tokenizer, suite, traits, lens_emojis=cfg.lens_emojis, batch_size=cfg.batch_size,
                       n_boot=cfg.n_boot, seed=cfg.seed, progress=lambda note: prog.step(note=note), measure=measure)
    summary = res.summary()
    atomic_write_json(out / "trace.json", res.to_dict())
    atomic_write_json(out / "summary.json", summary)
    lines = ["# Emoji probability pre vs post PEFT", "",
             "log P(any of the trait's emojis) as the first tokens of the answer to each probe prompt "
             "(chat template; exact over all of each emoji's tokens, no leading space); mean over "
             f"{len(texts)} prompts in {suite.n_clusters} independent clusters; change with a 95% cluster-bootstrap "
             "interval and a two-sided cluster sign-flip p, Holm over the traits.", "",
             "| trait | emojis | pre | post | change [95% CI] | p | p (Holm) | prompts up |", "|---|---|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {t} | {' '.join(s['emojis'])} | {s['mean_logprob_any_pre']:.2f} | {s['mean_logprob_any_post']:.2f} | "
              f"{s['mean_change']:+.2f} [{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}] | {s['p']:.3g} | {s['p_holm']:.3g} | "
              f"{s['n_prompts_up']}/{s['n_prompts']} |" for t, s in summary.items()]
    atomic_write_text(out / "trace.md", "\n".join(lines) + "\n")


def _draw(stage_dir: Path) -> list[Path]:
    from text2emoji import figures

    return figures.draw_trace(stage_dir)


def _from_run(run: RunConfig) -> TraceConfig:
    return TraceConfig(model=run.model, run_dir=run.run_dir, batch_size=run.batch_size, seed=run.seed,
                       preset=run.preset)


TRACE = Stage(
    name="trace", config=TraceConfig, from_run=_from_run, compute=_trace, inputs=probe_inputs,
    resolve=lambda cfg: fill_preset(cfg, "analysis"), draw=_draw,
    metrics=lambda d: {"trace": read_json(d / "summary.json")},
    show=lambda cfg, d: print_json(read_json(d / "summary.json")),
    help="each trait's emoji probability pre/post PEFT on the probe suite, and its logit lens",
    figures=(("emoji_prob.png", "log P(trait emoji) per prompt, pre vs post"),
             ("logit_lens.png", "Logit lens: log P(trait emoji) after every layer")),
)
