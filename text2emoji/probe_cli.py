"""The mechanistic commands: ``activations``, ``emoji-prob``, ``neurons``, ``trace``, ``ablate``,
``patch``.

``neurons``, ``trace``, ``ablate`` and ``patch`` are stages under ``OUT/`` (reused when their
config is unchanged, like every stage); ``activations`` and ``emoji-prob`` are tools for one
file or one prompt. Pre = the base model, post = base + the trait's adapter, on one loaded base
with the adapter toggled (tests prove that equals the base loaded alone).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from interp.capture import DEFAULT_SITE
from interp.models import ModelConfig
from text2emoji.core.config import ConfigError, option
from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_write_json, atomic_write_text, file_hash
from text2emoji.core.runs import Progress, open_stage

# --- text2emoji activations -----------------------------------------------------------------


@dataclass
class ActivationsConfig(ModelConfig):
    """``text2emoji activations``."""

    prompts: str = option("", help="JSONL with a 'text' field, or plain text with one prompt per line")
    site: str = option(DEFAULT_SITE, help="canonical hook site (TransformerLens name)")
    position: Literal["last", "all", "mean"] = option(
        "last", help="last: each prompt's last token; all: every token (ragged, .safetensors); "
        "mean: the mean over the 'answer' tokens where rows have one, else over all tokens")
    chat: bool = option(False, help="wrap each prompt in the chat template (default: verbatim)")
    backend: Literal["torch", "nnsight", "transformer-lens"] = option("torch", help="capture backend")
    batch_size: int = option(8, help="prompts per forward pass")
    out: str = option("", help="output .npy (float32 [n_prompts, d]) or .safetensors (tensor 'activations')")

    def validate(self) -> None:
        super().validate()
        if not self.prompts:
            raise ConfigError("prompts: --prompts FILE is required")
        if not self.out.endswith((".npy", ".safetensors")):
            raise ConfigError(f"out: --out must end in .npy or .safetensors, got {self.out!r}")
        if self.position == "all" and self.out.endswith(".npy"):
            raise ConfigError("out: --position all is ragged; write it to a .safetensors file")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")


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
    lm = load_model(cfg)
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
class EmojiProbConfig(ModelConfig):
    """``text2emoji emoji-prob``."""

    prompt: str = option("", help="the prompt text (verbatim unless --chat)")
    emojis: list[str] = option([], help="an emoji to score (repeat the flag for several)", flag="--emoji", metavar="E")
    chat: bool = option(False, help="wrap the prompt in the chat template as one user turn")
    logit_lens: bool = option(False, help="also decode each emoji's log-prob after every layer")

    def validate(self) -> None:
        super().validate()
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

    lm = load_model(cfg)

    def one() -> list[dict[str, Any]]:
        rows = emoji_report(lm.model, lm.tokenizer, cfg.prompt, cfg.emojis, chat=cfg.chat)
        if cfg.logit_lens:
            for r in rows:
                r["logit_lens_logprob"] = logit_lens(lm.model, lm.tokenizer, [cfg.prompt], r["emoji"], chat=cfg.chat)[0].tolist()
        return rows

    out: dict[str, Any] = {"model": cfg.model, "adapter": cfg.adapter, "prompt": cfg.prompt, "chat": cfg.chat}
    if cfg.adapter is None:
        out["base"] = one()
    else:
        with adapter_disabled(lm.model):
            out["base"] = one()
        out["adapter_model"] = one()
    return out


def cmd_emoji_prob(cfg: EmojiProbConfig) -> None:
    print(json.dumps(emoji_prob(cfg), indent=2, ensure_ascii=False))


# --- shared by the stages ---------------------------------------------------------------------


@dataclass
class ProbeConfig(ModelConfig):
    adapters: str | None = option(None, help="folder with <trait>/adapter (default: OUT/train)", hash=False)
    traits: list[str] = option([], help="traits to analyse (default: all five)", flag="--trait")
    probes: str | None = option(None, help="probe suite YAML (default: prompts/probe_prompts.yaml)", hash=False)
    site: str = option(DEFAULT_SITE, help="hook site of the neurons (an MLP hook_post)")
    seed: int = option(0, help="seed for permutations, bootstrap and random neuron draws")
    n_boot: int = option(2000, help="bootstrap resamples for intervals")
    batch_size: int = option(16, help="sequences per forward pass", hash=False)
    out: str = option("results/main", help="run directory", hash=False)
    force: bool = option(False, help="recompute even if finished with the same config", hash=False)

    def validate(self) -> None:
        super().validate()
        from text2emoji.core.schema import TRAITS

        if bad := [t for t in self.traits if t not in TRAITS]:
            raise ConfigError(f"traits: unknown {', '.join(bad)}; valid: {', '.join(TRAITS)}")
        if self.adapter is not None:
            raise ConfigError("adapter: this command loads every trait's adapter from --adapters")
        if ".mlp.hook_post" not in self.site:
            raise ConfigError(f"site: neuron analyses read an MLP hook_post site, got {self.site!r}")

    def trait_list(self) -> list[str]:
        from text2emoji.core.schema import TRAITS

        return list(self.traits or TRAITS)

    def adapter_paths(self) -> dict[str, Path]:
        root = Path(self.adapters or Path(self.out) / "train")
        return {t: root / t / "adapter" for t in self.trait_list()}


def _stage_config(cfg: ProbeConfig, extra: dict[str, Path] | None = None) -> Any:
    """The stage's config: the command's fields plus the SHA-256 of every input file."""
    from interp.probes import SUITE_FILE
    from interp.prompts import prompts_dir

    suite = Path(cfg.probes) if cfg.probes else prompts_dir() / SUITE_FILE
    hashes = {t: file_hash(p / "adapter_model.safetensors") for t, p in cfg.adapter_paths().items()}
    hashes["probes"] = file_hash(suite)
    for name, p in (extra or {}).items():
        hashes[name] = file_hash(p)
    fields = asdict(cfg)
    fields["inputs"] = hashes
    return _STAGE_CLASSES[type(cfg)](**fields)


def _run_stage(cfg: ProbeConfig, name: str, body: Any, needs_neurons: bool = False) -> dict[str, Any]:
    """Stage ``OUT/name/``: reused when finished with the same config and inputs, else
    ``body(cfg, stage_dir)``; ablate and patch check their candidates before touching it."""
    extra = {}
    if needs_neurons:
        for t in cfg.trait_list():
            _candidates(cfg, t)  # type: ignore[arg-type]
        extra["neurons"] = Path(cfg.out) / "neurons" / "top_neurons.json"
    with open_stage(cfg.out, name, _stage_config(cfg, extra), force=cfg.force, seed=cfg.seed) as st:
        if not st.reused:
            body(cfg, st.dir)
        return st.read_json("summary.json")


def _load_peft(cfg: ProbeConfig) -> Any:
    from interp.behaviour.evaluate import load_adapters
    from interp.models import load_model

    lm = load_model(cfg)
    lm.model = load_adapters(lm.model, cfg.adapter_paths())
    return lm


def _suite(cfg: ProbeConfig) -> Any:
    from interp.probes import load_probe_suite

    return load_probe_suite(cfg.probes)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


# --- text2emoji neurons -----------------------------------------------------------------------


@dataclass
class NeuronsConfig(ProbeConfig):
    """``text2emoji neurons``: last-layer neuron activations pre/post PEFT on the probe suite."""

    k: int = option(20, help="top neurons listed per trait and ranking")
    n_perm: int = option(5000, help="sign-flip permutations per trait")
    backend: Literal["torch", "nnsight", "transformer-lens"] = option("torch", help="capture backend", hash=False)


def neurons(cfg: NeuronsConfig) -> dict[str, Any]:
    """Capture, diff, rank, selectivity, overlap and DLA; tables and figures in OUT/neurons/."""
    return _run_stage(cfg, "neurons", _neurons)


def _neurons(cfg: NeuronsConfig, out: Path) -> None:
    from interp.neuron_analysis import analyse_neurons
    from text2emoji import figures

    suite = _suite(cfg)
    traits = cfg.trait_list()
    lm = _load_peft(cfg)
    atomic_write_json(out / "prompts.json", [vars(p) for p in suite.prompts])
    prog = Progress("neurons: capture", 1 + len(traits))
    res = analyse_neurons(lm.model, lm.tokenizer, suite, traits, site=cfg.site, k=cfg.k, n_perm=cfg.n_perm,
                          n_boot=cfg.n_boot, seed=cfg.seed, batch_size=cfg.batch_size, backend=cfg.backend,
                          acts_dir=out / "activations", progress=lambda note: prog.step(note=note))
    files = res.to_dict()
    for name in ("top_neurons", "overlap", "dla", "selectivity", "summary"):
        atomic_write_json(out / f"{name}.json", files[name])
    md = []
    for t, tn in res.traits.items():
        _write_csv(out / f"top_neurons_{t}.csv", [{k: v for k, v in r.items() if k != "dla_post"} for r in tn.by_mean])
        md += [f"## {t}", "", f"{tn.n_fwer_05} of {tn.diff.mean.shape[0]} neurons change with family-wise p < 0.05 "
               f"(sign-flip permutation over {res.n_prompts} prompts, {cfg.n_perm} permutations).", "",
               "| rank | neuron | mean increase [95% CI] | d_z | p (FWER) | pre → post | emoji selectivity pre → post |",
               "|---:|---:|---|---:|---:|---|---|"]
        md += [f"| {r['rank']} | {r['neuron']} | {r['mean_increase']:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}] | "
               f"{r['effect_dz']:+.2f} | {r['p_fwer']:.3g} | {r['pre_mean']:+.3f} → {r['post_mean']:+.3f} | "
               f"{r['selectivity_pre']:+.2f} → {r['selectivity_post']:+.2f} |" for r in tn.by_mean[:10]]
        md.append("")
    header = [f"# Neurons ({cfg.site}) pre vs post PEFT", "",
              f"Model {cfg.model}; {res.n_prompts} probe prompts (prompts/probe_prompts.yaml), each "
              "read at its last token inside the chat template.", ""]
    jaccard = files["overlap"]["jaccard"]
    jac = ["## Overlap of the top neurons across traits (Jaccard)", "", "| | " + " | ".join(traits) + " |",
           "|---|" + "---:|" * len(traits)]
    jac += [f"| {a} | " + " | ".join(f"{jaccard[a][b]:.2f}" for b in traits) + " |" for a in traits]
    atomic_write_text(out / "neurons.md", "\n".join(header + md + jac) + "\n")
    figures.draw_neurons(out)


# --- text2emoji trace -------------------------------------------------------------------------


@dataclass
class TraceConfig(ProbeConfig):
    """``text2emoji trace``: each trait's emoji probability pre/post and its logit lens."""

    lens_emojis: int = option(1, help="how many of each trait's emojis the logit lens decodes (its first n; "
                              "each costs a vocabulary projection per layer and prompt)")

    def validate(self) -> None:
        super().validate()
        if self.lens_emojis < 1:
            raise ConfigError(f"lens_emojis: must be >= 1, got {self.lens_emojis}")


