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
    model, tok = embedded_lm.model, embedded_lm.tokenizer
    prompts = ["I went for a walk this afternoon. 🎉", "Hey! How was your weekend?"]
    down = model.model.layers[-1].mlp.down_proj
    ref = []
    for p in prompts:
        ids = tok(p)["input_ids"]
        seen = []
        h = down.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0]))
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
        h.remove()
        ref.append(seen[0][0, -1].numpy())
    for backend in BACKENDS:
        got = capture(model, tok, prompts, backend=backend, batch_size=2).activations
        np.testing.assert_allclose(got, np.stack(ref), atol=1e-5, rtol=0, err_msg=backend)


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
