"""Capture backends, emoji tokens and the probe suite on the real embedded model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.capture import BACKENDS, capture
from interp.probes import load_probe_suite
from interp.tracing import emoji_token_ids

pytestmark = pytest.mark.slow


def test_backends_equal_raw_hook_on_the_embedded_model(embedded_lm):
    """Same padded batch into a bare torch pre-hook and into every backend: equal within 1e-5.
    Padded vs one by one: equal up to float32 rounding of SDPA over a different width
    (activations here reach |30|, so the bound is relative)."""
    from interp.capture import pad_left

    model, tok = embedded_lm.model, embedded_lm.tokenizer
    prompts = ["I went for a walk this afternoon. 🎉", "Hey! How was your weekend?", "Hi"]
    enc = [tok(p)["input_ids"] for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    ids, mask, pos = pad_left([enc[i] for i in order], tok.pad_token_id)
    down = model.model.layers[-1].mlp.down_proj

    def raw(attn: str) -> np.ndarray:
        before = model.config._attn_implementation
        model.set_attn_implementation(attn)
        seen = []
        h = down.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=pos)
        h.remove()
        model.set_attn_implementation(before)
        out = np.zeros((len(prompts), seen[0].shape[-1]), dtype=np.float32)
        out[order] = seen[0][:, -1].numpy()
        return out

    ref = raw(model.config._attn_implementation)
    # TransformerBridge always runs eager attention (its attention hooks need it): its raw
    # reference is the same model in eager mode; eager vs sdpa differ by float32 rounding only
    ref_eager = raw("eager")
    np.testing.assert_allclose(ref_eager, ref, atol=1e-4, rtol=1e-5)
    for backend in BACKENDS:
        got = capture(model, tok, prompts, backend=backend, batch_size=3).activations
        expect = ref_eager if backend == "transformer-lens" else ref
        np.testing.assert_allclose(got, expect, atol=1e-5, rtol=0, err_msg=backend)
    single = capture(model, tok, prompts, batch_size=1).activations
    np.testing.assert_allclose(single, ref, atol=1e-4, rtol=1e-5)


def test_suite_emojis_are_multi_token_and_round_trip(embedded_lm):
    tok = embedded_lm.tokenizer
    suite = load_probe_suite()
    assert len(suite.prompts) >= 17
    lengths = []
    for emojis in suite.trait_emojis.values():
        for e in emojis:
            for space in (False, True):
                ids = emoji_token_ids(tok, e, space)
                assert tok.decode(ids) == (" " if space else "") + e
                lengths.append(len(ids))
    assert max(lengths) >= 2  # byte-level BPE splits emojis: scoring must cover every token
