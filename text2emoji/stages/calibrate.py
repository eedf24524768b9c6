"""Stage ``calibrate``: the false-positive rate of each family of tests (neurons, trace,
ablation, patching) under null experiments built on this run's model and data so that no
effect exists (:mod:`interp.calibration` states each null)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2emoji.core.config import option
from text2emoji.core.files import atomic_write_json, atomic_write_text
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import Progress
from text2emoji.stages.base import (
    RunConfig,
    Stage,
    artifact,
    check_data_files,
    data_option,
    emoticons_option,
    print_json,
    read_json,
)
from text2emoji.stages.data import dataset, held_out_questions
from text2emoji.stages.probing import (
    ProbeConfig,
    load_peft,
    load_suite,
    probe_inputs,
    saved_activations,
    saved_stage_matches,
)


@dataclass
class CalibrateConfig(ProbeConfig):
    """``text2emoji calibrate``: false-positive rates of the run's tests under nulls built by
    construction, on the first trait given (default: openness) and its adapter."""

    preset: Preset = option("quick", help="quick or paper: the defaults of the fields left unset")
    k: int = option(10, help="neurons per null candidate set (as ablate/patch's --k)", low=1)
    n_null: int | None = option(None, help="null experiments per family (default: the preset's)", low=1)
    n_random_null: int | None = option(None, help="matched random sets per null ablation/patching experiment "
                                       "(default: the preset's)", low=1)
    n_perm: int = option(500, help="sign flips per null neuron/trace test", low=1)
    alpha: float = option(0.05, help="significance level a false positive is counted at", gt=0, lt=1)
    n_questions: int | None = option(None, help="held-out test questions the null ablations and patches are "
                                     "measured on (0 = all; default: the preset's)", low=0)
    data: list[str] = data_option()
    allow_emoticons: bool = emoticons_option()

    def validate(self) -> None:
        super().validate()
        check_data_files(self.data)

    def trait(self) -> str:
        return self.trait_list()[0]


def _calibrate(cfg: CalibrateConfig, out: Path) -> None:
    from interp.calibration import calibrate_interventions, calibrate_neurons, calibrate_trace
    from interp.intervene import any_emoji_logprob
    from interp.models import adapter_disabled
    from interp.neuron_analysis import capture_pre_post
    from interp.tracing import emoji_logprobs

    trait = cfg.trait()
    one = cfg.replace(traits=[trait])
    suite = load_suite(cfg)
    lm = load_peft(one)
    model, tok = lm.model, lm.tokenizer
    model.set_adapter(trait)
    prog = Progress("calibrate", 3)
    clusters = suite.clusters()
    # the real differences the nulls are built from: the neurons and trace stages' own where they ran on this
    # model, suite and adapter (the same numbers), else computed here
    saved = saved_activations(one, trait)
    if saved is None:
        pre, posts = capture_pre_post(model, tok, suite.texts, [trait], site=cfg.site, batch_size=cfg.batch_size)
        saved = pre, posts[trait]
    families = [calibrate_neurons(saved[1] - saved[0], clusters, n_null=cfg.n_null, n_perm=cfg.n_perm, alpha=cfg.alpha,
                                  seed=cfg.seed)]
    prog.step(note="neurons")
    emojis = suite.trait_emojis[trait]
    change = saved_trace_change(one, trait, emojis)
    if change is None:
        with adapter_disabled(model):
            lp_pre = emoji_logprobs(model, tok, suite.texts, emojis, chat=True, batch_size=cfg.batch_size)
        lp_post = emoji_logprobs(model, tok, suite.texts, emojis, chat=True, batch_size=cfg.batch_size)
        change = any_emoji_logprob(lp_post) - any_emoji_logprob(lp_pre)
    families.append(calibrate_trace(change, clusters, n_null=cfg.n_null, n_perm=cfg.n_perm, alpha=cfg.alpha,
                                    seed=cfg.seed))
    prog.step(note="trace")
    questions = held_out_questions(one)[trait]
    families += calibrate_interventions(model, tok, questions, emojis, cfg.k, n_null=cfg.n_null,
                                        n_random=cfg.n_random_null, alpha=cfg.alpha, seed=cfg.seed, site=cfg.site,
                                        batch_size=cfg.batch_size)
    prog.step(note="ablation, patching")
    atomic_write_json(out / "calibration.json", {"trait": trait, "alpha": cfg.alpha,
                                                 "families": {f.family: f.to_dict() for f in families}})
    summary = {f.family: f.summary() for f in families}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "calibration.md", "\n".join(table(summary, trait)) + "\n")


def saved_trace_change(cfg: CalibrateConfig, trait: str, emojis: list[str]) -> Any:
    """The trace stage's per-prompt change of log P(any of ``emojis``), post − pre, where it ran
    on this model, suite and adapter with these emojis; else None."""
    import numpy as np

    want = {k: v for k, v in probe_inputs(cfg).items() if k in (trait, "probes")}
    if not saved_stage_matches(cfg.run_dir.out, "trace", cfg.model, cfg.probes, None, want):
        return None
    t = ((read_json(artifact(cfg.run_dir.out, "trace") / "trace.json") or {}).get("traits") or {}).get(trait) or {}
    if t.get("emojis") != list(emojis) or not t.get("any_emoji_post"):
        return None
    return np.asarray(t["any_emoji_post"]) - np.asarray(t["any_emoji_pre"])


def table(summary: dict[str, Any], trait: str) -> list[str]:
    """The calibration table (markdown lines), as ``calibration.md`` and the report show it."""
    first = next(iter(summary.values()), {})
    lines = [f"False-positive rate at α = {first.get('alpha', 0.05)} of each family of tests, under null experiments "
             f"built on this run's {trait} adapter so that no effect exists ({first.get('n_null')} per family; "
             "95% Wilson intervals). Beside it, the naive test on the same nulls: per-prompt sign flips (prompts "
             "treated as independent) or uniformly drawn random neurons (unmatched).", "",
             "| family | null experiment | test | false-positive rate [95% CI] | naive test | its rate [95% CI] |",
             "|---|---|---|---|---|---|"]
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    for fam, s in summary.items():
        c = s.get("comparison") or {}
        naive = "n/a" if not c else f"{c['false_positive_rate']:.2f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]"
        lines.append(f"| {fam} | {cell(s['null'])} | {cell(s['test'])} | {s['false_positive_rate']:.2f} "
                     f"[{s['ci'][0]:.2f}, {s['ci'][1]:.2f}] | {cell(c.get('test', 'n/a'))} | {naive} |")
    return lines


def _inputs(cfg: CalibrateConfig) -> dict[str, str]:
    """The trait's adapter and the probe suite, the dataset (its questions), and the neurons and
    trace results it reads where they match (else it computes the same numbers itself)."""
    from text2emoji.core.files import file_hash

    one = cfg.replace(traits=[cfg.trait()])
    out = {**probe_inputs(one), "dataset": dataset(cfg, force=False)[1]}
    if saved_activations(one, cfg.trait()) is not None:
        acts = artifact(cfg.run_dir.out, "neurons") / "activations"
        out["activations"] = file_hash(acts / "pre.npy", acts / f"post_{cfg.trait()}.npy")
    if (artifact(cfg.run_dir.out, "trace") / "trace.json").is_file():
        out["trace"] = file_hash(artifact(cfg.run_dir.out, "trace") / "trace.json")
    return out


def _draw(stage_dir: Path) -> list[Path]:
    from text2emoji import figures

    return figures.draw_calibration(stage_dir)


def _from_run(run: RunConfig) -> CalibrateConfig:
    return CalibrateConfig(model=run.model, run_dir=run.run_dir, data=run.data, allow_emoticons=run.allow_emoticons, preset=run.preset, seed=run.seed,
                           batch_size=run.batch_size, n_questions=run.n_questions)


CALIBRATE = Stage(
    name="calibrate", config=CalibrateConfig, from_run=_from_run, compute=_calibrate, inputs=_inputs,
    resolve=lambda cfg: fill_preset(cfg, "analysis"), draw=_draw,
    metrics=lambda d: {"calibration": read_json(d / "summary.json")},
    show=lambda cfg, d: print_json(read_json(d / "summary.json")),
    help="false-positive rate of each family of tests (neurons, trace, ablation, patching) under null "
         "experiments built so that no effect exists",
    figures=(("calibration.png", "False-positive rates under nulls built by construction"),),
)