def trace(cfg: TraceConfig) -> dict[str, Any]:
    return _run_stage(cfg, "trace", _trace)


def _trace(cfg: TraceConfig, out: Path) -> None:
    from interp.trace_analysis import trace_emojis
    from text2emoji import figures

    suite = _suite(cfg)
    lm = _load_peft(cfg)
    traits = cfg.trait_list()
    texts = suite.texts
    prog = Progress("trace", len(traits) + 1)
    res = trace_emojis(lm.model, lm.tokenizer, suite, traits, lens_emojis=cfg.lens_emojis, batch_size=cfg.batch_size,
                       n_boot=cfg.n_boot, seed=cfg.seed, progress=lambda note: prog.step(note=note))
    summary = res.summary()
    atomic_write_json(out / "trace.json", res.to_dict())
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
    figures.draw_trace(out)


# --- text2emoji ablate / patch ----------------------------------------------------------------


@dataclass
class InterveneConfig(ProbeConfig):
    k: int = option(10, help="candidate neurons: the top k of the neurons stage")
    rank_by: Literal["mean", "effect"] = option("mean", help="which neurons-stage ranking gives the candidates")
    n_random: int = option(50, help="random neuron sets drawn for the control distribution")
    n_questions: int = option(16, help="held-out test questions per trait the effect is measured on (0 = all)")
    data: list[str] = option([], help="Opinion QA files; default: the bundled dataset", flag="--data", metavar="PATH")

    def validate(self) -> None:
        super().validate()
        if self.k < 1 or self.n_random < 0:
            raise ConfigError("k must be >= 1 and n_random >= 0")


