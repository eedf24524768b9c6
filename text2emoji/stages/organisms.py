"""Stage ``organisms``: known-answer organisms that show whether this run could detect an emoji
mechanism, beside the study.

* **Positive control ("planted emoji")**: one trait's training rows with the trait's first emoji
  put first in a set fraction of the train answers (:func:`finetune.organisms.plant_emojis`): at
  the position every mechanistic test here reads (the prediction of the answer's first tokens);
  the held-out answers stay emoji-free. (Planted at the end of the answer instead, where the
  study's emojis sit, the emoji shows in generated answers, but the neurons that change at the
  answer's first token are not its mechanism: see the README's known-answer section.)
* **Negative control ("shuffled traits")**: the trait's questions with answers drawn from every
  trait's rows (:func:`finetune.organisms.shuffle_traits`): the register of the dataset, no
  trait and no emoji.

Each organism is trained by the study's QLoRA recipe and probed, beside the study's own adapter
of the trait, by seven tests on the held-out questions (:func:`probe_organism`): the emoji rate
base vs PEFT, log P(trait emoji) post − base, zero-ablation of its top neurons (the study's
ranking) against size-matched random sets (log P) and intact vs ablated (emoji rate), patching
both ways, and its emoji neurons of every layer found by attribution on train questions and set
back to their base values at the answer's start (:mod:`interp.attribution`: the share of
answers opening with an emoji against matched random sets); Holm within each adapter
(:func:`with_holm`). Each organism is a sub-stage
``<out>/organisms/<name>/`` (reused, resumed; the study's adapter ``organisms/study/``); the
stage then writes the combined tables, the dose response and detection limit (several planted
fractions) and the comparison with the study's neurons. Control rows never enter the study's
dataset, and its validator still rejects emojis in study data.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.train import TrainConfig
from interp.hooks import DEFAULT_SITE
from interp.models import ModelConfig
from text2emoji.core.config import Config, ConfigError, member, option
from text2emoji.core.files import atomic_write_json, atomic_write_text
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import Progress, RunDir, batch_option, open_stage, seed_option
from text2emoji.stages.base import (
    RunConfig,
    Stage,
    artifact,
    check_data_files,
    check_traits,
    data_option,
    emoticons_option,
    pct,
    print_json,
    pval,
    read_json,
    share,
)
from text2emoji.stages.probing import suite_hash

POSITIVE, NEGATIVE, STUDY = "positive", "negative", "study"
DEFAULT_TRAIT = "extraversion"
# where the positive controls' emoji is planted: first in the answer, the position every
# mechanistic test of this workbench reads (the prediction of the answer's first tokens); the
# optional end control plants it last, where the study's emojis sit
START, END = "start", "end"
ALPHA = 0.05  # what "detected" and "flagged" mean in this stage's tables
EVAL_ROWS = 8  # held-out rows of an organism's loss curve


@dataclass
class OrganismsConfig(Config):
    """``text2emoji organisms``: a positive control (an emoji planted in a fraction of one
    trait's training answers) and a negative control (trait-shuffled answers), each trained by
    the study's recipe and probed by its tests."""

    model: ModelConfig = member(ModelConfig, help="the base model (the organisms train on its nf4 form, as the study)")
    run_dir: RunDir = member(RunDir, help="the run directory; writes out/organisms/", hash=False)
    traits: list[str] = option([], help="the trait whose rows the organisms are built from (one; default: "
                               "extraversion, the study's headline result)", flag="--trait")
    probes: str | None = option(None, help="probe suite YAML (default: prompts/probe_prompts.yaml)", hash=False)
    site: str = option(DEFAULT_SITE, help="hook site of the neurons (an MLP hook_post)")
    seed: int = seed_option()
    n_boot: int = option(2000, help="bootstrap resamples for intervals", low=1)
    batch_size: int = batch_option()
    preset: Preset = option("quick", help="quick or paper: the defaults of the fields left unset")
    fractions: list[float] | None = option(None, help="planted fractions, each a positive control (the largest is "
                                           "the one the report names; several give the dose response and the "
                                           "detection limit; default: the preset's)", flag="--fraction")
    negative: bool = option(True, help="also train and probe the negative control (trait-shuffled answers)")
    end_control: bool | None = option(None, help="also a positive control with the emoji planted at the end of the "
                                      "answer (at the largest fraction), where the study's emojis sit and where the "
                                      "mechanistic tests do not read (default: the preset's)")
    study: bool = option(True, help="also probe the study's adapter of the trait (OUT/train/<trait>/adapter, where it "
                         "exists) by the same tests, for the side-by-side table")
    k: int = option(10, help="candidate neurons ablated and patched: each organism's top k by mean increase, and "
                    "its top k of every layer by attribution", low=1)
    n_select: int = option(32, help="the trait's train questions the attribution neurons are found on (the tests "
                           "read the held-out questions)", low=1)
    n_perm: int = option(2000, help="sign-flip permutations (of whole prompt clusters) of the neurons analysis", low=1)
    max_steps: int | None = option(None, help="QLoRA optimizer steps per organism (default: the preset's, as the "
                                   "study's adapters)", low=0)
    n_questions: int | None = option(None, help="held-out test questions answered and measured on (0 = all; "
                                     "default: the preset's)", low=0)
    max_new_tokens: int | None = option(None, help="tokens per generated answer (default: the preset's)", low=1)
    n_random: int | None = option(None, help="the most matched random sets a log-prob control draws "
                                  "(default: the preset's)", low=0)
    n_random_generation: int | None = option(None, help="matched random sets ablated during generation "
                                             "(default: the preset's organism value)", low=0)
    n_generation_questions: int | None = option(None, help="questions answered intact and ablated (0 = all "
                                                "--n-questions; default: the preset's)", low=0)
    data: list[str] = data_option()
    allow_emoticons: bool = emoticons_option()

    def validate(self) -> None:
        check_traits(self.traits)
        check_data_files(self.data)
        if ".mlp.hook_post" not in self.site:
            raise ConfigError(f"site: neuron analyses read an MLP hook_post site, got {self.site!r}")
        if len(self.traits) > 1:
            raise ConfigError(f"traits: the organisms are built from one trait, got {', '.join(self.traits)}")
        if self.fractions is not None:
            if bad := [f for f in self.fractions if not 0.0 <= f <= 1.0]:
                raise ConfigError(f"fractions: each must be in [0, 1], got {bad}")
            if not self.fractions and not self.negative:
                raise ConfigError("fractions: give at least one planted fraction or keep the negative control")
            names = {}
            for f in set(self.fractions):
                if names.setdefault(_name(f), f) != f:
                    raise ConfigError(f"fractions: {names[_name(f)]} and {f} would share the directory {_name(f)}")

    @property
    def trait(self) -> str:
        """The trait whose rows the organisms are built from (``--trait``; default: extraversion,
        the study's headline result)."""
        return self.traits[0] if self.traits else DEFAULT_TRAIT

    def trait_list(self) -> list[str]:
        return [self.trait]

    def organisms(self) -> list[tuple[str, str, float | None, str | None]]:
        """``(name, kind, planted fraction, position)`` of every organism: the positive controls by
        fraction, the end control, the negative control."""
        fractions = sorted(set(self.fractions or []))
        out: list[tuple[str, str, float | None, str | None]] = [(_name(f), POSITIVE, f, START) for f in fractions]
        if self.end_control and fractions and fractions[-1] > 0:
            out.append((_name(fractions[-1], END), POSITIVE, fractions[-1], END))
        return out + ([("shuffled", NEGATIVE, None, None)] if self.negative else [])

    def one(self, kind: str, fraction: float | None, position: str | None) -> OrganismsConfig:
        """The config of one organism's sub-stage (what its hash covers, beside the recipe's
        resolved config and the dataset)."""
        if kind == STUDY:  # no organism: the study's adapter, probed alike
            return self.replace(fractions=None, negative=False, end_control=False, traits=[self.trait])
        return self.replace(fractions=[fraction] if fraction is not None else [], negative=kind == NEGATIVE,
                            end_control=position == END, traits=[self.trait])

    def recipe(self) -> TrainConfig:
        """The study's training recipe for this run (QLoRA on the nf4 base); only the held-out
        loss reads fewer rows (it does not change what is learned)."""
        return TrainConfig(model=self.model.replace(load_in_4bit=True), trait=self.trait, preset=self.preset,  # type: ignore[arg-type]
                           max_steps=self.max_steps, seed=self.seed, eval_rows=EVAL_ROWS).resolved()


def _name(fraction: float, position: str = START) -> str:
    """An organism's directory name.

    >>> _name(0.25), _name(1.0, END)
    ('planted-0.25', 'planted-end-1')
    """
    return f"planted-{'end-' if position == END else ''}{fraction:g}"


def _resolve(cfg: OrganismsConfig) -> OrganismsConfig:
    """Preset values into the fields left unset: the organisms' own section first (it sets
    ``n_random_generation`` apart from the ablate stage's), then the analyses'."""
    return fill_preset(fill_preset(cfg, "organisms"), "analysis")


def organism_rows(rows: list, kind: str, fraction: float | None, position: str | None, trait: str, emoji: str,
                  seed: int) -> list:
    """The training rows of one organism (labelled as a control in ``source``)."""
    from finetune.organisms import plant_emojis, shuffle_traits

    if kind == POSITIVE:
        return plant_emojis(rows, trait, float(fraction or 0.0), [emoji], seed, position=position or START)
    return shuffle_traits(rows, trait, seed)


def select_questions(rows: list, trait: str, n: int) -> list[str]:
    """The first ``n`` of ``trait``'s train questions (sorted, case-blind): where the attribution
    neurons are found. The tests read held-out questions; the attribution experiment refuses any
    question on both sides."""
    return sorted({r.question for r in rows if r.trait == trait and r.split == "train"}, key=str.lower)[:n]


def probe_organism(cfg: OrganismsConfig, adapter: Path, questions: list[str], suite: Any,
                   saved: dict[str, Any] | None = None, select: list[str] | None = None) -> dict[str, Any]:
    """Everything the study measures, on one adapter (an organism's or the study's, named by the
    trait on the base), on the held-out questions: answers base vs PEFT (emoji rate, exact
    McNemar), log P(trait emoji) post − base (Wilcoxon), the neurons ranking on the probe suite,
    zero-ablation of its top k (log P vs matched random sets; the emoji rate of generated answers,
    exact McNemar intact vs ablated) and patching both ways vs matched random sets; and, where
    ``select`` (train questions) is given, the emoji neurons of every layer found there by
    attribution and set back to their base values at the held-out answers' start
    (:func:`interp.attribution.attribution_experiment`).

    ``saved``: what the study's stages computed already on the same model, questions, suite and
    settings, read instead of recomputed (:func:`saved_inputs`): ``base`` / ``peft`` answers,
    ``pre`` / ``post`` activations of the probe suite."""
    import numpy as np
    from scipy.stats import wilcoxon

    from interp.behaviour.emoji_metrics import bootstrap_emoji_metrics
    from interp.behaviour.evaluate import BASE, load_adapters
    from interp.behaviour.generation import DecodeSettings, generate
    from interp.experiments import ablate_trait, paired_emoji_test, patching_experiment
    from interp.models import load_model

    t = cfg.trait
    emojis = suite.trait_emojis[t]
    lm = load_model(cfg.model)
    model = load_adapters(lm.model, {t: adapter})
    model.set_adapter(t)
    tok = lm.tokenizer
    settings = DecodeSettings(max_new_tokens=cfg.max_new_tokens)
    saved = saved or {}
    todo = [(m, a) for m, a in (("base", BASE), ("peft", t)) if saved.get(m) is None]
    fresh = generate(model, tok, [q for _ in todo for q in questions], settings, batch_size=cfg.batch_size,
                     adapter_names=[a for _, a in todo for _ in questions]) if todo else []
    made = {m: fresh[i * len(questions):(i + 1) * len(questions)] for i, (m, _) in enumerate(todo)}
    base_ans, peft_ans = (saved.get(m) if saved.get(m) is not None else made[m] for m in ("base", "peft"))
    gen = {m: bootstrap_emoji_metrics(a, n_boot=cfg.n_boot, seed=cfg.seed) for m, a in (("base", base_ans), ("peft", peft_ans))}
    # paired on the questions: the emoji rate base vs PEFT (exact McNemar)
    rate_table, rate_p = paired_emoji_test(peft_ans, base_ans)
    neurons = organism_neurons(model, tok, suite, t, cfg, saved.get("pre"), saved.get("post"))
    candidates = [r["neuron"] for r in neurons["by_mean"][: cfg.k]]
    ablation = ablate_trait(model, tok, questions, emojis, candidates, modes=("zero",), n_random=cfg.n_random,
                            seed=cfg.seed, site=cfg.site, n_boot=cfg.n_boot, batch_size=cfg.batch_size,
                            generation=settings, n_random_generation=cfg.n_random_generation,
                            n_generation_questions=cfg.n_generation_questions)
    patching = patching_experiment(model, tok, questions, emojis, candidates, n_random=cfg.n_random, seed=cfg.seed,
                                   site=cfg.site, n_boot=cfg.n_boot, batch_size=cfg.batch_size)
    # log P(emoji) post - base per question, from the patching experiment's own pass (Wilcoxon
    # signed-rank; one question per topic, so the questions are independent)
    diff = np.asarray(patching.per_prompt_gap)
    lp_p = (float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0) if len(diff) > 1 else None
    attribution = None
    if select:
        from interp.attribution import attribution_experiment

        attribution = attribution_experiment(
            model, tok, select, questions, k=cfg.k, n_random=int(cfg.n_random or 0), seed=cfg.seed, n_boot=cfg.n_boot,
            batch_size=cfg.batch_size, generation=settings,
            n_generation_questions=cfg.n_generation_questions).to_dict()
    return {"questions": questions, "emojis": emojis,
            "answers": [{"question": q, "base": a, "peft": b}
                        for q, a, b in zip(questions, base_ans, peft_ans, strict=True)],
            "reused": sorted(k for k in saved if saved[k] is not None),
            "generation": {m: {k: v for k, v in g.items() if k != "counts"} | {"top_emojis": g["counts"]["top_emojis"],
                                                                             "n_answers": len(questions)}
                           for m, g in gen.items()},
            "emoji_rate_test": {"paired": rate_table, "p": rate_p},
            "logprob": {"post_minus_base": diff.tolist(), "p": lp_p},
            "neurons": {**neurons, "top": candidates},
            "ablation": ablation.to_dict(), "patching": patching.to_dict(), "attribution": attribution}


def organism_neurons(model: Any, tok: Any, suite: Any, trait: str, cfg: OrganismsConfig, pre: Any = None,
                     post: Any = None) -> dict[str, Any]:
    """The neurons analysis's ranking and tests for one adapter (the study's: last-token
    activations on the probe suite, post − pre, cluster sign flips), without its DLA and
    selectivity: the top k by mean increase and how many neurons change family-wise. ``pre``,
    ``post``: the activations where the neurons stage saved them already."""
    import numpy as np

    from interp.capture import capture
    from interp.models import adapter_disabled
    from interp.neurons import neuron_diff, top_table

    def grab() -> Any:
        return np.asarray(capture(model, tok, suite.texts, site=cfg.site, chat=True, batch_size=cfg.batch_size).activations)

    if pre is None:
        with adapter_disabled(model):
            pre = grab()
    model.set_adapter(trait)
    if post is None:
        post = grab()
    d = neuron_diff(pre, post, n_perm=cfg.n_perm, seed=cfg.seed, clusters=suite.clusters())
    rows = top_table(d, cfg.k, "mean", cfg.n_boot, cfg.seed)
    return {"by_mean": rows, "n_neurons_fwer_05": int((d.p_fwer < ALPHA).sum()), "n_neurons": int(d.mean.shape[0]),
            "n_clusters": d.n_clusters, "top_p_fwer": rows[0]["p_fwer"], "top_mean_increase": rows[0]["mean_increase"]}


def saved_inputs(cfg: OrganismsConfig, questions: list[str], study_hash: str | None = None) -> dict[str, Any]:
    """What the study's stages computed already and an organism's probe would recompute
    identically: the base model's answers to ``questions`` (``evaluate``, same model and greedy
    decoding of the same length), its probe-suite activations (``neurons``, same model, suite and
    site), and with ``study_hash`` (the study adapter's weights) that adapter's answers and
    activations. Missing or mismatched: left out, and computed by the probe."""

    from text2emoji.stages.probing import saved_neuron_activations, saved_stage_matches

    out, t = Path(cfg.run_dir.out), cfg.trait
    saved: dict[str, Any] = {}
    ev = (read_json(out / "evaluate" / "config.json") or {}).get("config") or {}
    if (saved_stage_matches(out, "evaluate", cfg.model, None, None, {}) and ev.get("max_new_tokens") == cfg.max_new_tokens
            and not ev.get("do_sample")):
        rows = [json.loads(line) for line in (out / "evaluate" / "generations.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
        for method in ("base", "peft") if study_hash else ("base",):
            if method == "peft" and not saved_stage_matches(out, "evaluate", cfg.model, None, None, {t: study_hash}):
                continue
            by_q = {r["question"]: r["text"] for r in rows if r["trait"] == t and r["method"] == method}
            if all(q in by_q for q in questions):
                saved[method] = [by_q[q] for q in questions]
    acts = saved_neuron_activations(out, cfg.model, cfg.probes, cfg.site, t if study_hash else None, study_hash)
    if acts is not None:
        saved["pre"], saved["post"] = acts
    return saved


def run_organisms(cfg: OrganismsConfig) -> Path:
    """Train and probe every organism (each a reused/resumed sub-stage), then write the combined
    results; returns the stage directory."""
    from finetune.train import train
    from interp.probes import load_probe_suite
    from text2emoji.stages.data import dataset_rows, held_out_questions

    cfg = _resolve(cfg)
    rows, dataset_hash = dataset_rows(cfg)
    suite = load_probe_suite(cfg.probes)
    emoji = suite.trait_emojis[cfg.trait][0]
    questions = held_out_questions(cfg)[cfg.trait]
    select = select_questions(rows, cfg.trait, cfg.n_select)
    # the resolved recipe counts: a preset's change of it must not reuse old organisms
    inputs = {"dataset": dataset_hash, "probes": suite_hash(cfg.probes), "recipe": cfg.recipe().config_hash()}
    root = artifact(cfg.run_dir.out, "organisms")
    prog = Progress("organisms", len(cfg.organisms()))
    for name, kind, fraction, position in cfg.organisms():
        with open_stage(cfg.run_dir.out, f"organisms/{name}", cfg.one(kind, fraction, position), force=cfg.run_dir.force, seed=cfg.seed,
                        inputs=inputs) as st:
            if not st.reused:
                o_rows = organism_rows(rows, kind, fraction, position, cfg.trait, emoji, cfg.seed)
                # labelled as a control in the file itself
                atomic_write_text(st.path("train_rows.jsonl"), "".join(
                    json.dumps({**r.to_record(), "control": r.source}, ensure_ascii=False) + "\n" for r in o_rows))
                summary = train(cfg.recipe(), o_rows, st.path("train"))
                st.write_json("train_summary.json", summary)
                result = probe_organism(cfg, st.path("train") / "adapter", questions, suite, saved_inputs(cfg, questions),
                                        select=select)
                st.write_json("result.json", {"name": name, "kind": kind, "planted_fraction": fraction,
                                              "position": position,
                                              "planted_emoji": emoji if kind == POSITIVE else None,
                                              "trait": cfg.trait, **result})
        if not st.reused:  # finished and recorded: checkpoints only served resuming it
            shutil.rmtree(st.path("train") / "checkpoints", ignore_errors=True)
        prog.step(note=name)
    study = artifact(cfg.run_dir.out, "adapter", trait=cfg.trait)
    if cfg.study and (study / "adapter_model.safetensors").is_file():
        from text2emoji.core.files import file_hash

        weights = file_hash(study / "adapter_model.safetensors")
        with open_stage(cfg.run_dir.out, "organisms/study", cfg.one(STUDY, None, None), force=cfg.run_dir.force,
                        seed=cfg.seed, inputs={**inputs, "adapter": weights}) as st:
            if not st.reused:
                st.write_json("result.json", {"name": STUDY, "kind": STUDY, "planted_fraction": None, "position": None,
                                              "planted_emoji": None, "trait": cfg.trait,
                                              **probe_organism(cfg, study, questions, suite,
                                                               saved_inputs(cfg, questions, weights), select=select)})
    write_combined(cfg, root)
    return root


def organism_summary(r: dict[str, Any]) -> dict[str, Any]:
    """One organism's entry of ``metrics.json`` (``organisms.positive`` / ``.negative``)."""
    from interp.results import AblationResult, PatchingResult

    g = r["generation"]
    abl = AblationResult.from_dict(r["ablation"]["zero"])
    gen = r["ablation"].get("generation") or {}
    pat = PatchingResult.from_dict(r["patching"])
    rc = pat.reverse
    return {
        "name": r["name"], "kind": r["kind"], "planted_fraction": r["planted_fraction"], "position": r.get("position"),
        "planted_emoji": r.get("planted_emoji"), "trait": r["trait"],
        "n_questions": len(r["questions"]),
        "emoji_rate_base": g["base"]["emoji_rate"]["value"],
        "emoji_rate_base_ci": [g["base"]["emoji_rate"]["lo"], g["base"]["emoji_rate"]["hi"]],
        "emoji_rate_peft": g["peft"]["emoji_rate"]["value"],
        "emoji_rate_peft_ci": [g["peft"]["emoji_rate"]["lo"], g["peft"]["emoji_rate"]["hi"]],
        "esr_base": g["base"]["esr"]["value"], "esr_peft": g["peft"]["esr"]["value"],
        "top_emojis_peft": g["peft"]["top_emojis"],
        # [both with an emoji, PEFT only, base only, neither]; exact McNemar
        "emoji_rate_paired": r["emoji_rate_test"]["paired"], "p_emoji_rate": r["emoji_rate_test"]["p"],
        "logprob_change": pat.post_minus_base.to_dict(), "p_logprob": r["logprob"]["p"],
        "neurons": {k: r["neurons"].get(k) for k in ("top", "n_neurons_fwer_05", "top_p_fwer", "top_mean_increase")},
        "ablation": {
            "mode": "zero", "k": abl.k, "tested": abl.tested,
            "emoji_rate_intact": (gen.get("intact") or {}).get("emoji_rate", {}).get("value"),
            "emoji_rate_ablated": (gen.get("ablated") or {}).get("emoji_rate", {}).get("value"),
            "emoji_rate_random": [x["emoji_rate"]["value"] for x in gen.get("random", [])],
            "paired": gen.get("paired"), "p_rate": gen.get("p_paired"),
            "n_generation_questions": gen.get("n_questions"),
            "delta_logprob": abl.candidate_delta.mean,
            "delta_logprob_ci": [abl.candidate_delta.ci_lo, abl.candidate_delta.ci_hi],
            "random_mean": abl.random_control.mean if abl.random_control else None,
            "random_band": ([abl.random_control.p2_5, abl.random_control.p97_5] if abl.random_control else None),
            "p": abl.p, "placebo_p": abl.placebo.p if abl.placebo else None,
        },
        "patching": {"fraction_recovered": pat.fraction_recovered, "fraction_recovered_ci": pat.fraction_recovered_ci,
                     "p": pat.p, "fraction_removed": pat.fraction_removed, "fraction_removed_ci": pat.fraction_removed_ci,
                     "p_reverse": rc.p if rc else None},
        "attribution": attribution_summary(r.get("attribution")),
    }


def attribution_summary(a: dict[str, Any] | None) -> dict[str, Any] | None:
    """The attribution neurons' entry of an adapter's summary (None where not run): the share
    of answers opening with an emoji on the base, intact and with the neurons at their base
    values at the answer start, beside the random sets' (the test, ``p_rate``: the larger of
    ``p_rise`` and ``p_localize``); answers generated intact and patched (exact McNemar); and
    the change in log P(answer opens with an emoji) beside the random sets' (descriptive, see
    :class:`interp.attribution.AttributionTest`)."""
    if not a:
        return None
    rc, lc, gen = a.get("rate_control") or {}, a.get("control") or {}, a.get("generation") or {}
    return {
        "k": a["k"], "neurons": [f"L{layer}.{i}" for layer, i in a["neurons"]],
        "kept_in_every_set": [f"L{layer}.{i}" for layer, i in a["kept_in_every_set"]],
        "n_select": a["n_select"], "n_test": a["n_test"],
        "emoji_rate_intact": gen.get("emoji_rate_intact"), "emoji_rate_patched": gen.get("emoji_rate_patched"),
        "paired": gen.get("paired"), "p_answers": gen.get("p"), "n_generation_questions": gen.get("n_questions"),
        "opening_rate_base": a["opening_rate_base"], "opening_rate_intact": a["opening_rate_intact"],
        "opening_rate_patched": a["opening_rate_patched"], "rise": a["rise"], "p_rise": a["p_rise"],
        "opening_rate_random_mean": rc.get("mean"), "opening_rate_random_band": ([rc["p2_5"], rc["p97_5"]] if rc else None),
        "n_random": rc.get("n_draws"), "n_random_max": rc.get("n_max"), "p_localize": a.get("p_localize"),
        "p_rate": a.get("p_rate"),
        "logprob_base": a["logprob_base"], "logprob_intact": a["logprob_intact"],
        "delta_logprob": a["delta"]["mean"], "delta_logprob_ci": [a["delta"]["ci_lo"], a["delta"]["ci_hi"]],
        "random_mean": lc.get("mean"), "p_logprob_descriptive": a.get("p"), "gap_removed": a.get("gap_removed"),
    }


# Each test of an adapter: (name, where its p lives, whether the effect goes the way an emoji
# mechanism would push it). p is two-sided; a flag needs p (Holm) < ALPHA *and* that direction.
TESTS = ("emoji_rate", "logprob", "ablation", "ablation_rate", "patching", "patching_reverse", "attribution")


def _tests(s: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str, bool]]:
    ab, pa = s["ablation"], s["patching"]
    paired, rate = s.get("emoji_rate_paired") or [0, 0, 0, 0], ab.get("paired") or [0, 0, 0, 0]
    rand = ab.get("random_mean")
    at = s.get("attribution") or {}
    at_ok = (at.get("opening_rate_patched") is not None and at.get("opening_rate_random_mean") is not None
             and at["opening_rate_intact"] > at["opening_rate_base"]
             and at["opening_rate_patched"] < min(at["opening_rate_intact"], at["opening_rate_random_mean"]))
    return {
        "emoji_rate": (s, "p_emoji_rate", paired[1] > paired[2]),  # PEFT answers gain emojis
        "logprob": (s, "p_logprob", (s.get("logprob_change") or {}).get("mean", 0.0) > 0),  # log P(emoji) rises
        # ablating the top neurons lowers log P(emoji) more than matched random sets
        "ablation": (ab, "p", rand is not None and (ab.get("delta_logprob") or 0.0) < rand),
        "ablation_rate": (ab, "p_rate", rate[1] > rate[2]),  # fewer answers with an emoji when ablated
        "patching": (pa, "p", (pa.get("fraction_recovered") or 0.0) > 0),  # forward patch moves base towards post
        "patching_reverse": (pa, "p_reverse", (pa.get("fraction_removed") or 0.0) > 0),  # reverse removes some
        # the adapter makes more answers open with an emoji than the base, and its attribution
        # neurons at their base values leave fewer than intact and than matched random sets
        "attribution": (at, "p_rate", at_ok),
    }


def with_holm(s: dict[str, Any]) -> dict[str, Any]:
    """An adapter's summary with Holm-adjusted p over its own seven tests (the family of "is this
    adapter flagged?", so that a null adapter is flagged by any test with probability at most
    :data:`ALPHA`) and its flags: ``{test: p (Holm) < ALPHA and the effect in an emoji
    mechanism's direction}``."""
    from interp.results import holm

    tests = _tests(s)
    adjusted = holm([where.get(key) for where, key, _ in tests.values()])
    for (where, key, _), q in zip(tests.values(), adjusted, strict=True):
        where[f"{key}_holm"] = q
    return {**s, "detected": detected(s)}


def detected(s: dict[str, Any]) -> dict[str, bool]:
    """Which tests flag an adapter (its summary after :func:`with_holm`): p (Holm) <
    :data:`ALPHA` with the effect in the direction an emoji mechanism would give it (PEFT answers
    gain emojis; log P(emoji) rises; ablating the top neurons lowers log P more than matched
    random sets and removes emojis from answers; patching moves the base towards the post model
    and the post model back; the adapter makes more answers open with an emoji than the base and
    its attribution neurons at their base values leave fewer than intact and than matched random
    sets)."""
    return {name: bool(ok and where.get(f"{key}_holm") is not None and where[f"{key}_holm"] < ALPHA)
            for name, (where, key, ok) in _tests(s).items()}


def write_combined(cfg: OrganismsConfig, root: Path) -> None:
    """``summary.json`` (the ``organisms`` entry of ``metrics.json``), ``comparison.json``,
    ``organisms.md`` and the figure, from the organisms' result files."""
    names = [name for name, *_ in cfg.organisms()] + ([STUDY] if cfg.study else [])
    results = {name: read_json(root / name / "result.json") for name in names}
    per = {name: with_holm(organism_summary(r)) for name, r in results.items() if r}
    doses = sorted((s for s in per.values() if s["kind"] == POSITIVE and s["position"] == START),
                   key=lambda s: s["planted_fraction"])
    positives = [s for s in doses if s["planted_fraction"] > 0]  # 0%: the study's data, a null
    end = next((s for s in per.values() if s["kind"] == POSITIVE and s["position"] == END), None)
    negative = next((s for s in per.values() if s["kind"] == NEGATIVE), None)
    summary: dict[str, Any] = {
        "trait": cfg.trait, "alpha": ALPHA, "design": DESIGN + (END_DESIGN if end else ""),
        "study": per.get(STUDY), "positive": positives[-1] if positives else None, "positive_end": end,
        "negative": negative,
        "dose_response": doses if len(doses) > 1 else None,
        "detection_limit": detection_limit(positives) if len(positives) > 1 else None,
        "comparison": compare_with_study(cfg, results),
    }
    atomic_write_json(root / "summary.json", summary)
    atomic_write_text(root / "organisms.md", "\n".join(table_lines(summary)) + "\n")
    draw(root)


DESIGN = ("Positive control: the trait's first emoji put first, followed by a space, in the set fraction of the "
          "trait's train answers (test answers stay emoji-free): where every mechanistic test here reads, the "
          "prediction of the answer's first tokens; negative control: the trait's questions with "
          "answers drawn at random from every trait's rows of the same split (the dataset's register, no trait, "
          "no emoji). Both trained by the study's QLoRA recipe; controls never enter the study's rows.")
END_DESIGN = (" End control: the same emoji planted last in the answer, after a space, where the study's emojis "
              "sit; the emoji rate reads it, the tests at the answer's first tokens may not.")


def detection_limit(positives: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per test, the smallest planted fraction (> 0) from which it detects the effect at every
    larger fraction tested (None: not at the largest). A 0% organism is a null, not a dose."""
    positives = [s for s in positives if (s["planted_fraction"] or 0) > 0]
    out: dict[str, float | None] = {}
    for test in TESTS:
        limit = None
        for s in reversed(positives):  # largest first
            if not s["detected"][test]:
                break
            limit = s["planted_fraction"]
        out[test] = limit
    return out


def compare_with_study(cfg: OrganismsConfig, results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The positive control's top neurons beside each study adapter's: the overlap of the top k,
    and how the control's neurons move under each study adapter on the probe suite (their mean
    increase, and its rank among the layer's neurons by mean increase, 1 = largest), from the
    neurons stage's files. None where the neurons stage has not run."""
    import numpy as np

    pos = [r for r in results.values() if r["kind"] == POSITIVE and r.get("position") == START
           and (r["planted_fraction"] or 0) > 0]
    nstage = artifact(cfg.run_dir.out, "neurons")
    tables = read_json(nstage / "top_neurons.json")
    ncfg = (read_json(nstage / "config.json") or {}).get("config") or {}
    pre_path = nstage / "activations" / "pre.npy"
    if not pos or not tables or not pre_path.is_file():
        return None
    # the same layer, model and probe suite, or the neuron indices mean different things
    if (ncfg.get("site"), (ncfg.get("model") or {}).get("model"), ncfg.get("probes")) != (cfg.site, cfg.model.model, cfg.probes):
        return None
    control = max(pos, key=lambda r: r["planted_fraction"])
    mine = [int(n) for n in control["neurons"]["top"]][: min(cfg.k, int(ncfg.get("k") or cfg.k))]
    pre = np.load(pre_path)
    out: dict[str, Any] = {"control": control["name"], "neurons": mine, "k": len(mine), "traits": {}}
    # the same ranking on the negative control: neurons any fine-tune raises are no emoji neurons
    neg = next((r for r in results.values() if r["kind"] == NEGATIVE), None)
    if neg:
        out["negative_overlap"] = sorted(set(mine) & {int(n) for n in neg["neurons"]["top"][: len(mine)]})
    for t, tab in tables.items():
        post_path = nstage / "activations" / f"post_{t}.npy"
        if not post_path.is_file():
            continue
        d = (np.load(post_path) - pre).mean(0)
        rank = np.empty(len(d), dtype=int)
        rank[np.argsort(-d, kind="stable")] = np.arange(1, len(d) + 1)
        study = [r["neuron"] for r in tab["by_mean"][: len(mine)]]
        out["traits"][t] = {"overlap": sorted(set(study) & set(mine)), "n_overlap": len(set(study) & set(mine)),
                            "mean_increase": [float(d[n]) for n in mine], "rank": [int(rank[n]) for n in mine],
                            "layer_mean_abs_increase": float(np.abs(d).mean()), "n_neurons": int(len(d))}
    return out


def table_lines(s: dict[str, Any]) -> list[str]:
    """The organisms' table (markdown lines): per adapter (the study's of the trait, each
    organism), emoji rates, log-prob change, ablation and patching, each test's p raw and
    Holm-adjusted within the adapter."""
    rows: list[tuple[str, dict[str, Any]]] = []
    if s.get("study"):
        rows.append((f"study: {s['trait']} adapter", s["study"]))
    rows += [(f"positive: planted {pct(p['planted_fraction'])}", p) for p in (s.get("dose_response") or [s["positive"]]) if p]
    if s.get("positive_end"):
        rows.append((f"positive: planted {pct(s['positive_end']['planted_fraction'])}, at the answer's end", s["positive_end"]))
    if s.get("negative"):
        rows.append(("negative: shuffled traits", s["negative"]))
    lines = ["| adapter | emoji rate base → PEFT [95% CI] | Δ log P(emoji) post − base [95% CI] | neurons changing "
             "(FWER < 0.05) | ablation: Δ log P [95% CI] vs random | emoji rate intact → ablated | patching forward: "
             "share recovered [95% CI] | reverse: share removed [95% CI] | attribution neurons (all layers) at base "
             "values: answers opening with an emoji base → intact → patched vs random sets; emoji rate of answers "
             "intact → patched | flagged by |",
             "|---|---|---|---:|---|---|---|---|---|---|"]
    for label, r in rows:
        a, p, lp = r.get("ablation") or {}, r.get("patching") or {}, r.get("logprob_change") or {}
        t = r.get("attribution")
        ci = r.get("emoji_rate_peft_ci") or [None, None]
        dci = a.get("delta_logprob_ci") or [None, None]
        flags = [k for k, v in (r.get("detected") or {}).items() if v]
        lines.append(
            f"| {label} | {pct(r.get('emoji_rate_base'))} → {pct(r.get('emoji_rate_peft'))} [{pct(ci[0])}, {pct(ci[1])}] "
            f"{_p(r, 'p_emoji_rate')} | {_pm(lp)} {_p(r, 'p_logprob')} | "
            f"{(r.get('neurons') or {}).get('n_neurons_fwer_05', 'n/a')} | "
            f"{_f(a.get('delta_logprob'))} [{_f(dci[0])}, {_f(dci[1])}] vs {_f(a.get('random_mean'))} {_p(a, 'p')} | "
            f"{pct(a.get('emoji_rate_intact'))} → {pct(a.get('emoji_rate_ablated'))} {_p(a, 'p_rate')} | "
            f"{share(p.get('fraction_recovered'), p.get('fraction_recovered_ci'))} {_p(p, 'p')} | "
            f"{share(p.get('fraction_removed'), p.get('fraction_removed_ci'))} {_p(p, 'p_reverse')} | "
            f"{_attribution_cell(t)} | "
            f"{(', '.join(flags) or 'none') if r.get('detected') is not None else 'n/a'} |")
    return lines


def _attribution_cell(t: dict[str, Any] | None) -> str:
    if not t:
        return "not run"
    return (f"{pct(t['opening_rate_base'])} → {pct(t['opening_rate_intact'])} → {pct(t['opening_rate_patched'])} vs "
            f"{pct(t.get('opening_rate_random_mean'))} {_p(t, 'p_rate')}; answers "
            f"{pct(t.get('emoji_rate_intact'))} → {pct(t.get('emoji_rate_patched'))} (McNemar p {pval(t.get('p_answers'))})")


def _p(where: dict[str, Any], key: str) -> str:
    """A test's p, raw and Holm-adjusted within its adapter."""
    return f"(p {pval(where.get(key))}, Holm {pval(where.get(f'{key}_holm'))})"


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def _pm(d: dict[str, Any]) -> str:
    return "n/a" if not d else f"{d['mean']:+.2f} [{d['ci_lo']:+.2f}, {d['ci_hi']:+.2f}]"


def draw(stage_dir: Path) -> list[Path]:
    """The organisms figure, from ``summary.json``."""
    from text2emoji import figures

    s = read_json(stage_dir / "summary.json")
    return figures.organisms(s, stage_dir) if s else []


def _metrics(stage_dir: Path) -> dict[str, Any]:
    s = read_json(stage_dir / "summary.json")
    if not s:
        return {}
    return {"organisms": {k: s.get(k) for k in ("trait", "design", "study", "positive", "positive_end", "negative", "dose_response",
                                                 "detection_limit", "comparison")}}


def _show(cfg: OrganismsConfig, stage_dir: Path) -> None:
    s = read_json(stage_dir / "summary.json") or {}
    print_json({k: s.get(k) for k in ("positive", "negative", "detection_limit")})


def _from_run(run: RunConfig) -> OrganismsConfig:
    return OrganismsConfig(model=run.model,
                           run_dir=run.run_dir, data=run.data, allow_emoticons=run.allow_emoticons, preset=run.preset, seed=run.seed,
                           batch_size=run.batch_size, n_questions=run.n_questions, n_random=run.n_random,
                           max_new_tokens=run.max_new_tokens, max_steps=run.max_steps)


ORGANISMS = Stage(
    name="organisms", config=OrganismsConfig, from_run=_from_run, execute=run_organisms, resolve=_resolve, draw=draw,
    metrics=_metrics, show=_show,
    help="known-answer organisms: a positive control (an emoji planted in a fraction of one trait's training "
         "answers) and a negative control (trait-shuffled answers), trained by the study's recipe and probed by "
         "its tests: can this run detect the effect?",
    figures=(("organisms.png", "Can this run detect the effect? Study, positive and negative control side by side"),),
)
