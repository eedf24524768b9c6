"""Stage ``neurons``: last-layer neuron activations pre/post PEFT on the probe suite: ranked
diffs with bootstrap intervals and permutation tests, emoji selectivity, overlap, DLA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from text2emoji.core.config import option
from text2emoji.core.files import atomic_write_json, atomic_write_text
from text2emoji.core.runs import Progress
from text2emoji.stages.base import RunConfig, Stage, print_json, read_json
from text2emoji.stages.probing import ProbeConfig, load_peft, load_suite, probe_inputs, write_csv


@dataclass
class NeuronsConfig(ProbeConfig):
    """``text2emoji neurons``: last-layer neuron activations pre/post PEFT on the probe suite."""

    k: int = option(20, help="top neurons listed per trait and ranking")
    n_perm: int = option(5000, help="sign-flip permutations per trait")
    backend: Literal["torch", "nnsight", "transformer-lens"] = option("torch", help="capture backend", hash=False)


def _neurons(cfg: NeuronsConfig, out: Path) -> None:
    from interp.capture import capture
    from interp.models import adapter_disabled
    from interp.neurons import emoji_selectivity, neuron_diff, neuron_token_dla, overlap, top_table
    from interp.tracing import emoji_token_ids

    suite = load_suite(cfg)
    traits = cfg.trait_list()
    lm = load_peft(cfg)
    model, tok = lm.model, lm.tokenizer
    atomic_write_json(out / "prompts.json", [vars(p) for p in suite.prompts])
    prog = Progress("neurons: capture", 1 + len(traits))
    acts_dir = out / "activations"

    def grab(name: str) -> np.ndarray:
        return np.asarray(capture(model, tok, suite.texts, site=cfg.site, chat=True, backend=cfg.backend,
                                  batch_size=cfg.batch_size, out=acts_dir / f"{name}.npy").activations)

    with adapter_disabled(model):
        pre = grab("pre")
    prog.step(note="pre")
    posts = {}
    for t in traits:
        model.set_adapter(t)
        posts[t] = grab(f"post_{t}")
        prog.step(note=t)
    pairs = suite.pairs()
    tables, summary, md = {}, {"traits": {}, "n_prompts": len(suite.prompts), "site": cfg.site}, []
    sel_pre = emoji_selectivity(pre, pairs)
    sel_posts = {t: emoji_selectivity(posts[t], pairs) for t in traits}
    increase = {}
    top_sets = {}
    dla_all = {}
    for t in traits:
        d = neuron_diff(pre, posts[t], n_perm=cfg.n_perm, seed=cfg.seed)
        by_mean = top_table(d, cfg.k, "mean", cfg.n_boot, cfg.seed)
        by_effect = top_table(d, cfg.k, "effect", cfg.n_boot, cfg.seed)
        sel_post = sel_posts[t]
        increase[t] = d.mean.tolist()
        idx = [r["neuron"] for r in by_mean]
        top_sets[t] = idx
        emojis = suite.trait_emojis[t]
        first_tokens = [emoji_token_ids(tok, e)[0] for e in emojis]
        model.set_adapter(t)
        w_post = neuron_token_dla(model, first_tokens).cpu().numpy()
        with adapter_disabled(model):
            w_pre = neuron_token_dla(model, first_tokens).cpu().numpy()
        for r in by_mean:
            n = r["neuron"]
            r["selectivity_pre"] = float(sel_pre.effect[n])
            r["selectivity_post"] = float(sel_post.effect[n])
            r["dla_post"] = {e: float(w_post[n, j]) for j, e in enumerate(emojis)}
        # does the layer's emoji selectivity concentrate in the neurons the adapter raised?
        sel_rank = set(sel_post.rank(cfg.k).tolist())
        dla_all[t] = {"emojis": emojis, "first_token_ids": first_tokens,
                      "top_neurons": idx,
                      "post": w_post[idx].tolist(), "pre": w_pre[idx].tolist(),
                      "layer_mean_abs_post": np.abs(w_post).mean(0).tolist()}
        tables[t] = {"by_mean": by_mean, "by_effect": by_effect}
        n_sig = int((d.p_fwer < 0.05).sum())
        summary["traits"][t] = {
            "top_neuron": by_mean[0]["neuron"], "top_mean_increase": by_mean[0]["mean_increase"],
            "top_ci": [by_mean[0]["ci_lo"], by_mean[0]["ci_hi"]], "top_p_fwer": by_mean[0]["p_fwer"],
            "n_neurons_fwer_05": n_sig, "n_neurons": int(d.mean.shape[0]),
            "mean_abs_change": float(np.abs(d.mean).mean()),
            "top_k_also_emoji_selective": len(sel_rank & set(idx)),
            "top_emoji_selective_post": [int(x) for x in sel_post.rank(cfg.k)],
        }
        write_csv(out / f"top_neurons_{t}.csv", [{k: v for k, v in r.items() if k != "dla_post"} for r in by_mean])
        md += [f"## {t}", "", f"{n_sig} of {d.mean.shape[0]} neurons change with family-wise p < 0.05 "
               f"(sign-flip permutation over {len(suite.prompts)} prompts, {cfg.n_perm} permutations).", "",
               "| rank | neuron | mean increase [95% CI] | d_z | p (FWER) | pre → post | emoji selectivity pre → post |",
               "|---:|---:|---|---:|---:|---|---|"]
        md += [f"| {r['rank']} | {r['neuron']} | {r['mean_increase']:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}] | "
               f"{r['effect_dz']:+.2f} | {r['p_fwer']:.3g} | {r['pre_mean']:+.3f} → {r['post_mean']:+.3f} | "
               f"{r['selectivity_pre']:+.2f} → {r['selectivity_post']:+.2f} |" for r in by_mean[:10]]
        md.append("")
    ov = overlap(top_sets)
    summary["overlap"] = ov
    atomic_write_json(out / "top_neurons.json", tables)
    atomic_write_json(out / "overlap.json", ov)
    atomic_write_json(out / "dla.json", dla_all)
    sel_rows = [{"neuron": int(n), "selectivity_pre_dz": float(sel_pre.effect[n]), "mean_diff_pre": float(sel_pre.mean[n])}
                for n in sel_pre.rank(cfg.k)]
    atomic_write_json(out / "selectivity.json", {
        "pairs": [[suite.prompts[e].id, suite.prompts[p].id] for e, p in pairs],
        "top_pre": sel_rows,
        "effect_pre": sel_pre.effect.tolist(),
        "effect_post": {t: sel_posts[t].effect.tolist() for t in traits},
        "mean_increase": increase,
    })
    atomic_write_json(out / "summary.json", summary)
    header = [f"# Neurons ({cfg.site}) pre vs post PEFT", "",
              f"Model {cfg.model.model}; {len(suite.prompts)} probe prompts (prompts/probe_prompts.yaml), each "
              "read at its last token inside the chat template.", ""]
    jac = ["## Overlap of the top neurons across traits (Jaccard)", "", "| | " + " | ".join(traits) + " |",
           "|---|" + "---:|" * len(traits)]
    jac += [f"| {a} | " + " | ".join(f"{ov['jaccard'][a][b]:.2f}" for b in traits) + " |" for a in traits]
    atomic_write_text(out / "neurons.md", "\n".join(header + md + jac) + "\n")


def _metrics(stage_dir: Path) -> dict[str, Any]:
    s = read_json(stage_dir / "summary.json")
    if not s:
        return {}
    return {"neurons": {t: {k: v[k] for k in ("top_neuron", "top_mean_increase", "top_ci", "top_p_fwer",
                                              "n_neurons_fwer_05", "top_k_also_emoji_selective")}
                        for t, v in s["traits"].items()}}


def _draw(stage_dir: Path) -> list[Path]:
    from text2emoji import figures

    return figures.draw_neurons(stage_dir)


def _from_run(run: RunConfig) -> NeuronsConfig:
    return NeuronsConfig(model=run.model, run_dir=run.run_dir, batch_size=run.batch_size, seed=run.seed)


NEURONS = Stage(
    name="neurons", config=NeuronsConfig, from_run=_from_run, compute=_neurons, inputs=probe_inputs,
    draw=_draw, metrics=_metrics, show=lambda d: print_json(read_json(d / "summary.json")),
    help="last-layer neurons pre/post PEFT on the probe suite: ranked diffs with bootstrap intervals and "
         "permutation tests, emoji selectivity, overlap, DLA; tables, heatmaps",
    figures=(("neuron_heatmap.png", "Mean increase of the top last-layer neurons per trait"),
             ("emoji_selectivity.png", "Emoji selectivity vs increase after PEFT")),
)