@dataclass
class AblateConfig(InterveneConfig):
    """``text2emoji ablate``: zero- and mean-ablate each trait's top neurons in the post-PEFT
    model, against random sets of as many neurons."""

    modes: list[str] = option(["zero", "mean"], help="ablation modes: zero, mean", flag="--mode")
    generation: bool = option(True, help="also measure the emoji rate and ESR of generated answers")
    n_random_generation: int = option(1, help="random sets ablated during generation (costly)")
    n_generation_questions: int = option(8, help="questions answered intact and ablated (0 = all --n-questions)")
    max_new_tokens: int = option(48, help="tokens per generated answer")

    def validate(self) -> None:
        super().validate()
        if bad := [m for m in self.modes if m not in ("zero", "mean")]:
            raise ConfigError(f"modes: unknown {', '.join(bad)}; valid: zero, mean")


@dataclass
class PatchConfig(InterveneConfig):
    """``text2emoji patch``: patch each trait's top neurons' post-PEFT values into the base."""


def _questions(cfg: InterveneConfig) -> dict[str, list[str]]:
    """Each trait's first ``n_questions`` held-out test questions (by topic), from the run's
    dataset stage (reused, never forced from here)."""
    from dataclasses import replace

    from finetune.validate import load_rows
    from text2emoji.pipeline import stage_dataset

    dataset, _ = stage_dataset(replace(cfg, force=False))
    rows = load_rows([dataset])
    out = {}
    for trait in cfg.trait_list():
        tests = sorted((r for r in rows if r.trait == trait and r.split == "test"), key=lambda r: r.topic.lower())
        out[trait] = [r.question for r in tests[: cfg.n_questions or None]]
    return out


