"""Figures draw emoji glyphs in colour (where the emoji font is installed) and come from
results files alone."""

from __future__ import annotations

import numpy as np
import pytest

from text2emoji import figures


def test_emoji_glyphs_are_drawn_in_colour():
    if figures.emoji_font_path() is None:
        pytest.skip("no colour emoji font (make setup installs fonts-noto-color-emoji where apt is available)")
    for e in ["🎉", "🥳", "❤️", "👍🏽", "🇫🇷"]:
        g = figures.emoji_glyph(e)
        assert g is not None and g.shape[2] == 4 and g.shape[0] > 50, e
        rgb = g[..., :3][g[..., 3] > 200].astype(int)
        assert len(rgb) > 500 and (rgb.max(1) - rgb.min(1)).mean() > 30, e  # coloured, not grey


def test_emoji_prob_figure_places_glyphs(tmp_path):
    import json

    tr = {"traits": {t: {"emojis": ["🎉", "😊"], "any_emoji_pre": [-5.0, -6.0], "any_emoji_post": [-4.0, -7.0],
                         "logit_lens_pre": [-9.0, -6.0], "logit_lens_post": [-8.0, -5.0]}
                     for t in ("openness", "neuroticism")}}
    (tmp_path / "trace.json").write_text(json.dumps(tr), encoding="utf-8")
    paths = figures.draw_trace(tmp_path)
    assert {p.name for p in paths} == {"emoji_prob.pdf", "emoji_prob.png", "logit_lens.pdf", "logit_lens.png"}
    from PIL import Image

    im = np.asarray(Image.open(tmp_path / "emoji_prob.png").convert("RGB")).astype(int)
    bottom = im[int(im.shape[0] * 0.8):]
    # 🎉 and 😊 are yellow/orange: saturated pixels under the axis only if glyphs were drawn
    saturated = ((bottom.max(-1) - bottom.min(-1)) > 80).sum()
    assert saturated > 50 if figures.emoji_font_path() else saturated >= 0
