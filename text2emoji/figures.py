"""Every figure of a run, drawn only from results files' content (the dataset's word clouds,
loss curves, behavioural and mechanistic analyses).

One paper style (small serif-free fonts, a colour-blind-safe palette), PDF + PNG. Each function
takes the parsed JSON a stage wrote and an output folder, and returns the written paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from text2emoji.core.files import atomic_path

# Okabe-Ito: a colour-blind-safe palette, one colour per trait in TRAITS order.
TRAIT_COLORS = {
    "openness": "#E69F00",
    "conscientiousness": "#0072B2",
    "extraversion": "#D55E00",
    "agreeableness": "#009E73",
    "neuroticism": "#CC79A7",
}


# Okabe-Ito, colour-blind safe
METHOD_COLORS = {"base": "#999999", "peft": "#D55E00", "incontext": "#0072B2", "steer": "#009E73", "pre": "#999999",
                 "post": "#D55E00"}
TOWARDS, AWAY = "#009E73", "#CC79A7"
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "legend.fontsize": 7, "axes.spines.top": False, "axes.spines.right": False}


# Colour emoji glyphs: matplotlib cannot draw colour (CBDT) fonts, so emojis are rendered with
# Pillow from Noto Color Emoji and placed as images. `make setup` installs the font where apt is
# available (Debian: fonts-noto-color-emoji); TEXT2EMOJI_EMOJI_FONT points at another file.
EMOJI_FONTS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
               "/usr/share/fonts/noto/NotoColorEmoji.ttf",
               "/System/Library/Fonts/Apple Color Emoji.ttc")


def emoji_font_path() -> str | None:
    import os

    for p in (os.environ.get("TEXT2EMOJI_EMOJI_FONT"), *EMOJI_FONTS):
        if p and Path(p).is_file():
            return p
    return None


_GLYPHS: dict[str, Any] = {}


def emoji_glyph(emoji: str) -> Any:
    """An RGBA array of ``emoji`` drawn in colour (None when no emoji font is installed)."""
    if emoji in _GLYPHS:
        return _GLYPHS[emoji]
    path = emoji_font_path()
    if path is None:
        return None
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(path, 109)  # the size Noto Color Emoji's bitmaps are drawn at
    im = Image.new("RGBA", (160 * max(1, len(emoji)), 136), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((0, 0), emoji, font=font, embedded_color=True)
    box = im.getbbox()
    _GLYPHS[emoji] = np.asarray(im.crop(box)) if box else None
    return _GLYPHS[emoji]


def place_emojis(ax: Any, items: Sequence[tuple[float | int, str]], axis: str = "x", size: float = 10.0,
                 offset: float | int = 10) -> bool:
    """Draw each ``(position, emojis)`` as colour glyphs beside the axis (below x ticks, left of
    y ticks); False, with nothing drawn, when no emoji font is installed."""
    from matplotlib.offsetbox import AnnotationBbox, HPacker, OffsetImage

    if emoji_font_path() is None:
        return False
    from interp.emojis import find_emojis

    for pos, text in items:
        boxes = []
        for e in find_emojis(text):
            g = emoji_glyph(e)
            if g is not None:
                boxes.append(OffsetImage(g, zoom=size / g.shape[0] * 72 / 200 * 2.2))
        if not boxes:
            continue
        box = HPacker(children=boxes, pad=0, sep=1)
        if axis == "x":
            ab = AnnotationBbox(box, (pos, 0), xybox=(0, -offset), xycoords=("data", "axes fraction"),
                                boxcoords="offset points", frameon=False, box_alignment=(0.5, 1))
        else:
            ab = AnnotationBbox(box, (0, pos), xybox=(-offset, 0), xycoords=("axes fraction", "data"),
                                boxcoords="offset points", frameon=False, box_alignment=(1, 0.5))
        ax.add_artist(ab)
    return True


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def save(fig: Any, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.pdf`` and ``name.png`` atomically; close the figure."""
    paths = []
    for ext in ("pdf", "png"):
        with atomic_path(Path(out_dir) / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=200, bbox_inches="tight")
        paths.append(Path(out_dir) / f"{name}.{ext}")
    _plt().close(fig)
    return paths


