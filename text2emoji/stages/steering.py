"""Stage ``steering``: steering as a third way, beside PEFT and in-context prompting, to give the
base model a trait, measured as the emoji table and trait alignment measure the other two.

Per trait, on the base model alone (no adapter):

1. a trait vector (:func:`interp.steering.trait_vector`: answers with the trait's in-context
   instruction minus without) from the first train questions of the trait, by topic;
2. an α sweep on the next train questions (disjoint from those): per α the emoji rate, ESR,
   trait alignment and coherence (the base model's NLL per token of the steered answers) and its
   rise over α = 0; α* by :data:`interp.behaviour.steer_sweep.RULE`;
3. the test questions evaluate answers (:func:`interp.behaviour.evaluate.build_jobs`), steered at
   α*: the emoji table's and trait alignment's rows of method ``steer``, and, where
   ``OUT/evaluate`` holds PEFT answers to the same questions decoded alike, the paired
   comparison PEFT vs steer (exact McNemar, Newcombe interval, Holm over traits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.models import ModelConfig
from text2emoji.core.config import Config, ConfigError, member, option
from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_path, atomic_write_json, atomic_write_text, file_hash
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import Progress, RunDir, batch_option, seed_option, stage_status
from text2emoji.stages.base import (
    RunConfig,
    Stage,
    artifact,
    check_data_files,
    check_trait_metric,
    check_traits,
    data_option,
    emoticons_option,
    label_map_option,
    pct,
    pval,
    read_json,
    scorer_of,
    trait_metric_option,
)
from text2emoji.stages.data import dataset, dataset_rows


@dataclass
class SteeringConfig(Config):
    """``text2emoji steering``: the base model steered along a trait vector, as a method of the
    study (``steer`` beside ``base``, ``peft``, ``incontext``). Greedy decoding throughout."""

    model: ModelConfig = member(ModelConfig, help="the base model that is steered (steering needs no adapter)")
    run_dir: RunDir = member(RunDir, help="the run directory; writes out/steering/", hash=False)
    data: list[str] = data_option()
    allow_emoticons: bool = emoticons_option()
    preset: Preset = option("quick", help="quick: extraversion only, alpha 0, 2, 4, 8, 8 + 8 train questions, 16 test "
                            "questions x 48 tokens; paper: all five traits, alpha 0, 1, 2, 4, 8, 16, 32 + 32 train "
                            "questions, every test question x 150 tokens")
    traits: list[str] | None = option(None, help="traits to steer (default: the preset's: quick steers extraversion "
                                      "only, the organisms' trait, to fit the quick run's 20-minute budget; paper all "
                                      "five)", flag="--trait")
    layer: int | None = option(None, help="decoder block whose output (resid_post) gets alpha * v at every position; "
                               "negative counts from the end (default: the middle block, n_layers // 2)")
    alphas: list[float] | None = option(None, help="alpha values swept; 0, the unsteered reference, must be among "
                                        "them (default: the preset's: quick 0 2 4 8, paper 0 1 2 4 8 16)",
                                        flag="--alpha")
    n_vector_questions: int | None = option(None, help="train questions of the trait (the first by topic) the trait "
                                            "vector is read from (default: the preset's: quick 8, paper 32)", low=1)
    n_sweep_questions: int | None = option(None, help="train questions after those (disjoint from them) the alpha "
                                           "sweep is measured on (default: the preset's: quick 8, paper 32)", low=1)
    n_questions: int | None = option(None, help="test questions per trait, the ones evaluate answers (0 = all; "
                                     "default: the preset's)", low=0)
    max_new_tokens: int | None = option(None, help="tokens per answer, for the vector, the sweep and the test "
                                        "(default: the preset's)", low=1)
    max_coherence_rise: float = option(0.5, help="the most the base model's mean NLL per token (nats) of an alpha's "
                                       "sweep answers may rise over the unsteered ones for that alpha to be chosen",
                                       low=0)
    batch_size: int = batch_option()
    n_boot: int = option(2000, help="bootstrap resamples for the intervals", low=1)
    seed: int = seed_option()
    trait_metric: str = trait_metric_option()
    label_map: str | None = label_map_option()

    def validate(self) -> None:
        check_trait_metric(self.trait_metric, self.label_map)
        check_traits(self.traits or [])
        check_data_files(self.data)
        if self.alphas is not None:
            shown = ", ".join(f"{a:g}" for a in self.alphas) or "none"
            if 0.0 not in self.alphas:
                raise ConfigError(f"alphas (--alpha): 0, the unsteered reference, must be among them; got {shown}")
            if any(a < 0 for a in self.alphas):
                raise ConfigError(f"alphas (--alpha): the sweep steers towards the trait, alpha >= 0; got {shown}")
            if len(set(self.alphas)) != len(self.alphas):
                raise ConfigError(f"alphas (--alpha): each alpha once; got {shown}")

    def trait_list(self) -> list[str]:
        from text2emoji.core.schema import TRAITS

        return list(self.traits or TRAITS)


def _resolve(cfg: SteeringConfig) -> SteeringConfig:
    cfg = fill_preset(fill_preset(cfg, "steering"), "analysis")
    # copies: the preset table's lists must never be shared with (or changed through) a config
    return cfg.replace(traits=list(cfg.traits or []), alphas=sorted(cfg.alphas or []))


def _evaluate_generations(cfg: SteeringConfig) -> Path | None:
    """OUT/evaluate/generations.jsonl of a finished evaluate stage, else None."""
    d = artifact(cfg.run_dir.out, "evaluate")
    return d / "generations.jsonl" if stage_status(d)[0] == "complete" and (d / "generations.jsonl").is_file() else None


def _inputs(cfg: SteeringConfig) -> dict[str, str]:
    """The dataset, the trait metric (with its label map's bytes), the in-context instruction the
    vector is read with, and evaluate's answers where the PEFT comparison reads them."""
    from interp.prompts import prompts_dir

    labels = cfg.label_map or ""
    if labels and Path(labels).is_file():
        labels = file_hash(Path(labels))
    out = {"dataset": dataset(cfg, force=False)[1], "trait_metric": f"{cfg.trait_metric} {labels}".strip(),
           "prompts": file_hash(*(prompts_dir() / n for n in ("incontext.yaml", "trait_profiles.yaml")))}
    if (ev := _evaluate_generations(cfg)) is not None:
        out["evaluate"] = file_hash(ev)
    return out


def _layer(layer: int | None, n: int) -> int:
    """The steering layer made non-negative (None: the middle block), or a UserError naming it."""
    if layer is None:
        return n // 2
    if not -n <= layer < n:
        raise UserError(f"layer (--layer): {layer} out of range for a model with {n} layers [-{n}, {n - 1}]")
    return layer % n


def _compute(cfg: SteeringConfig, out: Path) -> None:
    import numpy as np

    from interp.behaviour.alignment import trait_alignment
    from interp.behaviour.evaluate import BASE, build_jobs, emoji_table, write_table
    from interp.behaviour.generation import DecodeSettings
    from interp.behaviour.steer_sweep import RULE, choose_alpha, steering_questions, sweep_point
    from interp.chat import format_chat
    from interp.models import load_model
    from interp.sites import n_layers
    from interp.steering import coherence, steered_generate, trait_vector

    rows, _ = dataset_rows(cfg)
    traits, alphas = cfg.trait_list(), [float(a) for a in cfg.alphas or []]
    plan = {}
    for trait in traits:  # every trait's questions before any model work
        try:
            vq, sq = steering_questions(rows, trait, cfg.n_vector_questions or 1, cfg.n_sweep_questions or 1)
        except ValueError as e:
            raise UserError(f"steering: {e}") from e
        plan[trait] = (vq, sq)
    lm = load_model(cfg.model)
    model, tok = lm.model, lm.tokenizer
    n = n_layers(model)
    layer = _layer(cfg.layer, n)
    settings = DecodeSettings(max_new_tokens=cfg.max_new_tokens or 1)
    clf = scorer_of(cfg.trait_metric, cfg.label_map, cfg.seed)
    classes = [str(c) for c in clf.classes_]
    gen = dict(settings=settings, chat=False, batch_size=cfg.batch_size, add_special_tokens=False)  # chat-formatted
    prog = Progress("steering", len(traits) * (len(alphas) + 3), unit="generation passes")
    (out / "vectors").mkdir(exist_ok=True)
    result: dict[str, Any] = {}
    gens: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    for trait in traits:
        vq, sq = plan[trait]
        try:
            tv = trait_vector(model, tok, vq, trait, settings, batch_size=cfg.batch_size)
        except ValueError as e:
            raise UserError(f"steering: trait vector of {trait}: {e}") from e
        with atomic_path(out / "vectors" / f"{trait}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, tv.vector)
        atomic_write_json(out / "vectors" / f"{trait}.json", {"model": cfg.model.model, "shape": list(tv.vector.shape),
                                                              "site": "blocks.{L}.hook_resid_post", **tv.to_dict()})
        prog.step(2, note=f"{trait}: trait vector")
        v = tv.vector[layer]
        prompts = [format_chat(tok, q) for q in sq]
        answers, nll = {}, {}
        for a in alphas:
            answers[a] = steered_generate(model, tok, prompts, v, layer, a, **gen)
            nll[a] = coherence(model, tok, prompts, answers[a], chat=False, add_special_tokens=False,
                               batch_size=cfg.batch_size)
            prog.step(note=f"{trait}: alpha {a:g}")
        labels = [str(x) for x in clf.predict([t for a in alphas for t in answers[a]])] if sq else []
        by_alpha = {a: labels[i * len(sq):(i + 1) * len(sq)] for i, a in enumerate(alphas)}
        points = [sweep_point(a, answers[a], by_alpha[a], trait, nll[a], nll[0.0], classes, n_boot=cfg.n_boot,
                              seed=cfg.seed) for a in alphas]
        sweep_rows += [{"trait": trait, "alpha": a, "question": q, "text": t, "coherence": None if np.isnan(c) else float(c),
                        "label": lab} for a in alphas
                       for q, t, c, lab in zip(sq, answers[a], nll[a], by_alpha[a], strict=True)]
        choice = choose_alpha(alphas, [p.trait_alignment for p in points], [p.coherence_rise for p in points],
                              cfg.max_coherence_rise)
        jobs = build_jobs(rows, tok, [trait], ["base"], cfg.n_questions or 0, 0, cfg.seed)
        if not jobs:
            raise UserError(f"steering: the dataset has no {trait} test questions")
        texts = steered_generate(model, tok, [j.prompt for j in jobs], v, layer, choice.alpha, **gen)
        prog.step(note=f"{trait}: test at alpha {choice.alpha:g}")
        gens += [{"key": f"steer|{trait}|{j.topic}", "trait": trait, "method": "steer", "topic": j.topic,
                  "question": j.question, "adapter": BASE, "text": t, "alpha": choice.alpha, "layer": layer}
                 for j, t in zip(jobs, texts, strict=True)]
        result[trait] = {"alpha": choice.alpha, "usable": choice.usable, "reason": choice.reason,
                         "vector_norm": float(np.linalg.norm(v.astype(np.float64))),
                         "n_vector_questions": len(vq), "n_sweep_questions": len(sq), "n_test_questions": len(jobs),
                         "vector_questions": vq, "sweep_questions": sq, "sweep": [p.to_dict() for p in points]}
    atomic_write_text(out / "generations.jsonl", "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in gens))
    atomic_write_text(out / "sweep.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sweep_rows))
    table = emoji_table(gens, n_boot=cfg.n_boot, seed=cfg.seed, model=cfg.model.model)
    write_table(table, out)
    ta = trait_alignment(gens, clf)
    paired, skipped = _steer_vs_peft(cfg, gens, clf)
    atomic_write_json(out / "trait_alignment.json", {**ta.to_dict(), "paired": [p.to_dict() for p in paired],
                                                      "paired_skipped": skipped, "metric": cfg.trait_metric})
    summary = {
        "model": cfg.model.model, "layer": layer, "n_layers": n, "site": f"blocks.{layer}.hook_resid_post",
        "alphas": alphas, "max_coherence_rise": cfg.max_coherence_rise, "rule": RULE,
        "decoding": {"max_new_tokens": settings.max_new_tokens, "do_sample": False},
        "trait_metric": cfg.trait_metric,
        "questions": "per trait: its train questions sorted by topic, each once; the first n_vector_questions make "
                     "the trait vector, the next n_sweep_questions (disjoint from them) the alpha sweep; the test "
                     "questions are evaluate's (the first n_questions test questions by topic)",
        "traits": result,
        "test": {f"{r.trait}/steer": {"emoji": table.row(r.trait, "steer").to_dict(), "alignment": r.to_dict()}
                 for r in ta.rows},
        "steer_vs_peft": {"tests": [p.to_dict() for p in paired], "skipped": skipped},
    }
    atomic_write_json(out / "steering.json", summary)
    atomic_write_text(out / "steering.md", "\n".join(_markdown(summary)) + "\n")


def _steer_vs_peft(cfg: SteeringConfig, gens: list[dict[str, Any]], clf: Any) -> tuple[list[Any], dict[str, str]]:
    """PEFT vs steer on the same test questions, paired by question (exact McNemar, Newcombe
    interval, Holm over traits), where evaluate's PEFT answers were decoded as these (greedy,
    the same length, the same model); else no tests and, per trait, why."""
    from interp.behaviour.alignment import paired_tests

    traits = list(dict.fromkeys(g["trait"] for g in gens))
    path = _evaluate_generations(cfg)
    if path is None:
        return [], dict.fromkeys(traits, f"no finished evaluate stage in {artifact(cfg.run_dir.out, 'evaluate')}")
    ev = (read_json(path.parent / "config.json") or {}).get("config") or {}
    why = None
    if ev.get("do_sample") is not False:
        why = "evaluate's answers were sampled, these are greedy"
    elif ev.get("max_new_tokens") != cfg.max_new_tokens:
        why = f"evaluate's answers have {ev.get('max_new_tokens')} new tokens, these {cfg.max_new_tokens}"
    elif (ev.get("model") or {}).get("model") != cfg.model.model:
        why = f"evaluate answered with {(ev.get('model') or {}).get('model')}, this stage steers {cfg.model.model}"
    if why:
        return [], dict.fromkeys(traits, why)
    peft = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    peft = [g for g in peft if g.get("method") == "peft"]
    pairs, skipped = [], {}
    for trait in traits:
        ours = {g["question"] for g in gens if g["trait"] == trait}
        theirs = [g for g in peft if g["trait"] == trait and g.get("question") in ours]
        if {g["question"] for g in theirs} != ours:
            skipped[trait] = (f"evaluate has PEFT answers to {len({g['question'] for g in theirs})} of the "
                              f"{len(ours)} test questions")
            continue
        pairs += theirs + [g for g in gens if g["trait"] == trait]
    return (paired_tests(pairs, clf, a="peft", others=("steer",)) if pairs else []), skipped


def _markdown(s: dict[str, Any]) -> list[str]:
    """steering.md: per trait the choice, the sweep, the test answers and PEFT vs steer."""
    def ci(lo_hi: list[Any], f: Any = pct) -> str:
        return f"[{f(lo_hi[0])}, {f(lo_hi[1])}]" if lo_hi and None not in lo_hi else ""

    def nats(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.3f}"

    lines = [f"Steering `{s['model']}` at `{s['site']}` (of {s['n_layers']} blocks): alpha * v added at every "
             f"position, v the trait vector's row at that layer. Greedy answers of {s['decoding']['max_new_tokens']} "
             f"new tokens. Questions: {s['questions']}.", "", f"Rule: {s['rule']}", "",
             "| trait | alpha* | usable | ‖v‖ | vector / sweep / test questions | why |", "|---|---:|---|---:|---|---|"]
    lines += [f"| {t} | {v['alpha']:g} | {'yes' if v['usable'] else 'no'} | {v['vector_norm']:.3g} | "
              f"{v['n_vector_questions']} / {v['n_sweep_questions']} / {v['n_test_questions']} | {v['reason']} |"
              for t, v in s["traits"].items()]
    lines += ["", "Sweep (train questions; 95% intervals: Wilson for the emoji rate and trait alignment, bootstrap over "
              "answers for ESR and coherence, over questions for its rise):", "",
              "| trait | alpha | emoji rate | ESR | trait alignment | coherence (NLL/token) | rise over alpha 0 |",
              "|---|---:|---|---|---|---|---|"]
    for t, v in s["traits"].items():
        for p in v["sweep"]:
            coh = "n/a" if p["coherence"] is None else f"{p['coherence']:.3f}"
            lines.append(f"| {t} | {p['alpha']:g}{' *' if p['alpha'] == v['alpha'] else ''} | {pct(p['emoji_rate'])} "
                         f"{ci(p['emoji_rate_ci'])} | {pct(p['esr'])} {ci(p['esr_ci'])} | {pct(p['trait_alignment'])} "
                         f"{ci(p['trait_alignment_ci'])} | {coh} | {nats(p['coherence_rise'])} "
                         f"{ci(p['coherence_rise_ci'], nats)} |")
    lines += ["", "Test questions, steered at alpha* (emoji_table.md has emojis per answer and the top emojis):", "",
              "| trait | alpha* | n | emoji rate | ESR | trait alignment |", "|---|---:|---:|---|---|---|"]
    for r in s["test"].values():
        e, a = r["emoji"], r["alignment"]
        lines.append(f"| {a['trait']} | {s['traits'][a['trait']]['alpha']:g} | {a['n_answers']} | {pct(e['emoji_rate'])} "
                     f"{ci([e['emoji_rate_lo'], e['emoji_rate_hi']])} | {pct(e['esr'])} {ci([e['esr_lo'], e['esr_hi']])} | "
                     f"{pct(a['trait_alignment'])} {ci(a['ci'])} |")
    tests, skipped = s["steer_vs_peft"]["tests"], s["steer_vs_peft"]["skipped"]
    if tests:
        lines += ["", "PEFT vs steer on the same test questions (paired by question; exact McNemar, two-sided; Holm "
                  "over traits; difference = PEFT - steer in the share aligned, 95% Newcombe interval):", "",
                  "| trait | pairs | both | PEFT only | steer only | neither | difference | p | p (Holm) |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
        lines += [f"| {p['trait']} | {p['n_pairs']} | {p['both']} | {p['only_a']} | {p['only_b']} | {p['neither']} | "
                  f"{'n/a' if p['diff'] is None else format(p['diff'], '+.1%')} "
                  f"{ci(p['diff_ci'], lambda x: format(x, '+.1%'))} | {pval(p['p_mcnemar'])} | {pval(p['p_holm'])} |"
                  for p in tests]
    if skipped:
        lines += ["", "PEFT vs steer not compared: " + "; ".join(f"{t}: {why}" for t, why in skipped.items()) + "."]
    return lines


SWEEP_KEYS = ("alpha", "emoji_rate", "emoji_rate_ci", "esr", "esr_ci", "trait_alignment", "trait_alignment_ci",
              "coherence", "coherence_rise", "coherence_rise_ci")


def _metrics(stage_dir: Path) -> dict[str, Any]:
    s = read_json(stage_dir / "steering.json")
    if not s:
        return {}
    m: dict[str, Any] = {"steering": {t: {
        "layer": s["layer"], "alpha": v["alpha"], "usable": v["usable"], "reason": v["reason"],
        "vector_norm": v["vector_norm"], "sweep": [{k: p[k] for k in SWEEP_KEYS} for p in v["sweep"]],
        "n_vector_questions": v["n_vector_questions"], "n_sweep_questions": v["n_sweep_questions"]}
        for t, v in s["traits"].items()}}
    table = (read_json(stage_dir / "emoji_table.json") or {}).get("rows") or []
    m["steer_emoji_table"] = {f"{r['trait']}/{r['method']}": {
        "n_answers": r["n_answers"], "emoji_rate": r["emoji_rate"], "emoji_rate_ci": [r["emoji_rate_lo"], r["emoji_rate_hi"]],
        "esr": r["esr"], "esr_ci": [r["esr_lo"], r["esr_hi"]], "top_emojis": r["top_emojis"]} for r in table}
    ta = read_json(stage_dir / "trait_alignment.json") or {}
    m["steer_alignment"] = {f"{r['trait']}/{r['method']}": {"trait_alignment": r["trait_alignment"], "ci": r["ci"],
                                                             "predicted": r["predicted"]} for r in ta.get("rows") or []}
    if ta.get("paired"):
        m["steer_vs_peft"] = {p["trait"]: {"p": p["p_mcnemar"], "p_holm": p["p_holm"], "diff": p["diff"],
                                           "diff_ci": p["diff_ci"]} for p in ta["paired"]}
    if ta.get("paired_skipped"):
        m["steer_vs_peft_skipped"] = ta["paired_skipped"]
    return m


def _draw(stage_dir: Path) -> list[Path]:
    from text2emoji import figures

    s = read_json(stage_dir / "steering.json")
    return figures.steering_sweep(s, stage_dir) if s else []


def _show(cfg: SteeringConfig, stage_dir: Path) -> None:
    for name in ("steering.md", "emoji_table.md"):
        print((stage_dir / name).read_text(encoding="utf-8"))


def _from_run(run: RunConfig) -> SteeringConfig:
    return SteeringConfig(model=run.model, run_dir=run.run_dir, data=run.data, allow_emoticons=run.allow_emoticons,
                          preset=run.preset, n_questions=run.n_questions, max_new_tokens=run.max_new_tokens,
                          batch_size=run.batch_size, seed=run.seed, trait_metric=run.trait_metric,
                          label_map=run.label_map)


STEERING = Stage(
    name="steering", config=SteeringConfig, from_run=_from_run, compute=_compute, inputs=_inputs, resolve=_resolve,
    draw=_draw, metrics=_metrics, show=_show,
    help="steering as a method: per trait a trait vector on train questions, an alpha sweep (emoji rate, ESR, trait "
         "alignment, coherence) that picks alpha, then the test questions steered at it: emoji table and trait "
         "alignment rows of method steer, PEFT vs steer paired where evaluate ran",
    figures=(("steering_sweep.png", "Steering: emoji rate, ESR, trait alignment and coherence rise against alpha on "
              "the sweep questions (95% intervals; star: the alpha chosen)"),),
)