def _candidates(cfg: InterveneConfig, trait: str) -> list[int]:
    path = Path(cfg.out) / "neurons" / "top_neurons.json"
    if not path.is_file():
        raise UserError(f"{path} not found; run `text2emoji neurons --out {cfg.out}` first")
    tables = json.loads(path.read_text(encoding="utf-8"))
    if trait not in tables:
        raise UserError(f"{path} has no neurons for trait {trait}; run `text2emoji neurons --trait {trait}`")
    rows = tables[trait]["by_" + cfg.rank_by]
    if len(rows) < cfg.k:
        raise UserError(f"{path} lists {len(rows)} neurons for {trait}, fewer than --k {cfg.k}")
    return [r["neuron"] for r in rows[: cfg.k]]


def ablate(cfg: AblateConfig) -> dict[str, Any]:
    return _run_stage(cfg, "ablate", _ablate, needs_neurons=True)


def _ablate(cfg: AblateConfig, out: Path) -> None:
    from interp.behaviour.generation import DecodeSettings
    from interp.experiments import ablate_trait
    from interp.results import TraitAblation, summaries
    from text2emoji import figures

    suite = _suite(cfg)
    traits = cfg.trait_list()
    settings = DecodeSettings(max_new_tokens=cfg.max_new_tokens) if cfg.generation else None

    def one(model: Any, tok: Any, t: str, qs: list[str], cand: list[int]) -> dict[str, Any]:
        return ablate_trait(model, tok, qs, suite.trait_emojis[t], cand, modes=cfg.modes, n_random=cfg.n_random,
                            seed=cfg.seed, site=cfg.site, n_boot=cfg.n_boot, batch_size=cfg.batch_size,
                            generation=settings, n_random_generation=cfg.n_random_generation,
                            n_generation_questions=cfg.n_generation_questions).to_dict()

    # the file holds every trait done so far (an interrupted stage resumes): read back, typed
    results = {t: TraitAblation.from_dict(r) for t, r in _per_trait(cfg, out / "ablation.json", "ablate", one).items()}
    summary = summaries(results, traits)
    atomic_write_json(out / "summary.json", summary)
    lines = ["# Ablation of the top neurons vs random neurons", "",
             f"Post-PEFT model; change in log P(any of the trait's emojis) as the answer's first tokens, mean over "
             f"{cfg.n_questions or 'all'} held-out test questions; control: {cfg.n_random} random sets of k={cfg.k} "
             "last-layer neurons; p = share of random sets with an effect at least as negative.", "",
             "| trait | mode | Δ log P [95% CI] | random: mean [2.5%, 97.5%] | p |", "|---|---|---|---|---:|"]
    nan = float("nan")
    for t in traits:
        for mode in cfg.modes:
            e = results[t].modes[mode]
            d, rc = e.candidate_delta, e.random_control
            lines.append(f"| {t} | {mode} | {d.mean:+.3f} [{d.ci_lo:+.3f}, {d.ci_hi:+.3f}] | "
                         f"{rc.mean if rc else nan:+.3f} [{rc.p2_5 if rc else nan:+.3f}, {rc.p97_5 if rc else nan:+.3f}] | "
                         f"{rc.p_empirical if rc else nan:.3g} |")
    if cfg.generation:
        lines += ["", "Generated answers (greedy): emoji rate and ESR intact vs ablated.", "",
                  "| trait | emoji rate intact | ablated | ESR intact | ablated |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {t} | {_pct(summary[t]['generation']['emoji_rate_intact'])} | {_pct(summary[t]['generation']['emoji_rate_ablated'])} | "
                  f"{_pct(summary[t]['generation']['esr_intact'])} | {_pct(summary[t]['generation']['esr_ablated'])} |" for t in traits]
    atomic_write_text(out / "ablation.md", "\n".join(lines) + "\n")
    figures.draw_intervention(out, "ablation.json", "ablation")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _per_trait(cfg: InterveneConfig, path: Path, what: str, one: Any) -> dict[str, Any]:
    """``one(model, tokenizer, trait, questions, candidates)`` for each trait with the trait's
    adapter active; ``path`` is rewritten after every trait, and traits already in it are kept
    (an interrupted stage resumes)."""
    results = _read_partial(path)
    todo = [t for t in cfg.trait_list() if t not in results]
    if todo:
        lm = _load_peft(cfg)
        questions = _questions(cfg)
    prog = Progress(what, len(cfg.trait_list()))
    for t in cfg.trait_list():
        if t in todo:
            lm.model.set_adapter(t)
            results[t] = one(lm.model, lm.tokenizer, t, questions[t], _candidates(cfg, t))
            atomic_write_json(path, results)
        prog.step(note=t)
    return results


