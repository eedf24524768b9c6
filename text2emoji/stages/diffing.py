"""Stage ``diffing``: what each adapter changed, read without any emoji prompt.

Per adapter (every trait's, and the organisms' where that stage ran: the planted emoji is a
known answer the lens either shows or not):

* the **activation-difference lens** (:mod:`interp.difflens`): mean ``resid_post`` difference,
  adapter minus base, over the first K tokens of neutral texts (the bundled metric set's neutral
  rows; each text's first token, the attention sink, left out), every layer read through the
  final norm and the unembedding: its most promoted tokens and the rank of the trait's emojis;
* **per-token KL(base ‖ adapter)** (:mod:`interp.token_kl`) over the adapter's own answers to
  the held-out questions (``evaluate``'s PEFT answers; an organism's probe answers): where the
  adapter changes the next-token distribution most, and the KL before emoji tokens vs elsewhere.

Both are descriptive: no test, no p-value (the positions of one answer are not independent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2emoji.core.config import option
from text2emoji.core.files import atomic_path, atomic_write_json, atomic_write_text, file_hash
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import Progress
from text2emoji.stages.base import RunConfig, Stage, print_json, read_json
from text2emoji.stages.probing import ProbeConfig, probe_inputs

NEUTRAL = ("finetune", "data", "trait_metric", "metric_set.jsonl")


@dataclass
class DiffingConfig(ProbeConfig):
    """``text2emoji diffing``: the activation-difference lens and per-token KL of every trait's
    adapter (and the organisms' adapters, where that stage ran)."""

    preset: Preset = option("quick", help="quick or paper: the defaults of the fields left unset")
    n_texts: int | None = option(None, help="neutral texts the lens averages over, spread evenly through the 440 "
                                 "(0 = all; default: the preset's, quick 128, paper all)", low=0)
    n_answers: int | None = option(None, help="answers per adapter the per-token KL reads, the first n (0 = all; "
                                   "default: the preset's, quick 8, paper all)", low=0)
    first_k: int = option(5, help="tokens per neutral text that count (after its first token)", low=1)
    top: int = option(10, help="most promoted tokens kept per layer", low=1)
    organisms: bool = option(True, help="also read the organisms' adapters (OUT/organisms/*/train/adapter) where "
                             "they exist")


def neutral_texts(n: int = 0) -> list[str]:
    """The bundled metric set's neutral texts (no personality, topics outside the training data):
    all of them, or ``n`` spread evenly through the file (its styles come in runs)."""
    from importlib import resources

    path = resources.files(NEUTRAL[0]).joinpath(*NEUTRAL[1:])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [r["text"] for r in rows if r.get("pole") == "neutral"]
    if not n or n >= len(texts):
        return texts
    return [texts[i * len(texts) // n] for i in range(n)]


def _organism_adapters(out: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each organism with a trained adapter and a probe result: name -> (adapter, result)."""
    found = {}
    for d in sorted((out / "organisms").glob("*/train/adapter")):
        result = read_json(d.parent.parent / "result.json")
        if (d / "adapter_model.safetensors").is_file() and result:
            found[d.parent.parent.name] = (d, result)
    return found


def _peft_answers(out: Path, trait: str) -> list[tuple[str, str]]:
    """``evaluate``'s PEFT answers for ``trait``: (question, answer)."""
    path = out / "evaluate" / "generations.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["question"], r["text"]) for r in rows if r["trait"] == trait and r["method"] == "peft"]


def _one(cfg: DiffingConfig, model: Any, tok: Any, adapter: Path, emojis: dict[str, str | None],
         answers: list[tuple[str, str]], texts: list[str], base_cache: dict) -> tuple[Any, dict[str, Any]]:
    """The lens and KL of one adapter (the model's active one): (diff vectors, results).
    ``base_cache``: the base model's passes over ``texts``, shared by every adapter."""
    from interp.difflens import diff_vectors, lens
    from interp.models import adapter_disabled
    from interp.token_kl import kl_summary, token_kl

    vectors = diff_vectors(model, tok, texts, cfg.first_k, cfg.batch_size, base_cache=base_cache)
    answers = answers[: cfg.n_answers or None]
    with adapter_disabled(model):  # the base model's final norm and unembedding read the differences
        res = lens(model, tok, vectors, top=cfg.top, emojis=emojis)
    layers = [{"layer": la.layer, "norm": la.norm, "top": [t["text"] for t in la.top],
               "emojis": {r.emoji: {"rank": r.rank, "space_rank": r.space_rank, "token": r.token} for r in la.emojis}}
              for la in res.layers]
    out: dict[str, Any] = {"adapter": str(adapter), "lens": layers, "vocab_size": res.vocab_size}
    if answers:
        kl = token_kl(model, tok, [q for q, _ in answers], [a for _, a in answers], batch_size=cfg.batch_size)
        s = kl_summary(kl, tok, top_n=10).to_dict()
        # where the answers' first emoji tokens stand among all positions' KL (share of positions
        # with a KL at least as large, per emoji position): descriptive
        import numpy as np

        flat = np.concatenate(kl.kl) if kl.kl else np.zeros(0)
        flags = np.concatenate(kl.before_emoji).astype(bool) if kl.kl else np.zeros(0, dtype=bool)
        s["before_emoji_kl_percentile"] = ([float((flat < k).mean()) for k in flat[flags]] if flags.any() else [])
        out["kl"] = s
    else:
        out["kl"] = None
    return vectors, out


def _diffing(cfg: DiffingConfig, stage_dir: Path) -> None:
    import numpy as np

    from interp.behaviour.evaluate import load_adapters
    from interp.models import load_model
    from interp.probes import load_probe_suite

    out = Path(cfg.run_dir.out)
    suite = load_probe_suite(cfg.probes)
    texts = neutral_texts(cfg.n_texts or 0)
    jobs: list[tuple[str, Path, dict[str, str | None], list[tuple[str, str]], str]] = [
        (t, p, dict.fromkeys(suite.trait_emojis[t], t), _peft_answers(out, t), "evaluate's PEFT answers")
        for t, p in cfg.adapter_paths().items()]
    if cfg.organisms:
        for name, (path, result) in _organism_adapters(out).items():
            trait = result.get("trait")
            emojis = dict.fromkeys(suite.trait_emojis.get(trait, []), trait)
            if result.get("planted_emoji"):
                emojis = {result["planted_emoji"]: "planted", **emojis}
            answers = [(a["question"], a["peft"]) for a in result.get("answers", [])]
            jobs.append((f"organism:{name}", path, emojis, answers, "the organism probe's answers"))
    prog = Progress("diffing", len(jobs))
    lm = load_model(cfg.model)  # one base, every adapter on it by name
    # PEFT adapter names may not hold "." (organisms are named planted-0.02): a0, a1, ... by position
    model = load_adapters(lm.model, {f"a{i}": path for i, (_, path, *_) in enumerate(jobs)})
    results: dict[str, Any] = {}
    base_cache: dict = {}
    for i, (name, path, emojis, answers, source) in enumerate(jobs):
        safe = name.replace(":", "-")
        model.set_adapter(f"a{i}")
        vectors, res = _one(cfg, model, lm.tokenizer, path, emojis, answers, texts, base_cache)
        with atomic_path(stage_dir / "vectors" / f"{safe}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, vectors)
        results[name] = {**res, "answers_from": source, "vectors": f"vectors/{safe}.npy"}
        prog.step(note=name)
    atomic_write_json(stage_dir / "diffing.json", {
        "texts": "/".join(NEUTRAL) + " (pole: neutral)", "n_texts": len(texts), "n_answers": cfg.n_answers or None,
        "first_k": cfg.first_k,
        "skip_first": True, "site": "blocks.{L}.hook_resid_post", "difference": "adapter minus base",
        "adapters": results})
    atomic_write_text(stage_dir / "diffing.md", "\n".join(table_lines(summary(results))) + "\n")


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per adapter: the layer where the difference is largest, its top tokens, the best rank any of
    the adapter's emojis reaches in any layer (and where), and the KL summary's headline."""
    out = {}
    for name, r in results.items():
        lens = r["lens"]
        peak = max(lens, key=lambda la: la["norm"])
        best = None
        for la in lens:
            for e, v in la["emojis"].items():
                rank = min(v["rank"], v["space_rank"])
                if best is None or rank < best["rank"]:
                    best = {"emoji": e, "rank": rank, "layer": la["layer"]}
        kl = r.get("kl") or {}
        out[name] = {"peak_layer": peak["layer"], "peak_norm": peak["norm"], "last_layer_top": lens[-1]["top"][:8],
                     "best_emoji_rank": best, "vocab_size": r["vocab_size"],
                     "mean_kl": kl.get("mean_kl"), "n_answers": kl.get("n_answers"),
                     "kl_before_emoji": (kl.get("before_emoji") or {}).get("mean_kl"),
                     "n_before_emoji": (kl.get("before_emoji") or {}).get("n", 0),
                     "kl_other": (kl.get("other") or {}).get("mean_kl"),
                     "top_kl_tokens": [t["token"] for t in (kl.get("top") or [])[:5]],
                     "kl_by_position": (kl.get("mean_kl_by_position") or [])[:12]}
    return out


def table_lines(s: dict[str, Any]) -> list[str]:
    """The stage's table (markdown lines), as ``diffing.md`` and the report show it."""
    def f(v: float | None, fmt: str = ".3f") -> str:
        return "–" if v is None else format(v, fmt)

    lines = ["| adapter | largest difference (layer, norm) | last layer promotes | best emoji rank (layer) | "
             "mean KL per token | KL before an emoji token (n) | KL elsewhere | largest-KL tokens |",
             "|---|---|---|---|---:|---|---:|---|"]
    for name, r in s.items():
        b = r["best_emoji_rank"]
        best = "–" if not b else f"{b['emoji']} {b['rank']:,} of {r['vocab_size']:,} (L{b['layer']})"
        top = ", ".join(repr(t) for t in r["last_layer_top"][:6]).replace("|", "\\|")
        kl_tokens = ", ".join(repr(t) for t in r["top_kl_tokens"]).replace("|", "\\|")
        lines.append(f"| {name} | L{r['peak_layer']}, {r['peak_norm']:.1f} | {top} | {best} | {f(r['mean_kl'])} | "
                     f"{f(r['kl_before_emoji'])} ({r['n_before_emoji']}) | {f(r['kl_other'])} | {kl_tokens or '–'} |")
    return lines


def _inputs(cfg: DiffingConfig) -> dict[str, str]:
    """The adapters and the answers the KL reads (evaluate's generations, the organisms' results)."""
    from importlib import resources

    out = Path(cfg.run_dir.out)
    hashes = probe_inputs(cfg)
    hashes["texts"] = file_hash(Path(str(resources.files(NEUTRAL[0]).joinpath(*NEUTRAL[1:]))))
    gens = out / "evaluate" / "generations.jsonl"
    if gens.is_file():
        hashes["evaluate"] = file_hash(gens)
    if cfg.organisms:
        for name, (path, _) in _organism_adapters(out).items():
            hashes[f"organism:{name}"] = file_hash(path / "adapter_model.safetensors", path.parent.parent / "result.json")
    return hashes


def _draw(stage_dir: Path) -> list[Path]:
    from text2emoji import figures

    d = read_json(stage_dir / "diffing.json")
    return figures.diffing(d, stage_dir) if d else []


def _metrics(stage_dir: Path) -> dict[str, Any]:
    d = read_json(stage_dir / "diffing.json")
    return ({"diffing": summary(d["adapters"]), "diffing_texts": d["n_texts"], "diffing_answers": d.get("n_answers")}
            if d else {})


def _from_run(run: RunConfig) -> DiffingConfig:
    return DiffingConfig(model=run.model, run_dir=run.run_dir, seed=run.seed, batch_size=run.batch_size,
                         preset=run.preset)


DIFFING = Stage(
    name="diffing", config=DiffingConfig, from_run=_from_run, compute=_diffing, inputs=_inputs, draw=_draw,
    resolve=lambda cfg: fill_preset(cfg, "diffing"),
    metrics=_metrics, show=lambda cfg, d: print_json(_metrics(d).get("diffing")),
    help="activation-difference lens (what each adapter adds on neutral text, read through the unembedding) and "
         "per-token KL(base || adapter) over its answers, for every trait's adapter and the organisms'",
    figures=(("diffing.png", "What each adapter changed: difference norm per layer, best emoji rank, KL per answer "
              "position"),),
)
