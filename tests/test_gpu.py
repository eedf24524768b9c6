"""CUDA code paths on tiny models (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from interp.hooks import record_activations
from interp.models import ModelConfig, load_model

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("load_in_4bit", [False, True])
def test_cuda_load_and_hook_post(tiny_model_dir, load_in_4bit):
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cuda", load_in_4bit=load_in_4bit))
    assert lm.device.type == "cuda"
    assert lm.info()["dtype"] == "bfloat16"
    ids = torch.randint(3, 128, (2, 7), device="cuda")
    down = lm.model.model.layers[-1].mlp.down_proj
    raw = {}
    h = down.register_forward_pre_hook(lambda m, a: raw.setdefault("x", a[0].detach().clone()))
    try:
        with torch.no_grad(), record_activations(lm.model, ["blocks.-1.mlp.hook_post"]) as acts:
            lm.model(ids)
    finally:
        h.remove()
    torch.testing.assert_close(acts["blocks.1.mlp.hook_post"][0], raw["x"], atol=0, rtol=0)
