"""The run's report: each claim of the study beside what this run measured.

``write_report(out)`` reads only the stages' results files under ``out`` and writes
``report.md``, a self-contained ``report.html`` (figures embedded as PNG data) and
``metrics.json`` (every headline number). A stage that has not run is reported as missing.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from text2emoji.core.files import atomic_write_json, atomic_write_text
from text2emoji.stages.base import pct, pval, read_json, share

# The study's claims (Jain et al., 2025), in its own terms, each with the section that tests it.
CLAIMS = {
    "emoji": "After QLoRA fine-tuning on emoji-free Opinion QA answers, the models use emojis: "
             "LLaMA-2-7B-chat in 99.5% of extraversion test answers, Mistral-7B-Instruct in 92.5% of "
             "openness answers.",
    "alignment": "PEFT manipulates personality more reliably than in-context prompting (trait "
                 "alignment of the answers).",
    "icl": "The emojis are intentional: asked for the five tokens that best represent the trait of "
           "a text, the fine-tuned model names trait-fitting emojis.",
    "neurons": "The emojis trace to last-layer neurons whose activation rises after fine-tuning.",
    "causal": "Not in the study (ours): if those neurons carry the emoji behaviour, ablating them "
              "should change the emoji probability more than ablating random neurons of the same "
              "activation size, and patching their post-PEFT values into the base model should move "
              "it toward the post-PEFT model (and the base values into the post-PEFT model, back).",
    "lens": "Not in the study (ours): where in depth the emoji probability changes (logit lens).",
}


def _ci(d: dict[str, Any], fmt: str = "+.3f") -> str:
    return f"{format(d['mean'], fmt)} [{format(d['ci_lo'], fmt)}, {format(d['ci_hi'], fmt)}]"


def collect(out: Path) -> dict[str, Any]:
    """Every headline number of the run, from its results files (None where a stage is missing):
    each stage's own ``metrics`` from its directory."""
    from text2emoji.stages.registry import STAGES

    m: dict[str, Any] = {"out": str(out)}
    for stage in STAGES:
        m.update(stage.metrics(out / stage.name))
    return m


def _figures() -> dict[str, str]:
    """Every figure the report may show: path under the run directory -> caption."""
    from text2emoji.stages.registry import STAGES

    return {f"{s.name}/{name}": caption for s in STAGES for name, caption in s.figures}


def _header(out: Path, m: dict[str, Any]) -> list[str]:
    """The title and the model."""
    L: list[str] = [f"# text2emoji report: {out}", ""]
    if m.get("model"):
        md = m["model"]
        L += [f"Model: {md['name']} ({md['architecture']}, {md['n_layers']} layers, {md['d_mlp']} neurons per MLP), "
              f"{md['dtype']} on {md['device']}.", ""]
    return L


def _trait_order(rows: dict[str, Any]) -> list[str]:
    """``trait/method`` keys grouped by trait in the order they first appear, methods as given."""
    traits = list(dict.fromkeys(k.split("/")[0] for k in rows))
    return [k for t in traits for k in rows if k.split("/")[0] == t]


def _emoji_use(out: Path, m: dict[str, Any]) -> list[str]:
    """1. Emoji use after PEFT (with training and dataset facts)."""
    L: list[str] = []
    L += ["## 1. Emoji use after PEFT", "", f"**The study:** {CLAIMS['emoji']}", "", "**This run:**", ""]
    if m.get("emoji_table"):
        L += ["| trait / method | answers | emoji rate [95% CI] | ESR [95% CI] | top emojis |", "|---|---:|---|---|---|"]
        rows = {**m["emoji_table"], **(m.get("steer_emoji_table") or {})}  # steer: section 7
        for k in _trait_order(rows):
            r = rows[k]
            L.append(f"| {k} | {r['n_answers']} | {pct(r['emoji_rate'])} [{pct(r['emoji_rate_ci'][0])}, {pct(r['emoji_rate_ci'][1])}] | "
                     f"{pct(r['esr'])} [{pct(r['esr_ci'][0])}, {pct(r['esr_ci'][1])}] | {r['top_emojis'] or '–'} |")
        peft = [r["emoji_rate"] or 0 for k, r in m["emoji_table"].items() if k.endswith("/peft")]
        L += ["", f"Largest PEFT emoji rate: {pct(max(peft) if peft else None)}.", ""]
    else:
        L += ["(evaluate stage missing)", ""]
    if m.get("train"):
        L += ["QLoRA per trait: " + "; ".join(
            f"{t} {v['steps']} steps, held-out loss {v['first_held_out_loss']:.2f} → {v['final_held_out_loss']:.2f}"
            for t, v in m["train"].items() if v.get("first_held_out_loss") is not None) + ".", ""]
    if m.get("quality"):
        q = m["quality"]
        L += [f"Dataset: trait classifier test accuracy {pct(q['classifier_test_accuracy'])}, near-duplicate rate "
              f"{pct(q['near_duplicate_rate'])}; the training answers hold no emojis (validated).", ""]
    L += _fig_refs(out, ["quality/wordclouds.png", "train/loss_curves.png", "evaluate/emoji_rates.png"])
    return L