def emoji_rates(table: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Emoji rate and ESR per trait and method, with their 95% intervals."""
    plt = _plt()
    traits = list(dict.fromkeys(r["trait"] for r in table))
    methods = list(dict.fromkeys(r["method"] for r in table))
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.2), sharey=True)
    width = 0.8 / max(len(methods), 1)
    for ax, metric, title in zip(axes, ("emoji_rate", "esr"), ("emoji rate (answers)", "ESR (sentences)"), strict=True):
        for i, m in enumerate(methods):
            rows = {r["trait"]: r for r in table if r["method"] == m}
            xs = [t + (i - (len(methods) - 1) / 2) * width for t in range(len(traits))]
            vals = [100 * (rows[t][metric] or 0) if t in rows else 0 for t in traits]
            lo = [v - 100 * (rows[t][f"{metric}_lo"] or 0) if t in rows else 0 for t, v in zip(traits, vals, strict=True)]
            hi = [100 * (rows[t][f"{metric}_hi"] or 0) - v if t in rows else 0 for t, v in zip(traits, vals, strict=True)]
            ax.bar(xs, vals, width, yerr=[lo, hi], color=METHOD_COLORS.get(m), label=m, capsize=1.5,
                   error_kw={"lw": 0.6})
        ax.set_xticks(range(len(traits)), [t[:5] for t in traits])
        ax.set_title(title)
        ax.set_ylim(0, 100)
        if not any(r[metric] for r in table):  # an empty-looking panel is a result: say so
            ax.text(0.5, 0.5, "0% in every group", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    axes[0].set_ylabel("% (95% CI)")
    axes[1].legend(frameon=False, loc="upper right")
    return save(fig, out_dir, "emoji_rates")


def word_contributions(examples: dict[str, dict[str, Any]], out_dir: Path, k: int = 8) -> list[Path]:
    """For one answer per trait: the features pushing towards (green) and away (pink)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(examples), figsize=(1.6 * len(examples) + 0.8, 2.4), squeeze=False)
    for ax, (trait, ex) in zip(axes[0], examples.items(), strict=True):
        feats = [f for f in ex["towards"][:k] if f[1] > 0][::-1] + [f for f in ex["away"][:k] if f[1] < 0]
        feats = sorted(feats, key=lambda f: f[1])
        ax.barh(range(len(feats)), [v for _, v in feats], color=[TOWARDS if v > 0 else AWAY for _, v in feats])
        ax.set_yticks(range(len(feats)), [w for w, _ in feats])
        ax.axvline(0, color="black", lw=0.5)
        ax.set_title(f"{trait} ({ex['method']})")
    fig.supxlabel("contribution to the trait's logit vs the others", fontsize=8)
    fig.tight_layout()
    return save(fig, out_dir, "word_contributions")


def icl_tokens(top: dict[str, dict[str, list[dict[str, Any]]]], out_dir: Path, k: int = 10) -> list[Path]:
    """The k tokens named most often per trait, pre (base) and post (adapter); emoji tokens are
    hatched and drawn as colour glyphs."""
    plt = _plt()
    traits = list(top)
    fig, axes = plt.subplots(2, len(traits), figsize=(1.7 * len(traits) + 0.6, 4.2), squeeze=False)
    for col, trait in enumerate(traits):
        for row, model in enumerate(("pre", "post")):
            ax = axes[row][col]
            items = top[trait].get(model, [])[:k][::-1]
            ax.barh(range(len(items)), [t["count"] for t in items], color=METHOD_COLORS[model],
                    hatch=None, edgecolor="black", linewidth=0.2)
            for bar, t in zip(ax.patches, items, strict=True):
                if t["is_emoji"]:
                    bar.set_hatch("////")
            glyphs = place_emojis(ax, [(j, t["token"]) for j, t in enumerate(items) if t["is_emoji"]], axis="y", offset=3.0)
            ax.set_yticks(range(len(items)), ["" if (t["is_emoji"] and glyphs) else t["token"][:18] for t in items])
            ax.set_ylim(-0.6, k - 0.4)  # same bar height in every panel, however few tokens
            ax.set_title(f"{trait[:5]}, {model}")
            if not items:
                ax.text(0.5, 0.5, "no tokens", ha="center", va="center", transform=ax.transAxes, fontsize=7)
    fig.supxlabel("times named (hatched: emoji)", fontsize=8)
    fig.tight_layout()
    return save(fig, out_dir, "icl_tokens")


