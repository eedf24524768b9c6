"""Figures of the dataset's quality evidence, drawn only from ``quality.json``'s content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from text2emoji.runs import atomic_path

# Okabe-Ito: a colour-blind-safe palette, one colour per trait in TRAITS order.
TRAIT_COLORS = {
    "openness": "#E69F00",
    "conscientiousness": "#0072B2",
    "extraversion": "#D55E00",
    "agreeableness": "#009E73",
    "neuroticism": "#CC79A7",
}


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