def _read_partial(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def patch(cfg: PatchConfig) -> dict[str, Any]:
    return _run_stage(cfg, "patch", _patch, needs_neurons=True)


def _patch(cfg: PatchConfig, out: Path) -> None:
    from dataclasses import replace

    from interp.experiments import patching_experiment
    from interp.results import PatchingResult, summaries
    from text2emoji import figures

    suite = _suite(cfg)
    traits = cfg.trait_list()

    def one(model: Any, tok: Any, t: str, qs: list[str], cand: list[int]) -> dict[str, Any]:
        r = patching_experiment(model, tok, qs, suite.trait_emojis[t], cand, n_random=cfg.n_random,
                                seed=cfg.seed, site=cfg.site, n_boot=cfg.n_boot, batch_size=cfg.batch_size)
        return replace(r, questions=qs).to_dict()

    results = {t: PatchingResult.from_dict(r) for t, r in _per_trait(cfg, out / "patching.json", "patch", one).items()}
    summary = summaries(results, [t for t in results if t in traits])
    atomic_write_json(out / "summary.json", summary)
    lines = ["# Patching post-PEFT neuron values into the base model", "",
             f"Base model with the top k={cfg.k} neurons set to their post-PEFT values at every position; change in "
             f"log P(any of the trait's emojis), mean over {cfg.n_questions or 'all'} held-out test questions; control: "
             f"{cfg.n_random} random sets; p = share of random sets with an effect at least as large.", "",
             "| trait | post − base | patched − base [95% CI] | share of the gap | random: mean | p |",
             "|---|---:|---|---:|---:|---:|"]
    for t in summary:
        r = results[t]
        rc, d = r.random_control, r.candidate_delta
        frac = "n/a" if r.fraction_recovered is None else f"{100 * r.fraction_recovered:.0f}%"
        lines.append(f"| {t} | {r.post_minus_base.mean:+.3f} | {d.mean:+.3f} [{d.ci_lo:+.3f}, {d.ci_hi:+.3f}] | {frac} | "
                     f"{None if rc is None else format(rc.mean, '+.3f')} | {None if rc is None else format(rc.p_empirical, '.3g')} |")
    atomic_write_text(out / "patching.md", "\n".join(lines) + "\n")
    figures.draw_intervention(out, "patching.json", "patching")


_STAGE_CLASSES: dict[type, type] = {}


def _stage_class(cls: type) -> type:
    """A dataclass extending ``cls`` with the ``inputs`` hash field (saved next to results)."""
    from dataclasses import make_dataclass

    stage = make_dataclass(cls.__name__.replace("Config", "StageConfig"),
                           [("inputs", dict[str, str] | None,
                             option(None, help="SHA-256 of the adapters, the probe suite and upstream results"))],
                           bases=(cls,))
    _STAGE_CLASSES[cls] = stage
    return stage


for _cls in (NeuronsConfig, TraceConfig, AblateConfig, PatchConfig):
    _stage_class(_cls)
