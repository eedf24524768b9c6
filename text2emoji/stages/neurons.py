"""Stage ``neurons``: last-layer neuron activations pre/post PEFT on the probe suite: ranked
diffs with cluster-bootstrap intervals and cluster sign-flip tests (per neuron, and family-wise
by max-|t|), a select/estimate split, emoji selectivity, overlap, DLA of the change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from interp.hooks import DEFAULT_SITE
from text2emoji.core.config import ConfigError, option
from text2emoji.core.files import atomic_path, atomic_write_json, atomic_write_text
from text2emoji.core.runs import Progress
from text2emoji.stages.base import RunConfig, Stage, print_json, read_json
from text2emoji.stages.probing import (
    REMOTE_HELP,
    ProbeConfig,
    check_remote_probe,
    load_suite,
    open_models,
    probe_inputs,
    write_csv,
)


@dataclass
class NeuronsConfig(ProbeConfig):
    """``text2emoji neurons``: last-layer neuron activations pre/post PEFT on the probe suite."""

    k: int = option(20, help="top neurons listed per trait and ranking", low=1)
    n_perm: int = option(5000, help="sign-flip permutations (of whole prompt clusters) per trait", low=1)
    backend: Literal["torch", "nnsight", "transformer-lens"] = option("torch", help="capture backend", hash=False)
    remote: bool = option(False, help=REMOTE_HELP + "; reads the last layer's neurons (the default --site)")

    def validate(self) -> None:
        super().validate()
        if self.remote and self.site != DEFAULT_SITE:
            raise ConfigError(f"site: --remote reads the last layer's neurons ({DEFAULT_SITE}), where the DLA of the "
                              f"change is computed; got {self.site!r}")
        if self.remote and self.backend == "transformer-lens":
            raise ConfigError("backend: --remote runs the nnsight backend, not --backend transformer-lens")
        check_remote_probe(self)


def _neurons(cfg: NeuronsConfig, out: Path) -> None:
    import numpy as np

    from interp.neuron_analysis import analyse_neurons

    suite = load_suite(cfg)
    traits = cfg.trait_list()
    model, tokenizer, patches = open_models(cfg)
    elsewhere: dict[str, Any] = {}
    if patches is not None:  # --remote
        from interp.remote_probe import dla_token_weights_nnsight, emoji_passes_nnsight

        def passes(adapter: str | None, emojis: list[str]) -> Any:
            return emoji_passes_nnsight(model, tokenizer, suite.texts, emojis, patches=patches[adapter] if adapter else (),
                                        batch_size=cfg.batch_size, remote=True)

        def token_weights(adapter: str, tokens: list[int]) -> Any:
            return dla_token_weights_nnsight(model, tokenizer, tokens, patches=patches[adapter], remote=True)

        elsewhere = {"passes": passes, "token_weights": token_weights}
    atomic_write_json(out / "prompts.json", [vars(p) for p in suite.prompts])
    prog = Progress("neurons: capture", 1 + len(traits))
    res = analyse_neurons(model, tokenizer, suite, traits, site=cfg.site, k=cfg.k, n_perm=cfg.n_perm,
                          n_boot=cfg.n_boot, seed=cfg.seed, batch_size=cfg.batch_size, backend=cfg.backend,
                          acts_dir=out / "activations", progress=lambda note: prog.step(note=note), **elsewhere)
    files = res.to_dict()
    for name in ("top_neurons", "overlap", "dla", "selectivity", "summary"):
        atomic_write_json(out / f"{name}.json", files[name])
    for t, tn in res.traits.items():  # every neuron's DLA of the change [d_mlp, emojis] (dla.json: the top rows)
        with atomic_path(out / f"dla_change_{t}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, tn.dla.change)
    md = []
    for t, tn in res.traits.items():
        write_csv(out / f"top_neurons_{t}.csv", [{k: v for k, v in r.items() if k != "dla_change"} for r in tn.by_mean])
        d = tn.diff
        md += [f"## {t}", "", f"{tn.n_fwer_05} of {d.mean.shape[0]} neurons change (two-sided) with family-wise p < 0.05 "
               f"(studentised max-|t| over the layer; signs flipped per cluster: {d.n_clusters} clusters of "
               f"{res.n_prompts} prompts, {cfg.n_perm} permutations, p floor {1 / (1 + cfg.n_perm):.2g}). Intervals: "
               "cluster bootstrap. This table ranks and estimates on the same prompts.", "",
               "| rank | neuron | mean increase [95% CI] | d_z | p (FWER) | pre → post | emoji selectivity pre → post |",
               "|---:|---:|---|---:|---:|---|---|"]
        md += [f"| {r['rank']} | {r['neuron']} | {r['mean_increase']:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}] | "
               f"{r['effect_dz']:+.2f} | {r['p_fwer']:.3g} | {r['pre_mean']:+.3f} → {r['post_mean']:+.3f} | "
               f"{r['selectivity_pre']:+.2f} → {r['selectivity_post']:+.2f} |" for r in tn.by_mean[:10]]
        hold = tn.by_mean_holdout
        md += ["", f"Selected on {hold[0]['n_clusters_select']} clusters, estimated on the other "
               f"{hold[0]['n_clusters_holdout']} (the held-out columns share no data with the selection):", "",
               "| rank | neuron | mean increase, selection half | held out [95% CI] | p held out | p held out, family-wise over the top k |",
               "|---:|---:|---:|---|---:|---:|"]
        md += [f"| {r['rank']} | {r['neuron']} | {r['mean_increase_select']:+.3f} | {r['mean_increase_holdout']:+.3f} "
               f"[{r['holdout_ci_lo']:+.3f}, {r['holdout_ci_hi']:+.3f}] | {r['p_holdout']:.3g} | "
               f"{r['p_holdout_fwer']:.3g} |" for r in hold[:10]]
        md.append("")
    header = [f"# Neurons ({cfg.site}) pre vs post PEFT", "",
              f"Model {cfg.model.model}; {res.n_prompts} probe prompts in {res.n_clusters} independent clusters "
              "(prompts/probe_prompts.yaml), each read at its last token inside the chat template. p and intervals "
              "are cluster-level.", ""]
    jaccard = files["overlap"]["jaccard"]
    jac = ["## Overlap of the top neurons across traits (Jaccard)", "", "| | " + " | ".join(traits) + " |",
           "|---|" + "---:|" * len(traits)]
    jac += [f"| {a} | " + " | ".join(f"{jaccard[a][b]:.2f}" for b in traits) + " |" for a in traits]
    atomic_write_text(out / "neurons.md", "\n".join(header + md + jac) + "\n")


def _metrics(stage_dir: Path) -> dict[str, Any]:
    s = read_json(stage_dir / "summary.json")
    if not s:
        return {}
    # .get: a summary written before a key existed reads as None, never a crash
    return {"neurons": {t: {k: v.get(k) for k in ("top_neuron", "top_mean_increase", "top_ci", "top_p_fwer", "top_p_fwer_holm",
                                              "n_neurons_fwer_05", "top_k_also_emoji_selective", "n_clusters",
                                              "holdout_top_neuron", "holdout_top_mean_increase", "holdout_top_ci",
                                              "n_holdout_ci_above_0")}
                        for t, v in s["traits"].items()}}


def _draw(stage_dir: Path) -> list[Path]:
    from text2emoji import figures

    return figures.draw_neurons(stage_dir)


def _from_run(run: RunConfig) -> NeuronsConfig:
    return NeuronsConfig(model=run.model, run_dir=run.run_dir, batch_size=run.batch_size, seed=run.seed)


NEURONS = Stage(
    name="neurons", config=NeuronsConfig, from_run=_from_run, compute=_neurons, inputs=probe_inputs,
    draw=_draw, metrics=_metrics, show=lambda cfg, d: print_json(read_json(d / "summary.json")),
    help="last-layer neurons pre/post PEFT on the probe suite: ranked diffs with cluster-bootstrap intervals and "
         "cluster sign-flip tests (max-|t| FWER), a select/estimate split, emoji selectivity, overlap, DLA of the "
         "change; tables, heatmaps",
    figures=(("neuron_heatmap.png", "Mean increase of the top last-layer neurons per trait"),
             ("emoji_selectivity.png", "Emoji selectivity vs increase after PEFT")),
)