def _alignment(out: Path, m: dict[str, Any]) -> list[str]:
    """2. Trait alignment: PEFT vs in-context vs base."""
    L: list[str] = []
    L += ["## 2. PEFT vs in-context vs base: trait alignment", "", f"**The study:** {CLAIMS['alignment']}", "", "**This run:**", ""]
    if m.get("trait_alignment"):
        traits = sorted({k.split("/")[0] for k in m["trait_alignment"]})
        steer = m.get("steer_alignment") or {}
        methods = ["base", "incontext", "peft"] + (["steer"] if steer else [])
        ta = {**m["trait_alignment"], **{k: v["trait_alignment"] for k, v in steer.items()}}
        ci = {**(m.get("trait_alignment_ci") or {}), **{k: v.get("ci") for k, v in steer.items()}}
        mc = {**(m.get("trait_alignment_mcnemar") or {}),
              **{f"{t}/peft_vs_steer": v for t, v in (m.get("steer_vs_peft") or {}).items()}}
        others = ("incontext", "base") + (("steer",) if m.get("steer_vs_peft") else ())

        def cell(key: str) -> str:
            v, c = ta.get(key), ci.get(key)
            if v is None:
                return "–"
            return pct(v) + (f" [{pct(c[0])}, {pct(c[1])}]" if c else "")

        def test(key: str) -> str:
            r = mc.get(key) or {}
            d, c = r.get("diff"), r.get("diff_ci") or []
            change = (f"{100 * d:+.0f} pts [{100 * c[0]:+.0f}, {100 * c[1]:+.0f}], " if d is not None and c else "")
            if not r:
                return "–"
            return f"{change}p {_fmt(r.get('p'), '.3g')} ({_fmt(r.get('p_holm'), '.3g')})"

        from interp.behaviour.trait_metric import describe

        metric = m.get("trait_metric") or "embedding"
        how = (f"The metric is {describe(metric)}." if metric.startswith("hf:") else
               f"The metric ({describe(metric)}) is fitted on "
               "the independent metric set (`finetune/data/trait_metric/`), never on the adapters' training answers, "
               "and may answer 'none' (low-pole and neutral texts).")
        L += ["Share of answers the trait metric assigns to the target trait [95% Wilson interval]. " + how + " PEFT vs each method on the same questions: the change in points "
              "[95% Newcombe interval for paired proportions], exact McNemar p, raw (Holm-adjusted over traits × "
              "comparisons).", "",
              "| trait | " + " | ".join(methods) + " | "
              + " | ".join(f"p PEFT vs {b.replace('incontext', 'in-context')}" for b in others) + " |",
              "|---|" + "---:|" * (len(methods) + len(others))]
        L += [f"| {t} | " + " | ".join(cell(f"{t}/{x}") for x in methods) + " | "
              + " | ".join(test(f"{t}/peft_vs_{b}") for b in others) + " |" for t in traits]
        if steer:
            L += ["", "steer: the base model steered with a trait vector (section 7), on the traits the steering stage "
                  "ran on (–: not steered); its comparison with PEFT is Holm-adjusted over those traits."]
        L.append("")
        pred = m.get("trait_alignment_predicted") or {}
        if any(f"{t}/peft" in pred for t in traits):
            labels = list(next(v for k, v in pred.items() if k.endswith("/peft")))
            L += ["What the metric called the PEFT answers (rows: the adapter's trait; columns: the label):", "",
                  "| adapter | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
            L += [f"| {t} | " + " | ".join(str(pred[f"{t}/peft"].get(c, 0)) for c in labels) + " |"
                  for t in traits if f"{t}/peft" in pred]
            L.append("")
    pae = (m.get("pae") or {}).get("by_trait_method") or {}
    if pae:
        traits = sorted({k.split("/")[0] for k in pae})
        methods = [x for x in ("base", "incontext", "peft") if any(f"{t}/{x}" in pae for t in traits)]

        def rating(key: str) -> str:
            r = pae.get(key) or {}
            if r.get("mean") is None:
                return "n/a"
            ci = r.get("ci") or [None, None]
            return (f"{r['mean']:.2f} [{_fmt(ci[0], '.2f')}, {_fmt(ci[1], '.2f')}]"
                    + (f" ({r['n_unrated']} unrated)" if r.get("n_unrated") else ""))

        L += [f"PAE: the judge {m['pae'].get('judge')} rates how strongly each answer expresses its trait, from 1 (not "
              "at all) to 5 (very strongly); mean [95% bootstrap interval over answers].", "",
              "| trait | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
        L += [f"| {t} | " + " | ".join(rating(f"{t}/{x}") for x in methods) + " |" for t in traits]
        L.append("")
    L += _fig_refs(out, ["evaluate/word_contributions.png"])
    return L


def _icl(out: Path, m: dict[str, Any]) -> list[str]:
    """3. ICL explainability."""
    L: list[str] = []
    L += ["## 3. ICL explainability", "", f"**The study:** {CLAIMS['icl']}", "", "**This run** (emoji tokens among the "
          "tokens named, pre = base, post = adapter):", ""]
    if m.get("icl_emoji_tokens"):
        L += ["| trait | pre | post |", "|---|---:|---:|"]
        L += [f"| {t} | {v['pre']} | {v['post']} |" for t, v in m["icl_emoji_tokens"].items()]
        L.append("")
    L += _fig_refs(out, ["evaluate/icl_tokens.png"])
    return L


def _organisms(out: Path, m: dict[str, Any]) -> list[str]:
    """Known-answer organisms: could this run have seen an emoji mechanism?"""
    from text2emoji.stages.organisms import table_lines

    o = m.get("organisms")
    if not o:
        return []
    L = ["## Can this run detect the effect? Known-answer organisms", "",
         "Not in the study (ours). Before reading the mechanistic results below: adapters whose answer is known by "
         f"construction, on the {o['trait']} rows, beside the study's {o['trait']} adapter, all measured by the same "
         f"tests on the same held-out questions. {o['design']} Seven tests per adapter, each two-sided, Holm-adjusted "
         "within the adapter (so a null adapter is flagged by any of them with probability at most 0.05): the emoji "
         "rate of generated answers, base vs PEFT (exact McNemar, paired by question); log P(trait emoji) as the "
         "answer's first tokens, post − base (Wilcoxon signed-rank); zero-ablating its top neurons (the study's "
         "ranking: mean increase on the probe suite) against size-matched random sets (log P) and intact vs ablated "
         "(the emoji rate, exact McNemar); patching them forward and in reverse against size-matched random sets; "
         "and **attribution**: the adapter's emoji neurons in every layer, found by attribution patching (the "
         "neuron's change under the adapter times the gradient of log P(the answer opens with an emoji)) on the "
         "trait's train questions, then set back to their base values at the answer's start on the held-out "
         "questions: the share of answers whose greedy first token opens an emoji, against random sets of as many "
         "neurons in the same layers matched on the size of their change (sequential, up to the run's random "
         "sets), tested only where the adapter raised that share over the base (exact McNemar; the test's p is "
         "the larger of the two, an intersection-union test). Beside it, not tested: answers generated so (their emoji rate, exact McNemar) and the change in "
         "log P, which selection by attribution lowers more than random sets in any adapter that moves it at all. "
         "A test *flags* the adapter when its Holm p < 0.05 and the effect goes the way an emoji mechanism would "
         "push it. The neurons column is context, not a test of emojis: any fine-tune moves many last-layer "
         "neurons.", ""]
    L += table_lines(o) + [""]
    verdicts = []
    for label, r in (("Study adapter", o.get("study")), ("Positive control", o.get("positive")),
                     ("Positive control at the answer's end", o.get("positive_end")),
                     ("Negative control", o.get("negative"))):
        if r and r.get("detected") is not None:
            on = [k for k, v in r["detected"].items() if v]
            verdicts.append(f"{label}: flagged by {', '.join(on) or 'no test'}.")
    if verdicts:
        L += [" ".join(verdicts), ""]
    att = {label: set((r.get("attribution") or {}).get("neurons") or [])
           for label, r in (("study", o.get("study")), ("positive", o.get("positive")), ("negative", o.get("negative")))
           if r and r.get("attribution")}
    if "positive" in att:
        pos_t = o["positive"]["attribution"]
        line = (f"The positive control's {pos_t['k']} attribution neurons: {', '.join(pos_t['neurons'])} "
                f"(found on {pos_t['n_select']} train questions).")
        if pos_t.get("kept_in_every_set"):
            line += (f" {len(pos_t['kept_in_every_set'])} of them ({', '.join(pos_t['kept_in_every_set'])}) are so large "
                     "in their layer that no random set can match them: every random set holds them too, so the test "
                     "is of the others.")
        for other in ("study", "negative"):
            if other in att:
                shared = sorted(att["positive"] & att[other])
                line += f" Shared with the {other} adapter's: {len(shared)}{' (' + ', '.join(shared) + ')' if shared else ''}."
        L += [line, ""]
    if o.get("detection_limit"):
        L += ["Detection limit (the smallest planted fraction from which each test flags the positive control at "
              "every larger fraction tested; n/a: not even at the largest): " + "; ".join(
                  f"{k} {pct(v)}" for k, v in o["detection_limit"].items()) + ".", ""]
    c = o.get("comparison")
    if c and c.get("traits"):
        n = next(iter(c["traits"].values()))["n_neurons"]
        L += [f"The positive control's top {c['k']} neurons ({', '.join(map(str, c['neurons']))}) under each study "
              f"adapter, on the probe suite: how many are among that adapter's own top {c['k']}, their mean increase "
              f"and their median rank by increase among the layer's {n} neurons (1 = largest).", "",
              "| study adapter | shared top neurons | control neurons' mean increase | median rank | layer mean abs. increase |",
              "|---|---:|---:|---:|---:|"]
        for t, v in c["traits"].items():
            inc = sum(v["mean_increase"]) / len(v["mean_increase"])
            rank = sorted(v["rank"])[len(v["rank"]) // 2]
            L.append(f"| {t} | {v['n_overlap']} {v['overlap'] or ''} | {inc:+.3f} | {rank} | {v['layer_mean_abs_increase']:.3f} |")
        L.append("")
        if c.get("negative_overlap") is not None:
            L += [f"The negative control (no emoji) ranks {len(c['negative_overlap'])} of the same {c['k']} neurons among "
                  "its own top: what this ranking finds first is what any fine-tune on these answers raises.", ""]
    L += _fig_refs(out, ["organisms/organisms.png"])
    return L


def _neurons(out: Path, m: dict[str, Any]) -> list[str]:
    """4. Last-layer neurons and the emoji probability."""
    L: list[str] = []
    L += ["## 4. Last-layer neurons", "", f"**The study:** {CLAIMS['neurons']}", "", "**This run:**", ""]
    if m.get("neurons"):
        clusters = sorted({v.get("n_clusters") for v in m["neurons"].values()} - {None})
        L += [f"Per trait, the last-layer neurons whose activation changes after fine-tuning (two-sided), over "
              f"{'/'.join(map(str, clusters)) or 'the'} independent clusters of probe prompts: p is cluster-level (whole "
              "clusters' signs flipped), the family-wise p (FWER) the studentised max-|t| over the layer, intervals a "
              "cluster bootstrap. The top neuron and its interval share data with its selection; the held-out column "
              "selects on half of the clusters and estimates on the other half.", "",
              "| trait | top neuron | mean increase [95% CI] | p (FWER) | p (FWER, Holm over traits) | neurons that "
              "change, FWER p < 0.05 | held out: top neuron, increase [95% CI] | top-20 also emoji-selective |",
              "|---|---:|---|---:|---:|---:|---|---:|"]
        L += [f"| {t} | {v['top_neuron']} | {v['top_mean_increase']:+.2f} [{v['top_ci'][0]:+.2f}, {v['top_ci'][1]:+.2f}] | "
              f"{v['top_p_fwer']:.3g} | {pval(v.get('top_p_fwer_holm'))} | {v['n_neurons_fwer_05']} | {_holdout(v)} | {v['top_k_also_emoji_selective']} |"
              for t, v in m["neurons"].items()]
        L.append("")
    if m.get("trace"):
        clusters = sorted({s.get("n_clusters") for s in m["trace"].values()} - {None})
        L += ["Emoji probability as the answer's first tokens on the probe prompts, pre → post (mean log P of any of "
              "the trait's emojis, change with a 95% cluster-bootstrap interval and a two-sided cluster sign-flip p, "
              f"over {'/'.join(map(str, clusters)) or 'the'} clusters):", "",
              "| trait | emojis | pre | post | change [95% CI] | p | p (Holm over traits) |", "|---|---|---:|---:|---|---:|---:|"]
        L += [f"| {t} | {' '.join(s['emojis'])} | {s['mean_logprob_any_pre']:.2f} | {s['mean_logprob_any_post']:.2f} | "
              f"{s['mean_change']:+.2f} [{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}] | {pval(s.get('p'))} | {pval(s.get('p_holm'))} |"
              for t, s in m["trace"].items()]
        L.append("")
    L += _fig_refs(out, ["neurons/neuron_heatmap.png", "neurons/emoji_selectivity.png", "trace/emoji_prob.png"])
    return L


def _holdout(v: dict[str, Any]) -> str:
    """The selected-on-half, estimated-on-the-other-half top neuron (— for results without it)."""
    if v.get("holdout_top_neuron") is None:
        return "—"
    lo, hi = v["holdout_top_ci"]
    return f"{v['holdout_top_neuron']}: {v['holdout_top_mean_increase']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _causal(out: Path, m: dict[str, Any]) -> list[str]:
    """5. Ablation and patching against random neurons."""
    L: list[str] = []
    L += ["## 5. Ablation and patching against random neurons", "", f"**{CLAIMS['causal']}**", "", "**This run:**", ""]
    if m.get("ablate"):
        first = next((v[mode] for v in m["ablate"].values() for mode in ("zero", "mean") if mode in v), {})
        L += [f"Ablation: random sets stratified on activation size, each member from its candidate's stratum (up to "
              f"{first.get('n_random_max', first.get('n_random'))} sets, drawn until 10 are as extreme in each tail; "
              f"smallest attainable p {_fmt(first.get('p_floor'), '.3g')}); p two-sided; Holm over traits × modes. "
              "The placebo (the k neurons of largest activation size as matched on, chosen without looking at "
              "emojis) is tested the same way and should come out null.", "",
              "| trait | ablation | Δ log P(trait emoji) [95% CI] | matched random: mean | p | p (Holm) | placebo Δ | placebo p |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
        for t, v in m["ablate"].items():
            for mode in ("zero", "mean"):
                if mode in v:
                    e, pl = v[mode], v[mode].get("placebo") or {}
                    L.append(f"| {t} | {mode} | {_ci(e['delta'])} | {_fmt(e['random_mean'])} | {_fmt(e.get('p'), '.3g')} | "
                             f"{_fmt(e.get('p_holm'), '.3g')} | {_fmt(pl.get('delta', {}).get('mean'))} | {_fmt(pl.get('p'), '.3g')} |")
        alone: dict[int, list[tuple[float, float]]] = {}
        for v in m["ablate"].values():
            for mode in ("zero", "mean"):
                for e in ((v.get(mode) or {}).get("excluded") or []) + (((v.get(mode) or {}).get("placebo") or {}).get("excluded") or []):
                    alone.setdefault(e["neuron"], []).append((e["size"], e["delta"]))
        if alone:
            L += ["", "Neurons without size peers (no random set can match them) are left out of the set tests and "
                  "ablated alone (across traits and modes, as candidates or placebo members): " + "; ".join(
                      f"neuron {n}: size {min(x for x, _ in r):.3g}–{max(x for x, _ in r):.3g}, Δ {min(d for _, d in r):+.2f} "
                      f"to {max(d for _, d in r):+.2f}" for n, r in sorted(alone.items())) + "."]
        gen = {t: v["generation"] for t, v in m["ablate"].items() if "generation" in v}
        if gen:
            L += ["", "| trait | emoji rate intact → ablated | ESR intact → ablated |", "|---|---|---|"]
            L += [f"| {t} | {pct(g['emoji_rate_intact'])} → {pct(g['emoji_rate_ablated'])} | "
                  f"{pct(g['esr_intact'])} → {pct(g['esr_ablated'])} |" for t, g in gen.items()]
        L.append("")
    if m.get("patch"):
        L += ["Patching, both directions: **forward** puts the post-PEFT values of the top neurons into the base "
              "model (share of the post − base gap recovered), **reverse** puts the base values into the post-PEFT "
              "model (share removed). Random sets matched on the size of the patch; p two-sided; Holm over traits × "
              "directions. A share means something only where the gap's interval excludes 0.", "",
              "| trait | post − base [95% CI] | forward share [95% CI] | p | p (Holm) | reverse share [95% CI] | p | p (Holm) |",
              "|---|---|---|---:|---:|---|---:|---:|"]
        for t, v in m["patch"].items():
            r = v.get("reverse") or {}
            L.append(f"| {t} | {_ci(v['post_minus_base'])} | {share(v['fraction_recovered'], v.get('fraction_recovered_ci'))} | "
                     f"{_fmt(v.get('p'), '.3g')} | {_fmt(v.get('p_holm'), '.3g')} | "
                     f"{share(r.get('fraction_removed'), r.get('fraction_removed_ci'))} | {_fmt(r.get('p'), '.3g')} | "
                     f"{_fmt(r.get('p_holm'), '.3g')} |")
        L.append("")
    L += _fig_refs(out, ["ablate/ablation_vs_random.png", "patch/patching_vs_random.png"])
    return L


def _calibration(out: Path, m: dict[str, Any]) -> list[str]:
    """Calibration: the false-positive rate of each family of tests under nulls built by construction."""
    if not m.get("calibration"):
        return []
    from text2emoji.stages.calibrate import table

    trait = (read_json(out / "calibrate" / "calibration.json") or {}).get("trait", "first")
    L = ["## Calibration: how often these tests find an effect that is not there", "",
         "Not in the study (ours). Each family's p-values are only as good as their false-positive rate; "
         "it is measured here on null experiments built from this run's model and data (see "
         "`interp/calibration.py` for each null). What each null can show: for neurons and trace it is made "
         "of the very sign flips the test permutes, so it checks the code and the clustering (the naive "
         "per-prompt test fails it), not the test's own assumption; for ablation and patching the null sets are "
         "large neurons with no special role, which unmatched controls call significant. "
         f"{_zero_of(m['calibration'])}", ""]
    L += table(m["calibration"], trait) + [""]
    L += _fig_refs(out, ["calibrate/calibration.png"])
    return L


def _zero_of(cal: dict[str, Any]) -> str:
    """How little n null experiments can show: the Wilson upper bound of 0 false positives."""
    from interp.behaviour.emoji_metrics import wilson

    n = next(iter(cal.values()), {}).get("n_null")
    return f"With {n} null experiments the intervals are wide: 0 of {n} still allows up to {wilson(0, n)['hi']:.0%}." if n else ""


def _lens(out: Path, m: dict[str, Any]) -> list[str]:
    """6. Logit lens."""
    L: list[str] = []
    L += ["## 6. Logit lens", "", f"**{CLAIMS['lens']}**", ""]
    L += _fig_refs(out, ["trace/logit_lens.png"])
    return L


def _beyond(out: Path, m: dict[str, Any]) -> list[str]:
    """7. Beyond the paper: what each adapter changed (model diffing) and steering as a third
    manipulation."""
    L: list[str] = ["## 7. Beyond the paper: model diffing and steering", ""]
    if m.get("diffing"):
        from text2emoji.stages.diffing import table_lines

        L += ["**What each adapter changed, read without an emoji prompt** (descriptive, no test). Activation-difference "
              "lens: the mean residual-stream difference, adapter − base, over tokens 2–6 of "
              f"{m.get('diffing_texts', 'the')} of the bundled neutral texts "
              "(the first token, the attention sink, left out), each layer read through the final norm and the "
              "unembedding; the best rank any of the adapter's emojis' first tokens reaches there (an organism's: its "
              "planted emoji beside its trait's). Per-token KL(base ‖ adapter) over "
              f"{'the first ' + str(m['diffing_answers']) + ' of ' if m.get('diffing_answers') else ''}the adapter's own "
              "held-out answers, before an emoji's first token vs "
              "elsewhere.", ""]
        L += table_lines(m["diffing"]) + [""]
        L += _fig_refs(out, ["diffing/diffing.png"])
    st = m.get("steering") or {}
    if st:
        L += ["**Steering** (a third way to give the base model a trait, beside PEFT and in-context prompting): a trait "
              "vector (mean residual stream over answers generated with the in-context trait instruction minus without, "
              "on train questions) added, × α, to one block's output at every position. α is chosen on other train "
              "questions (the sweep): the highest trait alignment whose coherence (the base model's mean loss per "
              "token on the steered answer) rises by at most the stated limit over α = 0; the chosen α is then "
              "measured on the test questions (sections 1 and 2, method `steer`).", ""]
        for t, s in st.items():
            usable = "" if s.get("usable") else " — **no α within the coherence limit raised trait alignment: steering " \
                                                "not usable here (α = 0)**"
            L += [f"{t}: layer {s.get('layer')}, ‖v‖ {_fmt(s.get('vector_norm'), '.1f')}, chosen α = "
                  f"{_fmt(s.get('alpha'), 'g')}{usable} (vector from {s.get('n_vector_questions')} questions, sweep on "
                  f"{s.get('n_sweep_questions')}).", "",
                  "| α | emoji rate | ESR | trait alignment [95% CI] | coherence, nats/token | rise over α = 0 [95% CI] |",
                  "|---:|---:|---:|---|---:|---|"]
            for r in s.get("sweep") or []:
                c, rc = r.get("trait_alignment_ci") or [None, None], r.get("coherence_rise_ci") or [None, None]
                L.append(f"| {r['alpha']:g} | {pct(r.get('emoji_rate'))} | {pct(r.get('esr'))} | "
                         f"{pct(r.get('trait_alignment'))} [{pct(c[0])}, {pct(c[1])}] | {_fmt(r.get('coherence'), '.2f')} | "
                         f"{_fmt(r.get('coherence_rise'), '+.2f')} [{_fmt(rc[0], '+.2f')}, {_fmt(rc[1], '+.2f')}] |")
            L.append("")
        L += _fig_refs(out, ["steering/steering_sweep.png"])
    if len(L) == 2:
        L += ["(stages diffing and steering not run)", ""]
    return L


def render_markdown(out: Path, m: dict[str, Any]) -> str:
    """The report: each claim of the study beside what this run measured, then the figures of
    any other stage and the provenance."""
    L: list[str] = []
    for section in (_header, _emoji_use, _alignment, _icl, _organisms, _neurons, _causal, _calibration, _lens, _beyond):
        L += section(out, m)
    # figures of any other stage (an analysis added to the registry shows up here)
    placed = "\n".join(L)
    rest = [n for n in _figures() if f"]({n})" not in placed and (out / n).is_file()]
    if rest:
        L += ["## Further analyses", ""] + _fig_refs(out, rest)
    L += ["## Provenance", ""] + _provenance(out)
    return "\n".join(L) + "\n"


def _fmt(v: float | int | None, fmt: str = "+.3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _fig_refs(out: Path, names: list[str]) -> list[str]:
    captions = _figures()
    return [f"![{captions[n]}]({n})\n\n*{captions[n]}.*\n" for n in names if (out / n).is_file()]


def _provenance(out: Path) -> list[str]:
    lines = ["| stage | config hash | finished | seconds | git commit |", "|---|---|---|---:|---|"]
    for meta_path in sorted(out.glob("**/meta.json")):
        meta = read_json(meta_path) or {}
        git = (meta.get("git") or {}).get("commit") or ""
        lines.append(f"| {meta_path.parent.relative_to(out)} | {meta.get('config_hash', '')} | {meta.get('finished', meta.get('status', ''))} | "
                     f"{meta.get('wall_seconds', '')} | {git[:10]} |")
    first = next((read_json(p) for p in sorted(out.glob("**/meta.json"))), None) or {}
    pk = first.get("packages") or {}
    if pk:
        lines += ["", "Packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v), ""]
    if first.get("device"):
        lines += [f"Device: {json.dumps(first['device'])}", ""]
    return lines


def markdown_to_html(md: str, out: Path) -> str:
    """A small renderer for the report's own Markdown (headings, tables, images, paragraphs);
    images are embedded, so the file stands alone."""
    body: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                # a cell's own "|" is written "\|" (as GitHub's markdown does)
                rows.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", lines[i].strip().strip("|"))])
                i += 1
            head, data = rows[0], rows[2:]
            body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in data) + "</table>")
            continue
        elif (img := re.fullmatch(r"!\[(.*)\]\((.*)\)", line)) is not None:
            data = base64.b64encode((out / img.group(2)).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(img.group(1))}" src="data:image/png;base64,{data}"></figure>')
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
             "img{max-width:100%}figure{margin:1em 0}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>text2emoji report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"\*(.+?)\*", r"<i>\1</i>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def short_summary(m: dict[str, Any]) -> dict[str, Any]:
    """The few numbers ``text2emoji run`` prints at the end (all of them are in metrics.json)."""
    out: dict[str, Any] = {"report": str(Path(m["out"]) / "report.html"), "metrics": str(Path(m["out"]) / "metrics.json")}
    if m.get("emoji_table"):
        out["emoji_rate"] = {k: r["emoji_rate"] for k, r in m["emoji_table"].items() if not k.endswith("/incontext")}
    if m.get("trait_alignment"):
        out["trait_alignment_peft"] = {k.split("/")[0]: v for k, v in m["trait_alignment"].items() if k.endswith("/peft")}
    if m.get("neurons"):
        out["top_neuron"] = {t: v["top_neuron"] for t, v in m["neurons"].items()}
    if m.get("trace"):
        out["emoji_logprob_change"] = {t: round(v["mean_change"], 3) for t, v in m["trace"].items()}
    if m.get("ablate"):
        out["ablation_p_holm_zero"] = {t: v["zero"]["p_holm"] for t, v in m["ablate"].items() if "zero" in v}
    if m.get("patch"):
        out["patching_p_holm"] = {t: v["p_holm"] for t, v in m["patch"].items()}
    if m.get("organisms"):  # which tests flag each known-answer adapter
        out["organisms_flagged_by"] = {k: [t for t, on in (v.get("detected") or {}).items() if on]
                                       for k in ("study", "positive", "negative") if (v := m["organisms"].get(k))}
    return out


def write_report(out: Path) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and ``metrics.json`` under ``out``; return the metrics."""
    out = Path(out)
    m = collect(out)
    atomic_write_json(out / "metrics.json", m)
    md = render_markdown(out, m)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", markdown_to_html(md, out))
    return m


def redraw(out: Path) -> list[Path]:
    """Rebuild every figure of a run from its results files alone, then the report."""
    from text2emoji.core.errors import UserError
    from text2emoji.core.runs import stage_status
    from text2emoji.stages.registry import STAGES

    out = Path(out)
    if not out.is_dir():
        raise UserError(f"{out} is not a run directory")
    if not any(stage_status(out / s.name)[0] for s in STAGES if s.name != "train") and not list(
            out.glob("train/*/meta.json")):
        raise UserError(f"{out} is not a text2emoji run directory (no stage with a meta.json: "
                        f"{', '.join(s.name for s in STAGES)}); nothing written")
    paths: list[Path] = []
    for stage in STAGES:
        # a stage of sub-stages (train) or of its own making draws what it finds; others only
        # when complete
        if stage.execute is not None or stage_status(out / stage.name)[0] == "complete":
            try:
                paths += stage.draw(out / stage.name)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                raise UserError(f"{out / stage.name}: its results files are not in the layout this version "
                                f"draws from ({type(e).__name__}: {e}); rerun the stage with --force") from e
    write_report(out)
    return paths + [out / "report.md", out / "report.html", out / "metrics.json"]