def loss_curves(curves: dict[str, list[dict[str, Any]]], out_dir: Path) -> list[Path]:
    """Train (thin) and held-out (thick) loss per optimizer step, one line pair per trait."""

    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.4, 2.3))
    for trait, hist in curves.items():
        c = TRAIT_COLORS.get(trait)
        tr = [(h["step"], h["train_loss"]) for h in hist if h.get("train_loss") not in (None, "")]
        ev = [(h["step"], h["eval_loss"]) for h in hist if h.get("eval_loss") not in (None, "")]
        if tr:
            ax.plot(*zip(*tr, strict=True), color=c, lw=0.6, alpha=0.6)
        if ev:
            ax.plot(*zip(*ev, strict=True), color=c, lw=1.6, marker="o", ms=2, label=trait)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per answer token")
    ax.legend(frameon=False)
    return save(fig, out_dir, "loss_curves")


# --- mechanistic figures: each reads the JSON its stage wrote -------------------------------------


def _read(path: Path) -> Any:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


def draw_neurons(stage_dir: Path) -> list[Path]:
    """Neuron-diff heatmap (top neurons x traits) and emoji selectivity vs mean increase."""
    return neuron_heatmap(stage_dir) + selectivity(stage_dir)


def neuron_heatmap(stage_dir: Path, k: int = 8) -> list[Path]:
    """Mean post-minus-pre activation of the union of each trait's top-k neurons, per trait."""
    import numpy as np

    plt = _plt()
    sel = _read(Path(stage_dir) / "selectivity.json")
    tops = _read(Path(stage_dir) / "top_neurons.json")
    traits = list(tops)
    neurons = list(dict.fromkeys(r["neuron"] for t in traits for r in tops[t]["by_mean"][:k]))
    m = np.array([[sel["mean_increase"][t][n] for t in traits] for n in neurons])
    lim = float(np.abs(m).max()) or 1.0
    fig, ax = plt.subplots(figsize=(0.5 * len(traits) + 1.4, 0.14 * len(neurons) + 0.9))
    im = ax.imshow(m, cmap="PuOr_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(traits)), [t[:5] for t in traits])
    ax.set_yticks(range(len(neurons)), [str(n) for n in neurons], fontsize=5)
    ax.set_ylabel(f"neuron (top {k} per trait)")
    fig.colorbar(im, ax=ax, shrink=0.7, label="mean increase, post − pre")
    ax.set_title("last-layer neurons after PEFT")
    return save(fig, stage_dir, "neuron_heatmap")


def selectivity(stage_dir: Path) -> list[Path]:
    """Per trait: each neuron's mean increase (x) against its emoji selectivity d_z after PEFT
    (y); the trait's top-10 neurons by increase marked."""

    plt = _plt()
    sel = _read(Path(stage_dir) / "selectivity.json")
    tops = _read(Path(stage_dir) / "top_neurons.json")
    traits = list(tops)
    fig, axes = plt.subplots(1, len(traits), figsize=(1.45 * len(traits) + 0.5, 1.9), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], traits, strict=True):
        x, y = sel["mean_increase"][t], sel["effect_post"][t]
        ax.scatter(x, y, s=1, color="#BBBBBB", rasterized=True)
        top = [r["neuron"] for r in tops[t]["by_mean"][:10]]
        ax.scatter([x[n] for n in top], [y[n] for n in top], s=6, color=TRAIT_COLORS.get(t))
        ax.axhline(0, color="black", lw=0.4)
        ax.set_title(t[:5])
    axes[0][0].set_ylabel("emoji selectivity (d_z)")
    fig.supxlabel("mean increase after PEFT", fontsize=8)
    fig.tight_layout()
    return save(fig, stage_dir, "emoji_selectivity")


def draw_trace(stage_dir: Path) -> list[Path]:
    return emoji_prob(stage_dir) + logit_lens_curves(stage_dir)


