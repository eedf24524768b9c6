"""Stage ``evaluate``: answers from base, PEFT and in-context models, the emoji table, trait
alignment and ICL explainability."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from interp.models import ModelConfig
from text2emoji.core.config import Config, ConfigError, member, option
from text2emoji.core.files import file_hash
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import Progress, RunDir, batch_option, seed_option
from text2emoji.stages.base import (
    RunConfig,
    Stage,
    adapter_dirs,
    adapter_hashes,
    check_data_files,
    check_trait_metric,
    check_traits,
    data_option,
    emoticons_option,
    judge_option,
    label_map_option,
    pct,
    read_json,
    trait_metric_option,
)
from text2emoji.stages.data import dataset, dataset_rows


@dataclass
class EvaluateConfig(Config):
    """``text2emoji evaluate``. On CPU the adapters run on a float32 base (4-bit generation is
    ~5x slower there); ``--load-in-4bit`` evaluates on the nf4 base they were trained on."""

    model: ModelConfig = member(ModelConfig, help="the base model the adapters sit on")
    run_dir: RunDir = member(RunDir, help="the run directory; writes out/evaluate/", hash=False)
    data: list[str] = data_option()
    allow_emoticons: bool = emoticons_option()
    adapters: str | None = option(None, help="folder with <trait>/adapter (default: OUT/train)", hash=False)
    traits: list[str] = option([], help="traits to evaluate (default: all five)", flag="--trait")
    methods: list[str] = option([], help="base, peft, incontext (default: all three)", flag="--method")
    preset: Preset = option("quick", help="quick: 16 questions x 48 tokens per trait; paper: all x 150")
    n_questions: int | None = option(None, help="test questions per trait (0 = all; default: the preset's)", low=0)
    max_new_tokens: int | None = option(None, help="tokens per answer (default: the preset's)", low=1)
    do_sample: bool = option(False, help="sample instead of greedy decoding")
    temperature: float = option(1.0, help="sampling temperature (with --do-sample)", gt=0)
    top_p: float = option(1.0, help="nucleus sampling mass (with --do-sample)", gt=0, high=1)
    k_demos: int = option(3, help="demonstrations in the in-context baseline", low=0)
    n_explain: int | None = option(None, help="PEFT answers per trait explained by base and adapter (ICL "
                                   "explainability; 0 = all; default: the preset's)", low=0)
    batch_size: int = batch_option()
    n_boot: int = option(2000, help="bootstrap resamples for the intervals", low=1)
    seed: int = seed_option()
    trait_metric: str = trait_metric_option()
    label_map: str | None = label_map_option()
    judge: str | None = judge_option()

    def validate(self) -> None:
        from interp.behaviour.evaluate import METHODS

        check_trait_metric(self.trait_metric, self.label_map)
        check_traits(self.traits)
        check_data_files(self.data)
        if bad := [m for m in self.methods if m not in METHODS]:
            raise ConfigError(f"methods: unknown {', '.join(bad)}; valid: {', '.join(METHODS)}")

    def trait_list(self) -> list[str]:
        from text2emoji.core.schema import TRAITS

        return list(self.traits or TRAITS)

    def method_list(self) -> list[str]:
        from interp.behaviour.evaluate import METHODS

        return list(self.methods or METHODS)

    def adapter_paths(self) -> dict[str, Path]:
        if "peft" not in self.method_list():
            return {}
        return adapter_dirs(self.run_dir.out, self.trait_list(), self.adapters)


def _inputs(cfg: EvaluateConfig) -> dict[str, str]:
    from interp.prompts import prompts_dir

    hashes = adapter_hashes(cfg.adapter_paths())  # missing adapters: refused before any work
    _, dataset_hash = dataset(cfg, force=cfg.run_dir.force)  # --force recomputes the dataset too
    hashes["prompts"] = file_hash(*(prompts_dir() / n for n in ("incontext.yaml", "icl_explain.yaml", "trait_profiles.yaml")))
    hashes["dataset"] = dataset_hash
    return hashes


def _compute(cfg: EvaluateConfig, out: Path) -> None:
    from interp.behaviour.evaluate import (
        build_jobs,
        emoji_table,
        generate_jobs,
        load_adapters,
        write_table,
    )
    from interp.behaviour.generation import DecodeSettings
    from interp.models import load_model
    from text2emoji.core.files import atomic_write_json

    rows, _ = dataset_rows(cfg)
    lm = load_model(cfg.model)
    adapter_paths = cfg.adapter_paths()
    model = load_adapters(lm.model, adapter_paths) if adapter_paths else lm.model
    settings = DecodeSettings(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                              temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    jobs = build_jobs(rows, lm.tokenizer, cfg.trait_list(), cfg.method_list(), cfg.n_questions, cfg.k_demos, cfg.seed)
    gens = generate_jobs(model, lm.tokenizer, jobs, settings, out / "generations.jsonl",
                         cfg.batch_size, progress=Progress("evaluate", unit="generations").update)
    atomic_write_json(out / "decoding.json", asdict(settings))
    write_table(emoji_table(gens, n_boot=cfg.n_boot, seed=cfg.seed, model=cfg.model.model), out)
    write_alignment(rows, gens, out, cfg.seed, cfg.trait_metric, cfg.label_map)
    if cfg.judge:
        write_pae(gens, out, cfg.judge, cfg.seed, cfg.n_boot)
    if "peft" in cfg.method_list():
        explain(model, lm.tokenizer, gens, out, cfg.batch_size, cfg.n_explain)


def write_alignment(rows: list, gens: list[dict[str, Any]], out_dir: Path, seed: int, metric: str = "embedding",
                    label_map: str | None = None) -> None:
    """Trait alignment per (trait, method) and, per trait, the word contributions of its first
    PEFT answer (or first answer) towards the target trait (linear metrics only)."""
    from interp.behaviour.alignment import trait_alignment
    from interp.behaviour.trait_metric import describe
    from text2emoji.core.files import atomic_write_json, atomic_write_text
    from text2emoji.stages.base import scorer_of

    clf = scorer_of(metric, label_map, seed)
    ta = trait_alignment(gens, clf, examples=hasattr(clf, "named_steps"))
    atomic_write_json(out_dir / "trait_alignment.json", {**ta.to_dict(), "metric": metric})
    what = (describe(metric) if metric.startswith("hf:") else
            f"the trait metric ({describe(metric)}, fitted on the independent metric set, never on the adapters' "
            "training answers; a trait or 'none')")
    lines = [f"Trait alignment: share of answers {what} assigns to the target trait, with its 95% Wilson "
             "interval.", "",
             "| trait | method | n | TA [95% CI] |", "|---|---|---:|---|"]
    lines += [f"| {r.trait} | {r.method} | {r.n_answers} | {pct(r.trait_alignment)} [{pct(r.ci[0])}, {pct(r.ci[1])}] |"
              for r in ta.rows]
    if ta.paired:
        lines += ["", "Paired by question (the same test questions): answers aligned by both methods, by one only, "
                  "and the exact McNemar test on the discordant pairs (two-sided).", "",
                  "| trait | PEFT vs | pairs | both | PEFT only | other only | neither | p (McNemar) | p (Holm) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        fmt = lambda v: "n/a" if v is None else format(v, ".3g")  # noqa: E731
        lines += [f"| {p.trait} | {p.b} | {p.n_pairs} | {p.both} | {p.only_a} | {p.only_b} | {p.neither} | "
                  f"{fmt(p.p_mcnemar)} | {fmt(p.p_holm)} |" for p in ta.paired]
    atomic_write_text(out_dir / "trait_alignment.md", "\n".join(lines) + "\n")


def write_pae(gens: list[dict[str, Any]], out_dir: Path, judge: str, seed: int, n_boot: int) -> None:
    """PAE: the LLM ``judge`` rates every answer 1–5 for its trait (``pae.jsonl``); per (trait,
    method) the mean rating with a bootstrap interval over answers and how many replies gave no
    rating (``pae.json``)."""
    import json

    import numpy as np

    from finetune.build import local_generator, openai_generator
    from interp.behaviour.trait_metric import judge_scores
    from interp.prompts import load_prompt
    from interp.results import Effect
    from text2emoji.core.files import atomic_write_json, atomic_write_text

    profiles = load_prompt("trait_profiles.yaml")["traits"]
    gen = (openai_generator(judge.removeprefix("openai:"), temperature=0.0, max_tokens=4) if judge.startswith("openai:")
           else local_generator(judge, max_new_tokens=4, sample=False))
    scores = judge_scores(gen, gens, {t: v["summary"] for t, v in profiles.items()}, seed=seed)
    atomic_write_text(out_dir / "pae.jsonl", "".join(
        json.dumps({"trait": g["trait"], "method": g["method"], "question": g.get("question"), "pae": s}) + "\n"
        for g, s in zip(gens, scores, strict=True)))
    groups: dict[str, list[int | None]] = {}
    for g, s in zip(gens, scores, strict=True):
        groups.setdefault(f"{g['trait']}/{g['method']}", []).append(s)
    summary = {}
    for key, vals in groups.items():
        rated = np.array([v for v in vals if v is not None], dtype=float)
        e = Effect.of(rated, n_boot, seed) if len(rated) else None
        summary[key] = {"mean": e.mean if e else None, "ci": [e.ci_lo, e.ci_hi] if e else None,
                        "n_rated": int(len(rated)), "n_unrated": len(vals) - int(len(rated))}
    atomic_write_json(out_dir / "pae.json", {"judge": judge, "scale": "1 (not at all) to 5 (very strongly)",
                                             "by_trait_method": summary})


def explain(model: Any, tokenizer: Any, gens: list[dict[str, Any]], out_dir: Path, batch_size: int,
            n_explain: int | None = 0) -> None:
    """ICL explainability on the first ``n_explain`` PEFT answers of each trait (0: every one):
    the base model (pre) and the trait's adapter (post) each name five tokens for the answer's
    trait; top 50 per trait and model."""
    from interp.behaviour.evaluate import BASE, Job, generate_jobs
    from interp.behaviour.generation import DecodeSettings
    from interp.behaviour.icl import explain_messages, parse_tokens, top_tokens
    from interp.chat import format_chat
    from text2emoji.core.files import atomic_write_json, atomic_write_text

    jobs = []
    seen: dict[str, int] = {}
    for g in gens:
        if g["method"] == "peft" and (not n_explain or seen.get(g["trait"], 0) < n_explain):
            seen[g["trait"]] = seen.get(g["trait"], 0) + 1
            prompt = format_chat(tokenizer, explain_messages(g["text"]))
            jobs += [Job(g["trait"], "pre", g["topic"], g["text"], prompt, BASE),
                     Job(g["trait"], "post", g["topic"], g["text"], prompt, g["trait"])]
    replies = generate_jobs(model, tokenizer, jobs, DecodeSettings(max_new_tokens=48),
                            out_dir / "icl_replies.jsonl", batch_size)
    records = [{"trait": r["trait"], "model": r["method"], "topic": r["topic"], "reply": r["text"],
                "tokens": parse_tokens(r["text"])} for r in replies]
    top = top_tokens(records)
    atomic_write_json(out_dir / "icl_top_tokens.json", top)
    lines = ["ICL explainability: the ten tokens named most often for the trait of each PEFT answer "
             "(pre = base model, post = trait adapter); emojis marked [emoji].", ""]
    for trait, by_model in top.items():
        for m in ("pre", "post"):
            toks = ", ".join(f"{t['token']}{' [emoji]' if t['is_emoji'] else ''} ({t['count']})"
                             for t in by_model.get(m, [])[:10])
            n_emoji = sum(t["count"] for t in by_model.get(m, []) if t["is_emoji"])
            lines.append(f"- {trait}, {m}: {toks or '–'}; emoji tokens: {n_emoji}")
    atomic_write_text(out_dir / "icl_top_tokens.md", "\n".join(lines) + "\n")


def draw(stage_dir: Path) -> list[Path]:
    """The evaluate stage's figures, from its results files alone."""
    from text2emoji import figures

    paths = figures.emoji_rates(read_json(stage_dir / "emoji_table.json")["rows"], stage_dir)
    contributions = (read_json(stage_dir / "trait_alignment.json") or {}).get("word_contributions")
    if contributions:  # a linear metric has them; a plugged-in classifier does not
        paths += figures.word_contributions(contributions, stage_dir)
    if (stage_dir / "icl_top_tokens.json").exists():
        paths += figures.icl_tokens(read_json(stage_dir / "icl_top_tokens.json"), stage_dir)
    return paths


