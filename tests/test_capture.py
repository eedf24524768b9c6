"""Activation capture: every backend equals a raw torch hook (float32, 1e-5), a padded batch
equals the prompts run one by one, adapter off equals the base loaded alone, results stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.capture import BACKENDS, ActivationFile, capture, encode, load_activations
from interp.models import ModelConfig, adapter_disabled, load_model

PROMPTS = ["the a is of", "w1 w2", "what are your thoughts on w3 w4 w5 w6", "i", "you w9 w10"]
ANSWERS = ["w1 w2 w3", "the", "w7 w8", "w11 w12 w13 w14", "a"]


def raw_hook_site(model, texts, tokenizer, answers=None):
    """Reference: the input of the last down_proj, each prompt alone, no padding, via a bare
    torch pre-hook (written here, independent of interp.hooks)."""
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    down = root.model.layers[-1].mlp.down_proj
    out = []
    for i, t in enumerate(texts):
        ids = tokenizer(t)["input_ids"]
        if answers is not None:
            ids = ids + tokenizer(answers[i], add_special_tokens=False)["input_ids"]
        seen = []
        h = down.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0].detach()))
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]))
        finally:
            h.remove()
        out.append(seen[0][0].float().numpy())
    return out


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_equal_raw_hook_every_position(tiny_lm, backend):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    ref = raw_hook_site(model, PROMPTS, tok)
    last = capture(model, tok, PROMPTS, backend=backend, batch_size=3)
    np.testing.assert_allclose(last.activations, np.stack([r[-1] for r in ref]), atol=1e-5, rtol=0)
    assert last.site == "blocks.1.mlp.hook_post"
    allpos = capture(model, tok, PROMPTS, backend=backend, position="all", batch_size=3)
    for i, r in enumerate(ref):
        np.testing.assert_allclose(allpos.prompt(i), r, atol=1e-5, rtol=0)
    ref_ans = raw_hook_site(model, PROMPTS, tok, answers=ANSWERS)
    mean = capture(model, tok, PROMPTS, backend=backend, position="mean", answers=ANSWERS, batch_size=2)
    for i, r in enumerate(ref_ans):
        n_ans = len(tok(ANSWERS[i], add_special_tokens=False)["input_ids"])
        np.testing.assert_allclose(mean.activations[i], r[-n_ans:].mean(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_batch_equals_one_by_one(tiny_lm, backend):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    batched = capture(model, tok, PROMPTS, backend=backend, batch_size=len(PROMPTS)).activations
    single = capture(model, tok, PROMPTS, backend=backend, batch_size=1).activations
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("site", ["blocks.0.hook_resid_post", "blocks.-1.hook_mlp_out", "ln_final.hook_normalized"])
def test_other_sites_agree_across_backends(tiny_lm, site):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    ref = capture(model, tok, PROMPTS, site=site, backend="torch").activations
    for backend in ("nnsight", "transformer-lens"):
        got = capture(model, tok, PROMPTS, site=site, backend=backend).activations
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0, err_msg=backend)


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                           target_modules=["q_proj", "up_proj", "gate_proj", "down_proj"]))
    d = tmp_path_factory.mktemp("lora")
    lora.save_pretrained(d)
    return d


@pytest.mark.parametrize("backend", BACKENDS)
def test_adapter_disabled_equals_base_alone(tiny_model_dir, tiny_lm, lora_dir, backend):
    peft_lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(lora_dir))
    tok = peft_lm.tokenizer
    base = capture(tiny_lm.model, tok, PROMPTS, backend=backend).activations
    with adapter_disabled(peft_lm.model):
        pre = capture(peft_lm.model, tok, PROMPTS, backend=backend).activations
    post = capture(peft_lm.model, tok, PROMPTS, backend=backend).activations
    np.testing.assert_allclose(pre, base, atol=1e-5, rtol=0)
    assert np.abs(post - base).max() > 1e-3  # the adapter is live in the backend
    ref_post = raw_hook_site(peft_lm.model, PROMPTS, tok)
    np.testing.assert_allclose(post, np.stack([r[-1] for r in ref_post]), atol=1e-5, rtol=0)


def test_merged_model_equals_adapter_model(tiny_model_dir, lora_dir):
    peft_lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(lora_dir))
    tok = peft_lm.tokenizer
    post = capture(peft_lm.model, tok, PROMPTS).activations
    merged = peft_lm.model.merge_and_unload()
    for backend in BACKENDS:
        np.testing.assert_allclose(capture(merged, tok, PROMPTS, backend=backend).activations, post, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_4bit_model_backends_equal_raw_hook(tiny_model_dir, backend):
    import bitsandbytes as bnb

    q = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu", load_in_4bit=True))
    assert isinstance(q.model.model.layers[-1].mlp.down_proj, bnb.nn.Linear4bit)
    ref = raw_hook_site(q.model, PROMPTS, q.tokenizer)
    got = capture(q.model, q.tokenizer, PROMPTS, backend=backend, batch_size=2).activations
    np.testing.assert_allclose(got, np.stack([r[-1] for r in ref]), atol=1e-5, rtol=0)


def test_transformer_lens_backend_restores_attention(tiny_lm):
    before = tiny_lm.model.config._attn_implementation
    capture(tiny_lm.model, tiny_lm.tokenizer, PROMPTS[:2], backend="transformer-lens")
    assert tiny_lm.model.config._attn_implementation == before


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_streams_to_file_in_batches(tiny_lm, tmp_path, suffix, monkeypatch):
    """Rows go to a memory-mapped file batch by batch; each forward sees at most batch_size
    prompts; the file holds exactly what the in-memory capture returns."""
    import interp.capture as cap

    widths = []
    real = cap._forward_torch

    def spy(model, ids, *a):
        widths.append(ids.shape[0])
        return real(model, ids, *a)

    monkeypatch.setitem(cap._FORWARD, "torch", spy)
    prompts = PROMPTS * 5
    mem = capture(tiny_lm.model, tiny_lm.tokenizer, prompts, batch_size=4).activations
    path = tmp_path / f"acts{suffix}"
    res = capture(tiny_lm.model, tiny_lm.tokenizer, prompts, batch_size=4, out=path)
    assert max(widths) == 4 and sum(widths) == 2 * len(prompts)
    assert res.path == path and not list(tmp_path.glob(".*partial"))
    np.testing.assert_array_equal(load_activations(path), mem)
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            assert f.get_tensor("activations").dtype == torch.float32
        allp = capture(tiny_lm.model, tiny_lm.tokenizer, prompts, position="all", out=tmp_path / "all.safetensors")
        with safe_open(str(tmp_path / "all.safetensors"), "np") as f:
            np.testing.assert_array_equal(f.get_tensor("offsets"), allp.offsets)
            np.testing.assert_array_equal(f.get_tensor("activations"), allp.activations)


def test_failed_capture_keeps_existing_file(tiny_lm, tmp_path, monkeypatch):
    import interp.capture as cap

    path = tmp_path / "acts.npy"
    np.save(path, np.ones((1, 1), dtype=np.float32))
    calls = []

    def boom(model, ids, *a):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("interrupted")
        return real(model, ids, *a)

    real = cap._forward_torch
    monkeypatch.setitem(cap._FORWARD, "torch", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        capture(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, batch_size=2, out=path)
    np.testing.assert_array_equal(np.load(path), np.ones((1, 1)))
    assert not list(tmp_path.glob(".*partial"))


def test_bad_arguments(tiny_lm, tmp_path):
    with pytest.raises(ValueError, match="ragged.*safetensors"):
        capture(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, position="all", out=tmp_path / "a.npy")
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        capture(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, backend="jax")
    with pytest.raises(ValueError, match="unknown position"):
        capture(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, position="first")
    with pytest.raises(ValueError, match="must end in .npy or .safetensors"):
        ActivationFile(tmp_path / "x.pt", 1, 1)
    with pytest.raises(ValueError, match="one answer per prompt"):
        encode(tiny_lm.tokenizer, PROMPTS, answers=["a"])