def emoji_prob(stage_dir: Path) -> list[Path]:
    """Mean log P(any of the trait's emojis) per trait, pre and post, with each prompt's pair."""
    import numpy as np

    plt = _plt()
    tr = _read(Path(stage_dir) / "trace.json")["traits"]
    traits = list(tr)
    fig, ax = plt.subplots(figsize=(3.4, 2.2))
    for i, t in enumerate(traits):
        pre, post = np.array(tr[t]["any_emoji_pre"]), np.array(tr[t]["any_emoji_post"])
        for a, b in zip(pre, post, strict=True):
            ax.plot([i - 0.15, i + 0.15], [a, b], color="#CCCCCC", lw=0.4)
        ax.scatter([i - 0.15], [pre.mean()], color=METHOD_COLORS["pre"], s=14, zorder=3, label="pre" if i == 0 else None)
        ax.scatter([i + 0.15], [post.mean()], color=METHOD_COLORS["post"], s=14, zorder=3, label="post" if i == 0 else None)
    ax.set_xticks(range(len(traits)), [t[:5] for t in traits])
    # the trait's emojis under its name, in colour (without an emoji font: the names alone)
    place_emojis(ax, [(i, "".join(tr[t]["emojis"])) for i, t in enumerate(traits)], offset=14.0)
    ax.set_ylabel("log P(trait emoji)")
    ax.legend(frameon=False, fontsize=6)
    return save(fig, stage_dir, "emoji_prob")


def logit_lens_curves(stage_dir: Path) -> list[Path]:
    """log P(any of the trait's emojis) decoded after every layer; dashed pre, solid post."""

    plt = _plt()
    tr = _read(Path(stage_dir) / "trace.json")["traits"]
    fig, ax = plt.subplots(figsize=(3.4, 2.3))
    for t, r in tr.items():
        c = TRAIT_COLORS.get(t)
        ax.plot(r["logit_lens_pre"], color=c, lw=0.8, ls="--")
        ax.plot(r["logit_lens_post"], color=c, lw=1.2, label=t)
    ax.set_xlabel("layer (residual stream after it)")
    ax.set_ylabel("log P(trait emoji), mean")
    ax.legend(frameon=False, fontsize=6)
    ax.set_title("logit lens (dashed: pre, solid: post)")
    return save(fig, stage_dir, "logit_lens")