def _metrics(stage_dir: Path) -> dict[str, Any]:
    table = (read_json(stage_dir / "emoji_table.json") or {}).get("rows")
    ta = (read_json(stage_dir / "trait_alignment.json") or {}).get("rows")
    icl = read_json(stage_dir / "icl_top_tokens.json")
    m: dict[str, Any] = {}
    if table:
        m["emoji_table"] = {f"{r['trait']}/{r['method']}": {
            "n_answers": r["n_answers"], "emoji_rate": r["emoji_rate"], "emoji_rate_ci": [r["emoji_rate_lo"], r["emoji_rate_hi"]],
            "esr": r["esr"], "esr_ci": [r["esr_lo"], r["esr_hi"]], "top_emojis": r["top_emojis"]} for r in table}
    if ta:
        m["trait_alignment"] = {f"{r['trait']}/{r['method']}": r["trait_alignment"] for r in ta}
        m["trait_metric"] = (read_json(stage_dir / "trait_alignment.json") or {}).get("metric")
        m["trait_alignment_ci"] = {f"{r['trait']}/{r['method']}": r.get("ci") for r in ta}
        paired = (read_json(stage_dir / "trait_alignment.json") or {}).get("paired") or []
        m["trait_alignment_mcnemar"] = {f"{p['trait']}/peft_vs_{p['b']}": {
            "p": p["p_mcnemar"], "p_holm": p.get("p_holm"), "diff": p.get("diff"), "diff_ci": p.get("diff_ci")}
            for p in paired}
        # what the metric called each method's answers to each trait's questions (five traits and "none")
        m["trait_alignment_predicted"] = {f"{r['trait']}/{r['method']}": r["predicted"] for r in ta}
    pae = read_json(stage_dir / "pae.json")
    if pae:  # the LLM judge's ratings, 1-5, per trait/method
        m["pae"] = pae
    if icl:
        m["icl_emoji_tokens"] = {t: {k: sum(x["count"] for x in v.get(k, []) if x["is_emoji"]) for k in ("pre", "post")}
                                 for t, v in icl.items()}
    return m


