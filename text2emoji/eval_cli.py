"""``text2emoji evaluate``: answers from base, PEFT and in-context models, and the emoji table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from interp.models import ModelConfig
from text2emoji.core.config import ConfigError, option

# quick: minutes on 2 CPU cores; paper: every test question, the study's answer length
PRESETS = {"quick": {"n_questions": 16, "max_new_tokens": 48}, "paper": {"n_questions": 0, "max_new_tokens": 150}}


@dataclass
class EvaluateConfig(ModelConfig):
    """``text2emoji evaluate``. On CPU the adapters run on a float32 base (4-bit generation is
    ~5x slower there); ``--load-in-4bit`` evaluates on the nf4 base they were trained on."""

    data: list[str] = option([], help="Opinion QA files; default: the bundled dataset", flag="--data", metavar="PATH")
    adapters: str | None = option(None, help="folder with <trait>/adapter (default: OUT/train)")
    traits: list[str] = option([], help="traits to evaluate (default: all five)", flag="--trait")
    methods: list[str] = option([], help="base, peft, incontext (default: all three)", flag="--method")
    preset: Literal["quick", "paper"] = option("quick", help="quick: 16 questions x 48 tokens per trait; paper: all x 150")
    n_questions: int | None = option(None, help="test questions per trait (0 = all; default: the preset's)")
    max_new_tokens: int | None = option(None, help="tokens per answer (default: the preset's)")
    do_sample: bool = option(False, help="sample instead of greedy decoding")
    temperature: float = option(1.0, help="sampling temperature (with --do-sample)")
    top_p: float = option(1.0, help="nucleus sampling mass (with --do-sample)")
    k_demos: int = option(3, help="demonstrations in the in-context baseline")
    batch_size: int = option(16, help="prompts per generation batch", hash=False)
    n_boot: int = option(2000, help="bootstrap resamples for the intervals")
    seed: int = option(0, help="seed for demonstrations, sampling and bootstrap")
    out: str = option("results/main", help="run directory; writes out/evaluate/", hash=False)
    force: bool = option(False, help="recompute even if finished with the same config", hash=False)

    def validate(self) -> None:
        super().validate()
        from interp.behaviour.evaluate import METHODS
        from text2emoji.core.schema import TRAITS

        if bad := [t for t in self.traits if t not in TRAITS]:
            raise ConfigError(f"traits: unknown {', '.join(bad)}; valid: {', '.join(TRAITS)}")
        if bad := [m for m in self.methods if m not in METHODS]:
            raise ConfigError(f"methods: unknown {', '.join(bad)}; valid: {', '.join(METHODS)}")
        if self.adapter is not None:
            raise ConfigError("adapter: evaluate loads every trait's adapter from --adapters")


@dataclass
class EvaluateStageConfig(EvaluateConfig):
    dataset_hash: str = option("", help="config hash of the dataset stage")
    adapter_hashes: dict[str, str] | None = option(
        None, help="SHA-256 of each trait's adapter weights, and of the prompt files used")


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    from finetune.validate import load_rows
    from interp.behaviour.evaluate import (
        METHODS,
        build_jobs,
        emoji_table,
        generate_jobs,
        load_adapters,
        write_table,
    )
    from interp.behaviour.generation import DecodeSettings
    from interp.models import load_model
    from interp.prompts import prompts_dir
    from text2emoji.core.files import file_hash
    from text2emoji.core.runs import Progress, open_stage
    from text2emoji.core.schema import TRAITS
    from text2emoji.pipeline import stage_dataset

    dataset, dataset_hash = stage_dataset(cfg)
    traits = cfg.traits or list(TRAITS)
    methods = cfg.methods or list(METHODS)
    adapters_dir = Path(cfg.adapters or Path(cfg.out) / "train")
    adapter_paths = {t: adapters_dir / t / "adapter" for t in traits} if "peft" in methods else {}
    hashes = {t: file_hash(p / "adapter_model.safetensors") for t, p in adapter_paths.items()}
    hashes["prompts"] = file_hash(*(prompts_dir() / n for n in ("incontext.yaml", "icl_explain.yaml", "trait_profiles.yaml")))
    preset = PRESETS[cfg.preset]
    fields = asdict(cfg)
    fields["n_questions"] = preset["n_questions"] if cfg.n_questions is None else cfg.n_questions
    fields["max_new_tokens"] = preset["max_new_tokens"] if cfg.max_new_tokens is None else cfg.max_new_tokens
    scfg = EvaluateStageConfig(**fields, dataset_hash=dataset_hash, adapter_hashes=hashes)
    with open_stage(cfg.out, "evaluate", scfg, force=cfg.force, seed=cfg.seed) as st:
        if not st.reused:
            rows = load_rows([dataset])
            lm = load_model(cfg)
            model = load_adapters(lm.model, adapter_paths) if adapter_paths else lm.model
            settings = DecodeSettings(max_new_tokens=scfg.max_new_tokens, do_sample=cfg.do_sample,
                                      temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
            jobs = build_jobs(rows, lm.tokenizer, traits, methods, scfg.n_questions, cfg.k_demos, cfg.seed)
            gens = generate_jobs(model, lm.tokenizer, jobs, settings, st.path("generations.jsonl"),
                                 cfg.batch_size, progress=Progress("evaluate", unit="generations").update)
            st.write_json("decoding.json", asdict(settings))
            write_table(emoji_table(gens, n_boot=cfg.n_boot, seed=cfg.seed, model=cfg.model), st.dir)
            write_alignment(rows, gens, st.dir, cfg.seed)
            if "peft" in methods:
                explain(model, lm.tokenizer, gens, st.dir, cfg.batch_size)
            draw(st.dir)
        return st.read_json("emoji_table.json")


def write_alignment(rows: list, gens: list[dict[str, Any]], out_dir: Path, seed: int) -> None:
    """Trait alignment per (trait, method) and, per trait, the word contributions of its first
    PEFT answer (or first answer) towards the target trait."""
    from interp.behaviour.alignment import trait_alignment, trait_classifier
    from text2emoji.core.files import atomic_write_json, atomic_write_text

    ta = trait_alignment(gens, trait_classifier(rows, seed), examples=True)
    atomic_write_json(out_dir / "trait_alignment.json", ta.to_dict())
    lines = ["Trait alignment: share of answers the dataset's TF-IDF + logistic-regression trait "
             "classifier assigns to the target trait.", "", "| trait | method | n | TA |", "|---|---|---:|---:|"]
    lines += [f"| {r.trait} | {r.method} | {r.n_answers} | {100 * r.trait_alignment:.1f}% |" for r in ta.rows]
    atomic_write_text(out_dir / "trait_alignment.md", "\n".join(lines) + "\n")


def explain(model: Any, tokenizer: Any, gens: list[dict[str, Any]], out_dir: Path, batch_size: int) -> None:
    """ICL explainability on every PEFT answer: the base model (pre) and the trait's adapter
    (post) each name five tokens for the answer's trait; top 50 per trait and model."""
    from interp.behaviour.evaluate import BASE, Job, generate_jobs
    from interp.behaviour.generation import DecodeSettings
    from interp.behaviour.icl import explain_messages, parse_tokens, top_tokens
    from interp.chat import format_chat
    from text2emoji.core.files import atomic_write_json, atomic_write_text

    jobs = []
    for g in gens:
        if g["method"] == "peft":
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

    read = lambda name: json.loads((stage_dir / name).read_text(encoding="utf-8"))  # noqa: E731
    paths = figures.emoji_rates(read("emoji_table.json")["rows"], stage_dir)
    paths += figures.word_contributions(read("trait_alignment.json")["word_contributions"], stage_dir)
    if (stage_dir / "icl_top_tokens.json").exists():
        paths += figures.icl_tokens(read("icl_top_tokens.json"), stage_dir)
    return paths


def cmd_evaluate(cfg: EvaluateConfig) -> None:
    evaluate(cfg)
    stage = Path(cfg.out) / "evaluate"
    print((stage / "emoji_table.md").read_text(encoding="utf-8"))
    print((stage / "trait_alignment.md").read_text(encoding="utf-8"))
    if (stage / "icl_top_tokens.md").exists():
        print((stage / "icl_top_tokens.md").read_text(encoding="utf-8"), end="")