def draw_intervention(stage_dir: Path, file: str, name: str) -> list[Path]:
    """Per trait and mode (ablation) or direction (patching): the matched random sets' effects
    (histogram), the candidates' effect (line) and its two-sided p, raw and Holm."""

    plt = _plt()
    res = _read(Path(stage_dir) / file)
    panels = []
    for t, r in res.items():
        if name == "ablation":
            rows = [(m, r.get(m), r.get(m, {}).get("p_holm")) for m in ("zero", "mean")]
            rows = [(m, e and {"control": e.get("random_control"), "delta": e["candidate_delta"]["mean"]}, q)
                    for m, e, q in rows]
        else:
            rev = r.get("reverse") or {}
            rows = [("forward", {"control": r.get("random_control"), "delta": r["candidate_delta"]["mean"]}, r.get("p_holm")),
                    ("reverse", rev and {"control": rev.get("random_control"), "delta": rev["delta"]["mean"]},
                     r.get("p_holm_reverse"))]
        panels += [(t, m, e, q) for m, e, q in rows if e and e["control"]]
    if not panels:
        return []
    traits = list(dict.fromkeys(p[0] for p in panels))
    modes = list(dict.fromkeys(p[1] for p in panels))
    fig, axes = plt.subplots(len(modes), len(traits), figsize=(1.35 * len(traits) + 0.5, 1.5 * len(modes) + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for t, mode, e, q in panels:
        ax = axes[modes.index(mode)][traits.index(t)]
        ax.set_visible(True)
        ax.hist(e["control"]["draws"], bins=15, color="#BBBBBB")
        ax.axvline(e["delta"], color=TRAIT_COLORS.get(t), lw=1.5)
        holm = "" if q is None else f", Holm {q:.2g}"
        ax.set_title(f"{t[:5]}, {mode}\np={e['control']['p']:.2g}{holm}", fontsize=7)
        ax.tick_params(labelsize=6)
    for row in axes:
        row[0].set_ylabel("random sets", fontsize=7)
    what = "ablated" if name == "ablation" else "patched"
    fig.supxlabel(f"Δ log P(trait emoji): top-k neurons {what} (line) vs random k matched on size", fontsize=8)
    fig.tight_layout()
    return save(fig, stage_dir, name + "_vs_random")


def draw_calibration(stage_dir: Path) -> list[Path]:
    """Per family: the false-positive rate under its nulls with its Wilson interval, beside the
    naive test's on the same nulls, and the line at α."""
    plt = _plt()
    fams = _read(Path(stage_dir) / "summary.json")
    if not fams:
        return []
    names = list(fams)
    alpha = next(iter(fams.values()))["alpha"]
    fig, ax = plt.subplots(figsize=(4.6, 2.4))
    for j, (key, label, colour) in enumerate((("this", "this workbench's test", "#1f77b4"),
                                               ("naive", "naive test, same nulls", "#BBBBBB"))):
        rows = [fams[n] if key == "this" else fams[n].get("comparison") for n in names]
        xs = [i + (j - 0.5) * 0.36 for i in range(len(names))]
        ys = [r["false_positive_rate"] if r else float("nan") for r in rows]
        err = [[r["false_positive_rate"] - r["ci"][0] if r else 0 for r in rows],
               [r["ci"][1] - r["false_positive_rate"] if r else 0 for r in rows]]
        ax.bar(xs, ys, width=0.34, color=colour, label=label, yerr=err, capsize=2, error_kw={"lw": 0.8})
    ax.axhline(alpha, color="black", lw=0.8, ls="--", label=f"α = {alpha}")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("false-positive rate", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=6)
    ax.set_title(f"nulls built so that no effect exists ({next(iter(fams.values()))['n_null']} per family)", fontsize=8)
    fig.tight_layout()
    return save(fig, stage_dir, "calibration")


def word_clouds(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """One word cloud per trait from its distinctive words (size = log-odds z-score), as a
    5-panel figure (PDF + PNG) and one PNG per trait. Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from wordcloud import WordCloud

    out_dir = Path(out_dir)
    words = report["distinctive_words"]
    traits = list(words)
    fig, axes = plt.subplots(1, len(traits), figsize=(3.0 * len(traits), 2.6))
    written = []
    for ax, trait in zip(list(getattr(axes, "flat", [axes])), traits, strict=True):
        weights = {w: s for w, s in words[trait] if s > 0}
        color = TRAIT_COLORS.get(trait, "#333333")
        cloud = WordCloud(
            width=600, height=500, background_color="white", random_state=0,
            color_func=lambda *a, c=color, **k: c, prefer_horizontal=0.9,
        ).generate_from_frequencies(weights or {"(none)": 1})
        with atomic_path(out_dir / f"wordcloud_{trait}.png") as tmp:
            cloud.to_image().save(tmp, format="PNG")
        written.append(out_dir / f"wordcloud_{trait}.png")
        ax.imshow(cloud, interpolation="bilinear")
        ax.set_title(trait, fontsize=11, color=color)
        ax.axis("off")
    fig.tight_layout()
    for ext in ("pdf", "png"):
        with atomic_path(out_dir / f"wordclouds.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=200, bbox_inches="tight")
        written.append(out_dir / f"wordclouds.{ext}")
    plt.close(fig)
    return written


def organisms(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Can this run detect the effect? Per adapter (the study's of the same trait, each positive
    control, the negative control): the emoji rate of generated answers base vs PEFT (95% Wilson
    intervals); the change in log P(trait emoji) when its top neurons (the study's ranking) are
    ablated, against the 2.5–97.5% band of the matched random sets; and the share of answers
    opening with an emoji intact and with its attribution neurons (every layer) set to their
    base values, against the same band of matched random sets."""
    plt = _plt()
    rows: list[tuple[str, dict[str, Any]]] = []
    if summary.get("study"):
        rows.append(("study", summary["study"]))
    rows += [(f"planted {100 * p['planted_fraction']:g}%", p)
             for p in (summary.get("dose_response") or [summary.get("positive")]) if p]
    if summary.get("positive_end"):
        rows.append((f"planted {100 * summary['positive_end']['planted_fraction']:g}%, end", summary["positive_end"]))
    if summary.get("negative"):
        rows.append(("negative", summary["negative"]))
    if not rows:
        return []
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(11.5, 0.5 * len(rows) + 2.0), sharey=True)
    ys = list(range(len(rows)))[::-1]
    for y, (_, r) in zip(ys, rows, strict=True):
        for off, key, colour, label in ((0.15, "base", "#BBBBBB", "base"), (-0.15, "peft", "#1f77b4", "PEFT")):
            v, ci = r.get(f"emoji_rate_{key}"), r.get(f"emoji_rate_{key}_ci") or [None, None]
            if v is None:
                continue
            lo, hi = (ci[0] if ci[0] is not None else v), (ci[1] if ci[1] is not None else v)
            a1.errorbar([v], [y + off], xerr=[[v - lo], [hi - v]], fmt="o", color=colour, ms=4, capsize=2,
                        label=label if y == ys[0] else None)
        a = r.get("ablation") or {}
        band = "matched random sets, 2.5–97.5%" if y == ys[0] else None
        if a.get("random_band"):
            a2.plot(a["random_band"], [y, y], color="#BBBBBB", lw=6, solid_capstyle="butt", label=band)
        if a.get("delta_logprob") is not None:
            ci = a.get("delta_logprob_ci") or [a["delta_logprob"]] * 2
            a2.errorbar([a["delta_logprob"]], [y], xerr=[[a["delta_logprob"] - ci[0]], [ci[1] - a["delta_logprob"]]],
                        fmt="o", color="#d62728", ms=4, capsize=2, label="top neurons ablated" if y == ys[0] else None)
            if a.get("p_holm") is not None:
                a2.annotate(f"p(Holm) {a['p_holm']:.2g}", (a["delta_logprob"], y), xytext=(0, 6),
                            textcoords="offset points", fontsize=6, ha="center")
        t = r.get("attribution") or {}
        if t.get("opening_rate_random_band"):
            a3.plot(t["opening_rate_random_band"], [y, y], color="#BBBBBB", lw=6, solid_capstyle="butt", label=band)
        if t.get("opening_rate_patched") is not None:
            a3.plot([t["opening_rate_base"]], [y + 0.3], "o", color="#BBBBBB", ms=4, label="base" if y == ys[0] else None)
            a3.plot([t["opening_rate_intact"]], [y + 0.15], "o", color="#1f77b4", ms=4,
                    label="intact (PEFT)" if y == ys[0] else None)
            a3.plot([t["opening_rate_patched"]], [y - 0.15], "o", color="#d62728", ms=4,
                    label="attribution neurons at base values" if y == ys[0] else None)
            if t.get("p_rate_holm") is not None:
                a3.annotate(f"p(Holm) {t['p_rate_holm']:.2g}", (t["opening_rate_patched"], y - 0.15), xytext=(0, -9),
                            textcoords="offset points", fontsize=6, ha="center")
    a1.set_yticks(ys, [label for label, _ in rows], fontsize=7)
    a1.set_ylim(-0.7, len(rows) - 0.4)  # room for the annotations below the last row
    a1.set_xlim(-0.02, 1.02)
    a1.set_xlabel("emoji rate of generated answers", fontsize=8)
    a2.axvline(0, color="black", lw=0.6)
    a2.set_xlabel("Δ log P(trait emoji), zero-ablation of the top neurons", fontsize=8)
    a3.set_xlim(-0.02, 1.02)
    a3.set_xlabel("answers opening with an emoji (greedy first token)", fontsize=8)
    for ax in (a1, a2, a3):
        ax.tick_params(labelsize=7)
        ax.legend(frameon=False, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2)
    fig.suptitle(f"Can this run detect the effect? ({summary.get('trait')}: study, positive and negative control)",
                 fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, "organisms")


def steering_sweep(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Stage ``steering``: emoji rate, ESR, trait alignment and the rise of the base model's NLL
    per token over α = 0 on the sweep questions, against α; one line per trait with its 95%
    interval band; a star at the α chosen (hollow where steering was not usable, α* = 0) and the
    coherence limit dashed."""
    plt = _plt()
    traits = result.get("traits") or {}
    alphas = sorted({p["alpha"] for v in traits.values() for p in v["sweep"]})
    panels = (("emoji_rate", "emoji rate (answers)", 100.0), ("esr", "ESR (sentences)", 100.0),
              ("trait_alignment", "trait alignment", 100.0),
              ("coherence_rise", "coherence: rise in base NLL / token\nover α = 0 (nats)", 1.0))
    fig, axes = plt.subplots(1, 4, figsize=(10.5, 2.6))
    for ax, (key, title, scale) in zip(axes, panels, strict=True):
        for j, (trait, v) in enumerate(traits.items()):
            pts = [p for p in v["sweep"] if p[key] is not None]
            if not pts:
                continue
            colour = TRAIT_COLORS.get(trait, "#777777")
            xs = [p["alpha"] for p in pts]
            ys = [scale * p[key] for p in pts]
            ci = [p.get(f"{key}_ci") or [None, None] for p in pts]
            lo = [scale * c[0] if c[0] is not None else y for c, y in zip(ci, ys, strict=True)]
            hi = [scale * c[1] if c[1] is not None else y for c, y in zip(ci, ys, strict=True)]
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.18 if len(traits) <= 2 else 0.08, lw=0)  # bands overlap
            # later traits drawn thinner on top, so coinciding lines stay visible
            ax.plot(xs, ys, "-o", color=colour, ms=3.5 - 0.5 * min(j, 4), lw=2.2 - 0.4 * min(j, 4), label=trait)
            star = [y for p, y in zip(pts, ys, strict=True) if p["alpha"] == v["alpha"]]
            if star:
                ax.plot([v["alpha"]], star, "*", ms=11, color=colour, mec="black", mew=0.6,
                        mfc=colour if v["usable"] else "white", zorder=5)
        if scale == 100.0:
            ax.set_ylim(-3, 103)
            ax.set_ylabel("% (95% CI)" if key == "emoji_rate" else "")
            if traits and not any(p[key] for v in traits.values() for p in v["sweep"]):  # a flat line is a result
                ax.text(0.5, 0.8, "0% at every α", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        else:
            ax.axhline(0, color="black", lw=0.5)
            ax.axhline(result["max_coherence_rise"], color="#555555", ls="--", lw=0.8)
            ax.text(0.02, result["max_coherence_rise"], " limit", va="bottom", fontsize=6, color="#555555",
                    transform=ax.get_yaxis_transform())
        if alphas and max(alphas) > 1:
            ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
            ax.set_xlim(-0.15, max(alphas) * 1.25)
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.minorticks_off()
        ax.set_xlabel("α")
        ax.set_title(title)
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], marker="*", ls="none", ms=9, color="#777777", mec="black", mew=0.6),
                Line2D([], [], marker="*", ls="none", ms=9, mfc="white", mec="black", mew=0.6)]
    labels += ["α chosen", "α chosen = 0: steering not usable"]
    fig.legend(handles, labels, frameon=False, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, -0.08))
    n_sweep = sorted({v["n_sweep_questions"] for v in traits.values()})
    fig.suptitle(f"Steering {result.get('model', '')} at {result.get('site', '')}: the α sweep on "
                 f"{'/'.join(map(str, n_sweep))} train questions per trait (disjoint from the vector's)", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, "steering_sweep")


def _token_label(t: dict[str, Any]) -> str:
    """A token as the figure shows it: its decoded text where the font can draw it (whitespace
    as a quoted escape), else the vocabulary's own spelling (byte-level pieces of emojis decode
    to U+FFFD)."""
    text = t["text"]
    if not text.strip():
        return repr(text)
    if "\ufffd" in text or any(ord(c) > 0xFFFF for c in text):
        text = t["token"]
    return repr(text)[1:-1][:14]


def diff_lens(result: dict[str, Any], out_dir: Path, k: int = 6) -> list[Path]:
    """``diff-lens``: per layer the norm of the mean activation difference (adapter − base), the
    rank of each trait's emojis' first tokens among the tokens it promotes (the best of the
    trait's emojis, with or without a leading space; 1 = most promoted), and the top ``k``
    promoted tokens."""
    plt = _plt()
    layers = result["layers"]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(10.0, 0.16 * len(layers) + 1.6), sharey=True,
                                     gridspec_kw={"width_ratios": [1, 1.3, 2.6]})
    ys = [row["layer"] for row in layers]
    a1.plot([row["norm"] for row in layers], ys, color="#333333", lw=1, marker="o", ms=2)
    a1.set_xlabel("‖mean difference‖")
    a1.set_ylabel("layer (resid_post)")
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(layers[0]["emojis"] if layers else []):
        groups.setdefault(e["trait"] or f"U+{ord(e['emoji'][0]):04X}", []).append(i)
    series = {name: [min(min(row["emojis"][i]["rank"], row["emojis"][i]["space_rank"]) for i in idx) for row in layers]
              for name, idx in groups.items()}
    for j, (name, best) in enumerate(series.items()):
        # later traits drawn thinner on top, so coinciding lines stay visible
        a2.plot(best, ys, color=TRAIT_COLORS.get(name, "#777777"), lw=2.4 - 0.4 * min(j, 4), marker="o", ms=2,
                label=name)
    a2.set_xscale("log")
    a2.set_xlabel("rank of the emojis' first token")
    if series:
        a2.legend(frameon=False, fontsize=6)
    if len({tuple(v) for v in series.values()}) == 1 and len(series) > 1:
        a2.text(0.02, 0.02, "lines coincide: the emojis share\ntheir best-ranked first token", fontsize=6,
                transform=a2.transAxes)
    if vocab := result.get("vocab_size"):
        a2.set_xlim(0.8, vocab * 1.2)
    a3.axis("off")
    for row in layers:
        a3.text(0, row["layer"], "  ".join(_token_label(t) for t in row["top"][:k]), va="center", fontsize=6,
                family="monospace")
    a3.set_title(f"top {k} promoted tokens (final norm + unembedding of the difference)", fontsize=7)
    a1.set_ylim(-0.6, max(ys, default=0) + 0.6)
    a1.invert_yaxis()
    fig.suptitle(f"activation-difference lens: {result.get('adapter', '')} − base, tokens 2–{result.get('first_k', 0) + 1} "
                 f"of {result.get('n_texts')} texts" if result.get("skip_first") else
                 f"activation-difference lens: {result.get('adapter', '')} − base, first {result.get('first_k')} "
                 f"tokens of {result.get('n_texts')} texts", fontsize=8)
    fig.tight_layout()
    return save(fig, out_dir, "diff_lens")


def diffing(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Stage ``diffing``: per adapter, the norm of the mean activation difference per layer, the
    best rank any of its emojis' first tokens reaches per layer (1 = most promoted), and the mean
    KL(base ‖ adapter) per answer position."""
    plt = _plt()
    adapters = result.get("adapters") or {}
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(10.5, 3.2))
    palette = ["#555555", "#56B4E9", "#F0E442", "#000000"]
    for j, (name, r) in enumerate(adapters.items()):
        trait = name if name in TRAIT_COLORS else None
        color = TRAIT_COLORS.get(trait or "", palette[j % len(palette)])
        style = "-" if trait else "--"
        layers = r["lens"]
        xs = [la["layer"] for la in layers]
        a1.plot(xs, [la["norm"] for la in layers], style, color=color, lw=1.2, label=name)
        best = [min((min(v["rank"], v["space_rank"]) for v in la["emojis"].values()), default=None) for la in layers]
        if all(b is not None for b in best):
            a2.plot(xs, best, style, color=color, lw=1.2)
        kl = (r.get("kl") or {}).get("mean_kl_by_position") or []
        if kl:
            a3.plot(range(len(kl)), kl, style, color=color, lw=1.2)
    a1.set_yscale("log")
    a1.set_xlabel("layer (resid_post)")
    a1.set_ylabel("‖mean difference‖, adapter − base")
    a1.set_title(f"neutral texts, tokens 2–{result.get('first_k', 0) + 1}", fontsize=8)
    a2.set_yscale("log")
    a2.invert_yaxis()
    a2.set_xlabel("layer (resid_post)")
    a2.set_ylabel("best rank of its emojis' first token")
    a2.set_title("lens of the difference (1 = most promoted)", fontsize=8)
    a3.set_xlabel("answer token position")
    a3.set_ylabel("mean KL(base ‖ adapter), nats")
    a3.set_title("over the adapter's own held-out answers", fontsize=8)
    a1.legend(frameon=False, fontsize=6)
    fig.tight_layout()
    return save(fig, out_dir, "diffing")