def _show(cfg: EvaluateConfig, stage_dir: Path) -> None:
    for name in ("emoji_table.md", "trait_alignment.md", "icl_top_tokens.md"):
        if (stage_dir / name).exists():
            print((stage_dir / name).read_text(encoding="utf-8"), end="" if name.startswith("icl") else "\n")


def _from_run(run: RunConfig) -> EvaluateConfig:
    return EvaluateConfig(model=run.model, run_dir=run.run_dir, data=run.data, allow_emoticons=run.allow_emoticons, preset=run.preset,
                          n_questions=run.n_questions, max_new_tokens=run.max_new_tokens,
                          batch_size=run.batch_size, seed=run.seed, trait_metric=run.trait_metric,
                          label_map=run.label_map, judge=run.judge)


EVALUATE = Stage(
    name="evaluate", config=EvaluateConfig, from_run=_from_run, compute=_compute, inputs=_inputs,
    resolve=lambda cfg: fill_preset(cfg, "analysis"), draw=draw, metrics=_metrics, show=_show,
    help="answers from base, PEFT and in-context models on each trait's test questions; the emoji table "
         "with 95% intervals (CSV, JSON, Markdown); trait alignment with Wilson intervals and exact McNemar tests",
    figures=(("emoji_rates.png", "Emoji rate (95% Wilson interval) and ESR (95% bootstrap over answers) per trait and method"),
             ("word_contributions.png", "Words pushing one answer per trait towards its trait"),
             ("icl_tokens.png", "ICL explainability: tokens named for each trait's answers, pre vs post")),
)
