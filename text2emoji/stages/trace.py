"""Stage ``trace``: each trait's emoji probability pre/post PEFT on the probe suite, and its
logit lens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from text2emoji.core.config import ConfigError, option
from text2emoji.core.files import atomic_write_json, atomic_write_text
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import Progress
from text2emoji.stages.base import RunConfig, Stage, print_json, read_json
from text2emoji.stages.probing import ProbeConfig, load_peft, load_suite, probe_inputs


@dataclass
class TraceConfig(ProbeConfig):
    """``text2emoji trace``: each trait's emoji probability pre/post and its logit lens."""

    preset: Preset = option("quick", help="quick: one lens emoji per trait; paper: three")
    lens_emojis: int | None = option(None, help="how many of each trait's emojis the logit lens decodes (its first n; "
                                     "each costs a vocabulary projection per layer and prompt; default: the preset's)")

    def validate(self) -> None:
        super().validate()
        if self.lens_emojis is not None and self.lens_emojis < 1:
            raise ConfigError(f"lens_emojis: must be >= 1, got {self.lens_emojis}")


def _trace(cfg: TraceConfig, out: Path) -> None:
    from interp.intervene import any_emoji_logprob
    from interp.models import adapter_disabled
    from interp.neurons import bootstrap_mean
    from interp.tracing import emoji_trace

    suite = load_suite(cfg)
    lm = load_peft(cfg)
    model, tok = lm.model, lm.tokenizer
    traits = cfg.trait_list()
    texts = suite.texts
    prog = Progress("trace", len(traits) + 1)
    result: dict[str, Any] = {"prompts": [p.id for p in suite.prompts], "traits": {}}
    summary: dict[str, Any] = {}

    def measure(emojis: list[str], lens_emojis: list[str]) -> dict[str, Any]:
        got = emoji_trace(model, tok, texts, emojis, lens_emojis=lens_emojis, chat=True, batch_size=cfg.batch_size)
        return {"logprob": {k: got[k] for k in ("no_space", "leading_space")}, "lens": got["lens"]}  # lens [P, E, L]

    def any_lens(lens: np.ndarray) -> np.ndarray:  # log P(any lens emoji) per prompt and layer
        m = lens.max(1, keepdims=True)
        return (m + np.log(np.exp(lens - m).sum(1, keepdims=True)))[:, 0]

    # the base model once, for every trait's emojis: without its adapter, nothing depends on the trait
    every = list(dict.fromkeys(e for t in traits for e in suite.trait_emojis[t]))
    every_lens = list(dict.fromkeys(e for t in traits for e in suite.trait_emojis[t][: cfg.lens_emojis]))
    with adapter_disabled(model):
        base = measure(every, every_lens)
    prog.step(note="base model")
    for t in traits:
        emojis = suite.trait_emojis[t]
        lens_emojis = emojis[: cfg.lens_emojis]
        cols, lens_cols = [every.index(e) for e in emojis], [every_lens.index(e) for e in lens_emojis]
        pre = {"logprob": {k: v[:, cols] for k, v in base["logprob"].items()}, "lens_any": any_lens(base["lens"][:, lens_cols])}
        model.set_adapter(t)
        post = measure(emojis, lens_emojis)
        post["lens_any"] = any_lens(post["lens"])
        any_pre = any_emoji_logprob(pre["logprob"]["no_space"])
        any_post = any_emoji_logprob(post["logprob"]["no_space"])
        lo, hi = bootstrap_mean((any_post - any_pre)[:, None], cfg.n_boot, cfg.seed)
        result["traits"][t] = {
            "emojis": emojis,
            "logprob_pre": {k: v.tolist() for k, v in pre["logprob"].items()},
            "logprob_post": {k: v.tolist() for k, v in post["logprob"].items()},
            "any_emoji_pre": any_pre.tolist(), "any_emoji_post": any_post.tolist(),
            "logit_lens_emojis": lens_emojis,
            "logit_lens_pre": pre["lens_any"].mean(0).tolist(), "logit_lens_post": post["lens_any"].mean(0).tolist(),
        }
        summary[t] = {
            "emojis": emojis,
            "mean_logprob_any_pre": float(any_pre.mean()), "mean_logprob_any_post": float(any_post.mean()),
            "mean_change": float((any_post - any_pre).mean()), "ci": [float(lo[0]), float(hi[0])],
            "n_prompts_up": int((any_post > any_pre).sum()), "n_prompts": len(texts),
            "per_emoji_mean_change": {e: float((post["logprob"]["no_space"][:, j] - pre["logprob"]["no_space"][:, j]).mean())
                                      for j, e in enumerate(emojis)},
            "lens_peak_layer_post": int(np.argmax(post["lens_any"].mean(0))),
        }
        prog.step(note=t)
    atomic_write_json(out / "trace.json", result)
    atomic_write_json(out / "summary.json", summary)
    lines = ["# Emoji probability pre vs post PEFT", "",
             "log P(any of the trait's emojis) as the first tokens of the answer to each probe prompt "
             "(chat template; exact over all of each emoji's tokens, no leading space); mean over "
             f"{len(texts)} prompts, change with a 95% bootstrap interval.", "",
             "| trait | emojis | pre | post | change [95% CI] | prompts up |", "|---|---|---:|---:|---|---:|"]
    lines += [f"| {t} | {' '.join(s['emojis'])} | {s['mean_logprob_any_pre']:.2f} | {s['mean_logprob_any_post']:.2f} | "
              f"{s['mean_change']:+.2f} [{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}] | {s['n_prompts_up']}/{s['n_prompts']} |"
              for t, s in summary.items()]
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
    show=lambda d: print_json(read_json(d / "summary.json")),
    help="each trait's emoji probability pre/post PEFT on the probe suite, and its logit lens",
    figures=(("emoji_prob.png", "log P(trait emoji) per prompt, pre vs post"),
             ("logit_lens.png", "Logit lens: log P(trait emoji) after every layer")),
)
