"""Stages ``ablate`` (zero/mean-ablate each trait's top neurons in the post-PEFT model vs random
neuron sets matched on activation size, beside a placebo set) and ``patch`` (their values patched
between base and post-PEFT model both ways vs random sets matched on the size of the patch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from interp.hooks import DEFAULT_SITE
from text2emoji.core.config import ConfigError, option
from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_write_json, atomic_write_text, file_hash
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import Progress
from text2emoji.stages.base import (
    RunConfig,
    Stage,
    artifact,
    check_data_files,
    data_option,
    emoticons_option,
    pct,
    print_json,
    pval,
    read_json,
    share,
)
from text2emoji.stages.data import dataset, held_out_questions
from text2emoji.stages.probing import (
    REMOTE_HELP,
    ProbeConfig,
    check_remote_probe,
    load_suite,
    open_models,
    probe_inputs,
)


@dataclass
class InterveneConfig(ProbeConfig):
    k: int = option(10, help="candidate neurons: the top k of the neurons stage", low=1)
    rank_by: Literal["mean", "effect"] = option("mean", help="which neurons-stage ranking gives the candidates")
    preset: Preset = option("quick", help="quick or paper: the defaults of the fields left unset")
    n_random: int | None = option(None, help="the most random neuron sets a control draws (it stops once 10 "
                                  "are as extreme as the candidates in each tail) "
                                  "(default: the preset's)", low=0)
    n_questions: int | None = option(None, help="held-out test questions per trait the effect is measured on "
                                     "(0 = all; default: the preset's)", low=0)
    data: list[str] = data_option()
    allow_emoticons: bool = emoticons_option()

    def validate(self) -> None:
        super().validate()
        check_data_files(self.data)


@dataclass
class AblateConfig(InterveneConfig):
    """``text2emoji ablate``: zero- and mean-ablate each trait's top neurons in the post-PEFT
    model, against random sets of as many neurons."""

    modes: list[str] = option(["zero", "mean"], help="ablation modes: zero, mean", flag="--mode")
    generation: bool = option(True, help="also measure the emoji rate and ESR of generated answers")
    n_random_generation: int | None = option(None, help="random sets ablated during generation (costly; "
                                             "default: the preset's)", low=0)
    n_generation_questions: int | None = option(None, help="questions answered intact and ablated (0 = all "
                                                "--n-questions; default: the preset's)", low=0)
    max_new_tokens: int | None = option(None, help="tokens per generated answer (default: the preset's)", low=1)
    remote: bool = option(False, help=REMOTE_HELP + "; each ablated set is one more pass over all the questions' emoji "
                          "sequences on the server (no cache of the last layer there), 32 sets per request; generation "
                          "is greedy, all its batches in one request")

    def validate(self) -> None:
        super().validate()
        if bad := [m for m in self.modes if m not in ("zero", "mean")]:
            raise ConfigError(f"modes: unknown {', '.join(bad)}; valid: zero, mean")
        if self.remote and self.site != DEFAULT_SITE:
            raise ConfigError(f"site: --remote ablates the last layer's neurons ({DEFAULT_SITE}); got {self.site!r}")
        check_remote_probe(self)


@dataclass
class PatchConfig(InterveneConfig):
    """``text2emoji patch``: patch each trait's top neurons' post-PEFT values into the base
    (forward) and their base values into the post-PEFT model (reverse)."""


def _candidates(cfg: InterveneConfig, trait: str) -> list[int]:
    path = artifact(cfg.run_dir.out, "top_neurons")
    if not path.is_file():
        raise UserError(f"{path} not found; run `text2emoji neurons --out {cfg.run_dir.out}` first")
    tables = json.loads(path.read_text(encoding="utf-8"))
    if trait not in tables:
        raise UserError(f"{path} has no neurons for trait {trait}; run `text2emoji neurons --trait {trait}`")
    rows = tables[trait]["by_" + cfg.rank_by]
    if len(rows) < cfg.k:
        raise UserError(f"{path} lists {len(rows)} neurons for {trait}, fewer than --k {cfg.k}")
    return [r["neuron"] for r in rows[: cfg.k]]


def _ablate(cfg: AblateConfig, out: Path) -> None:
    from interp.behaviour.generation import DecodeSettings
    from interp.experiments import ablate_trait
    from interp.results import TraitAblation, summaries, with_holm

    suite = load_suite(cfg)
    traits = cfg.trait_list()
    settings = DecodeSettings(max_new_tokens=cfg.max_new_tokens) if cfg.generation else None

    def one(model: Any, tok: Any, t: str, qs: list[str], cand: list[int], patches: Any = None) -> dict[str, Any]:
        scorer = decode = None
        if patches is not None:  # --remote
            from interp.remote_probe import RemoteScorer, generate_nnsight
            from interp.tracing import emoji_pairs

            scorer = RemoteScorer(model, tok, emoji_pairs(tok, qs, suite.trait_emojis[t]), patches=patches,
                                  site=cfg.site, batch_size=cfg.batch_size, remote=True)

            def decode(batches: list[tuple[list[str], Any, Any, Any]]) -> list[list[str]]:
                return generate_nnsight(model, tok, [(qs, m, f) for qs, m, f, _ in batches], batches[0][3],
                                        patches=patches, site=cfg.site, remote=True)
        return ablate_trait(model, tok, qs, suite.trait_emojis[t], cand, modes=cfg.modes, n_random=cfg.n_random,
                            seed=cfg.seed, site=cfg.site, n_boot=cfg.n_boot, batch_size=cfg.batch_size,
                            generation=settings, n_random_generation=cfg.n_random_generation,
                            n_generation_questions=cfg.n_generation_questions, scorer=scorer, decode=decode).to_dict()

    # the file holds every trait done so far (an interrupted stage resumes): read back, typed
    done = _per_trait(cfg, out / "ablation.json", "ablate", one)
    results = with_holm({t: TraitAblation.from_dict(r) for t, r in done.items() if t in traits}, cfg.modes)
    atomic_write_json(out / "ablation.json", {**done, **{t: r.to_dict() for t, r in results.items()}})
    summary = summaries(results, traits)
    atomic_write_json(out / "summary.json", summary)
    first = results[traits[0]].modes[cfg.modes[0]].random_control
    floor = f"; smallest attainable p {first.p_floor:.3g}" if first else ""
    lines = ["# Ablation of the top neurons vs matched random neurons", "",
             f"Post-PEFT model; change in log P(any of the trait's emojis) as the answer's first tokens, mean over "
             f"{cfg.n_questions or 'all'} held-out test questions [95% bootstrap CI over questions]. Control: "
             f"up to {cfg.n_random} random sets of k={cfg.k} last-layer neurons (drawn until 10 are as extreme in each "
             "tail), each neuron matched to a candidate on "
             f"activation size (zero: mean |activation|; mean: mean |activation - its mean|, at the scored positions). "
             f"p: two-sided, the candidates' mean among the random sets'{floor}; Holm over the "
             f"{len(traits) * len(cfg.modes)} tests of this table (traits x modes). Placebo: the k neurons of "
             "largest activation size (as matched on), tested the same way (not in the Holm family); it should come "
             "out null. tested: the candidates with size peers, which the set test ablates (the others are listed "
             "below).", "",
             "| trait | mode | tested | Δ log P [95% CI] | random: mean [2.5%, 97.5%] | p | p (Holm) | placebo Δ | placebo p |",
             "|---|---|---:|---|---|---:|---:|---:|---:|"]
    nan = float("nan")
    for t in traits:
        for mode in cfg.modes:
            e = results[t].modes[mode]
            d, rc, pl = e.candidate_delta, e.random_control, e.placebo
            lines.append(f"| {t} | {mode} | {len(e.tested if e.tested is not None else e.neurons)}/{e.k} | "
                         f"{d.mean:+.3f} [{d.ci_lo:+.3f}, {d.ci_hi:+.3f}] | "
                         f"{rc.mean if rc else nan:+.3f} [{rc.p2_5 if rc else nan:+.3f}, {rc.p97_5 if rc else nan:+.3f}] | "
                         f"{pval(e.p)} | {pval(e.p_holm)} | {pl.delta.mean if pl else nan:+.3f} | {pval(pl.p if pl else None)} |")
    lines += _excluded_lines({(t, m): results[t].modes[m] for t in traits for m in cfg.modes}, "ablated")
    if cfg.generation:
        lines += ["", "Generated answers (greedy): emoji rate and ESR intact vs ablated.", "",
                  "| trait | emoji rate intact | ablated | ESR intact | ablated |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {t} | {pct(summary[t]['generation']['emoji_rate_intact'])} | {pct(summary[t]['generation']['emoji_rate_ablated'])} | "
                  f"{pct(summary[t]['generation']['esr_intact'])} | {pct(summary[t]['generation']['esr_ablated'])} |" for t in traits]
    atomic_write_text(out / "ablation.md", "\n".join(lines) + "\n")


def _excluded_lines(results: dict[tuple[str, str], Any], verb: str) -> list[str]:
    """Neurons left out of a set test for want of size peers, each with its effect alone."""
    lines = []
    for (t, mode), r in results.items():
        for who, ex in (("candidates", r.excluded), ("placebo", getattr(getattr(r, "placebo", None), "excluded", []))):
            if ex:
                lines.append(f"- {t}, {mode}, {who}: " + ", ".join(
                    f"neuron {e['neuron']} (size {e['size']:.3g}; {verb} alone Δ {e['delta']:+.3f})" for e in ex))
    if not lines:
        return []
    from interp.intervene import MIN_PEERS, SIZE_TOLERANCE

    return ["", f"Left out of the set tests (fewer than {MIN_PEERS} neurons of the layer within a factor "
            f"{SIZE_TOLERANCE} of their size, so no random set can match them); the tables test the other "
            "neurons of each set:", "", *lines]


def _per_trait(cfg: InterveneConfig, path: Path, what: str, one: Any) -> dict[str, Any]:
    """``one(model, tokenizer, trait, questions, candidates)`` for each trait with the trait's
    adapter active (with ``--remote``: the remote model, and the trait's adapter as the sixth
    argument, :class:`interp.remote_probe.LoraPatch` es); ``path`` is rewritten after every
    trait, and traits already in it are kept (an interrupted stage resumes)."""
    results = read_json(path) or {}
    todo = [t for t in cfg.trait_list() if t not in results]
    if todo:
        model, tokenizer, patches = open_models(cfg)
        questions = held_out_questions(cfg)
    prog = Progress(what, len(cfg.trait_list()))
    for t in cfg.trait_list():
        if t in todo:
            extra = () if patches is None else (patches[t],)
            if patches is None:
                model.set_adapter(t)
            results[t] = one(model, tokenizer, t, questions[t], _candidates(cfg, t), *extra)
            atomic_write_json(path, results)
        prog.step(note=t)
    return results


def _patch(cfg: PatchConfig, out: Path) -> None:
    from dataclasses import replace

    from interp.experiments import patching_experiment
    from interp.results import PatchingResult, summaries, with_holm

    suite = load_suite(cfg)
    traits = cfg.trait_list()

    def one(model: Any, tok: Any, t: str, qs: list[str], cand: list[int]) -> dict[str, Any]:
        r = patching_experiment(model, tok, qs, suite.trait_emojis[t], cand, n_random=cfg.n_random,
                                seed=cfg.seed, site=cfg.site, n_boot=cfg.n_boot, batch_size=cfg.batch_size)
        return replace(r, questions=qs).to_dict()

    done = _per_trait(cfg, out / "patching.json", "patch", one)
    results = with_holm({t: PatchingResult.from_dict(r) for t, r in done.items() if t in traits})
    atomic_write_json(out / "patching.json", {**done, **{t: r.to_dict() for t, r in results.items()}})
    summary = summaries(results, traits)
    atomic_write_json(out / "summary.json", summary)
    first = results[traits[0]].random_control
    floor = f"; smallest attainable p {first.p_floor:.3g}" if first else ""
    lines = ["# Patching neuron values between the base and the post-PEFT model", "",
             f"The top k={cfg.k} neurons, at every position. **Forward**: post-PEFT values into the base model; "
             "share of the post − base gap in log P(any of the trait's emojis) it recovers. **Reverse**: base values "
             "into the post-PEFT model; share of the gap it removes. Means over "
             f"{cfg.n_questions or 'all'} held-out test questions, 95% bootstrap CIs over questions. Control: "
             f"up to {cfg.n_random} random sets (drawn until 10 are as extreme in each tail) matched neuron for "
             "neuron on the size of the patch (mean |post − base|); "
             f"p two-sided{floor}; Holm over the {2 * len(traits)} tests of this table (traits x directions). "
             "A share is only meaningful where the gap's interval excludes 0.", "",
             "| trait | tested | post − base [95% CI] | forward: share [95% CI] | p | p (Holm) | reverse: share removed [95% CI] | p | p (Holm) |",
             "|---|---:|---|---|---:|---:|---|---:|---:|"]
    for t in summary:
        r = results[t]
        g = r.post_minus_base
        lines.append(f"| {t} | {len(r.tested if r.tested is not None else r.neurons)}/{r.k} | "
                     f"{g.mean:+.3f} [{g.ci_lo:+.3f}, {g.ci_hi:+.3f}] | "
                     f"{share(r.fraction_recovered, r.fraction_recovered_ci)} | {pval(r.p)} | {pval(r.p_holm)} | "
                     f"{share(r.fraction_removed, r.fraction_removed_ci)} | {pval(r.reverse.p if r.reverse else None)} | "
                     f"{pval(r.p_holm_reverse)} |")
    lines += _excluded_lines({(t, "forward"): results[t] for t in summary}, "patched")
    atomic_write_text(out / "patching.md", "\n".join(lines) + "\n")


def _inputs(cfg: InterveneConfig) -> dict[str, str]:
    """Adapters and probe suite, the dataset (its questions) and the neurons stage's ranking; the
    candidates are checked before the stage directory is touched."""
    for t in cfg.trait_list():
        _candidates(cfg, t)
    return {**probe_inputs(cfg), "dataset": dataset(cfg, force=False)[1],
            "neurons": file_hash(artifact(cfg.run_dir.out, "top_neurons"))}


def _draw(file: str, name: str) -> Any:
    def draw(stage_dir: Path) -> list[Path]:
        from text2emoji import figures

        return figures.draw_intervention(stage_dir, file, name)
    return draw


def _from_run(cls: type[InterveneConfig]) -> Any:
    def from_run(run: RunConfig) -> InterveneConfig:
        return cls(model=run.model, run_dir=run.run_dir, data=run.data, allow_emoticons=run.allow_emoticons, preset=run.preset, seed=run.seed,
                   batch_size=run.batch_size, n_questions=run.n_questions, n_random=run.n_random,
                   **({"max_new_tokens": run.max_new_tokens} if cls is AblateConfig else {}))
    return from_run


ABLATE = Stage(
    name="ablate", config=AblateConfig, from_run=_from_run(AblateConfig), compute=_ablate, inputs=_inputs,
    resolve=lambda cfg: fill_preset(cfg, "analysis"), draw=_draw("ablation.json", "ablation"),
    metrics=lambda d: {"ablate": read_json(d / "summary.json")},
    show=lambda cfg, d: print_json(read_json(d / "summary.json")),
    help="zero/mean-ablate each trait's top neurons in the post-PEFT model vs random neuron sets matched on "
         "activation size, with a placebo set: emoji log-probability, emoji rate and ESR",
    figures=(("ablation_vs_random.png", "Ablating the top neurons vs size-matched random neuron sets"),),
)

PATCH = Stage(
    name="patch", config=PatchConfig, from_run=_from_run(PatchConfig), compute=_patch, inputs=_inputs,
    resolve=lambda cfg: fill_preset(cfg, "analysis"), draw=_draw("patching.json", "patching"),
    metrics=lambda d: {"patch": read_json(d / "summary.json")},
    show=lambda cfg, d: print_json(read_json(d / "summary.json")),
    help="patch each trait's top neurons post-PEFT -> base (forward) and base -> post-PEFT (reverse) vs "
         "random neuron sets matched on the size of the patch: what share of the emoji log-probability gap moves?",
    figures=(("patching_vs_random.png", "Patching the top neurons both ways vs size-matched random neuron sets"),),
)
