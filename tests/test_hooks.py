"""Hook-site resolver and recording: values checked against hand computations and raw hooks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interp.hooks import edit_site, record_activations, resolve_site
from tests.conftest import TINY, tiny_model

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"]


def _ids(batch=2, pos=7):
    return torch.randint(3, TINY["vocab_size"], (batch, pos))


@pytest.mark.parametrize("arch", ARCHS)
def test_mlp_hook_post_equals_hand_computation(arch):
    """hook_post = act(gate(x)) * up(x), computed by hand from the MLP's input."""
    model = tiny_model(arch)
    mlp = model.model.layers[-1].mlp
    seen = {}
    handle = mlp.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    try:
        with record_activations(model, ["blocks.-1.mlp.hook_post", "blocks.-1.mlp.hook_pre"]) as acts:
            model(_ids())
    finally:
        handle.remove()
    x = seen["x"]
    act = F.silu if not arch.startswith("gemma") else (lambda t: F.gelu(t, approximate="tanh"))
    gate = x @ mlp.gate_proj.weight.T
    expected = act(gate) * (x @ mlp.up_proj.weight.T)
    (post,) = acts[f"blocks.{TINY['num_hidden_layers'] - 1}.mlp.hook_post"]
    (pre,) = acts[f"blocks.{TINY['num_hidden_layers'] - 1}.mlp.hook_pre"]
    assert post.shape == (2, 7, TINY["intermediate_size"])
    torch.testing.assert_close(post, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pre, gate, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_residual_sites_chain(arch):
    """resid_post(L) == resid_pre(L+1); attn_out + mlp_out add up to the layer's update; the
    final norm of the last resid_post is ln_final."""
    model = tiny_model(arch)
    sites = [
        "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre",
        "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post",
        "ln_final.hook_normalized",
    ]
    with record_activations(model, sites) as acts:
        out = model(_ids(), output_hidden_states=True)
    a = {k: v[0] for k, v in acts.items()}
    torch.testing.assert_close(a["blocks.0.hook_resid_post"], a["blocks.1.hook_resid_pre"])
    update = a["blocks.1.hook_resid_post"] - a["blocks.1.hook_resid_pre"]
    torch.testing.assert_close(update, a["blocks.1.hook_attn_out"] + a["blocks.1.hook_mlp_out"], atol=1e-5, rtol=1e-4)
    # transformers' own hidden_states: [embeddings, after layer 0, after layer 1 (normed)]
    torch.testing.assert_close(a["blocks.0.hook_resid_pre"], out.hidden_states[0])
    torch.testing.assert_close(a["ln_final.hook_normalized"], out.hidden_states[-1])
    logits = a["ln_final.hook_normalized"] @ model.lm_head.weight.T
    if arch == "llama":
        torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)


def test_negative_layers_and_errors(tiny_llama):
    assert resolve_site(tiny_llama, "blocks.-1.mlp.hook_post").name == "blocks.1.mlp.hook_post"
    assert resolve_site(tiny_llama, "blocks.-2.hook_resid_pre").name == "blocks.0.hook_resid_pre"
    assert resolve_site(tiny_llama, "blocks.-1.mlp.hook_post").module is tiny_llama.model.layers[1].mlp.down_proj
    with pytest.raises(ValueError, match=r"layer 2 out of range for 2 layers \[-2, 1\]"):
        resolve_site(tiny_llama, "blocks.2.mlp.hook_post")
    with pytest.raises(ValueError, match="unknown hook site 'blocks.0.mlp.hook_mid'"):
        resolve_site(tiny_llama, "blocks.0.mlp.hook_mid")


def test_edit_site_equals_raw_pre_hook_on_down_proj(tiny_llama):
    """edit_site at mlp.hook_post (negative layer) == a raw forward pre-hook on down_proj."""
    ids = _ids()

    def double_some(x):
        x = x.clone()
        x[..., 3:9] *= 2.0
        return x

    down = tiny_llama.model.layers[1].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda _m, args: (double_some(args[0]),))
    try:
        want = tiny_llama(ids).logits
    finally:
        handle.remove()
    with edit_site(tiny_llama, "blocks.-1.mlp.hook_post", double_some) as hp:
        got = tiny_llama(ids).logits
    assert hp.name == "blocks.1.mlp.hook_post" and hp.module is down
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert (got - tiny_llama(ids).logits).abs().max() > 1e-4  # the edit did something


def test_edit_site_equals_raw_forward_hook_on_layer(tiny_llama):
    """edit_site at hook_resid_post == a raw forward hook on the decoder layer; at
    hook_resid_pre (input site, reached as a keyword or positional) == a raw pre-hook."""
    ids = _ids()
    layer = tiny_llama.model.layers[0]

    def scale(x):
        return x * 0.5 + 1.0

    def out_hook(_m, _args, output):
        return (scale(output[0]), *output[1:]) if isinstance(output, tuple) else scale(output)

    def in_hook(_m, args, kwargs):
        if args:
            return (scale(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": scale(kwargs["hidden_states"])}

    for site, register, hook in [("blocks.-2.hook_resid_post", layer.register_forward_hook, out_hook),
                                 ("blocks.-2.hook_resid_pre", None, in_hook)]:
        handle = register(hook) if register else layer.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            want = tiny_llama(ids).logits
        finally:
            handle.remove()
        with edit_site(tiny_llama, site, scale):
            got = tiny_llama(ids).logits
        torch.testing.assert_close(got, want, atol=0, rtol=0)
        assert (got - tiny_llama(ids).logits).abs().max() > 1e-4


def test_edit_site_is_removed_on_error(tiny_llama):
    ids = _ids()
    clean = tiny_llama(ids).logits
    down = tiny_llama.model.layers[1].mlp.down_proj
    with pytest.raises(RuntimeError, match="boom"):
        with edit_site(tiny_llama, "blocks.-1.mlp.hook_post", torch.zeros_like):
            assert len(down._forward_pre_hooks) == 1
            raise RuntimeError("boom")
    assert len(down._forward_pre_hooks) == 0
    torch.testing.assert_close(tiny_llama(ids).logits, clean, atol=0, rtol=0)


def test_edit_site_rejects_a_change_of_shape(tiny_llama):
    with edit_site(tiny_llama, "blocks.0.hook_mlp_out", lambda x: x[..., :3]):
        with pytest.raises(ValueError, match=r"edit at blocks.0.hook_mlp_out returned shape \(2, 7, 3\)"):
            tiny_llama(_ids())


def test_hooks_are_removed_even_on_error(tiny_llama):
    down = tiny_llama.model.layers[-1].mlp.down_proj
    with pytest.raises(RuntimeError, match="boom"):
        with record_activations(tiny_llama, ["blocks.-1.mlp.hook_post"]):
            assert len(down._forward_pre_hooks) == 1
            raise RuntimeError("boom")
    assert len(down._forward_pre_hooks) == 0


def test_one_tensor_per_forward_pass(tiny_llama):
    with record_activations(tiny_llama, ["blocks.0.hook_resid_post"]) as acts:
        tiny_llama(_ids(1, 3))
        tiny_llama(_ids(1, 5))
    assert [t.shape[1] for t in acts["blocks.0.hook_resid_post"]] == [3, 5]


def test_lora_model_sites_and_disabled_adapter_equals_base(tiny_llama):
    """Through a PEFT wrapper the site is the LoRA-wrapped down_proj's input; with the adapter
    disabled it equals the base model's value, and with it enabled it differs."""
    import copy

    from peft import LoraConfig, get_peft_model

    from interp.models import adapter_disabled

    base = copy.deepcopy(tiny_llama)
    lora = get_peft_model(
        tiny_llama,
        LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj", "q_proj"],
                   init_lora_weights=False),
    )
    ids = _ids()
    site = "blocks.-1.mlp.hook_post"
    with record_activations(base, [site]) as a_base:
        base(ids)
    with record_activations(lora, [site]) as a_post:
        lora(ids)
    with adapter_disabled(lora), record_activations(lora, [site]) as a_pre:
        lora(ids)
    key = "blocks.1.mlp.hook_post"
    torch.testing.assert_close(a_pre[key][0], a_base[key][0], atol=1e-6, rtol=1e-6)
    assert (a_post[key][0] - a_base[key][0]).abs().max() > 1e-3


def test_one_default_site():
    import inspect

    import interp.capture
    import interp.experiments
    import interp.hooks
    import interp.intervene
    import interp.neuron_analysis
    import interp.neurons

    assert interp.capture.DEFAULT_SITE is interp.hooks.DEFAULT_SITE == "blocks.-1.mlp.hook_post"
    for fn in (interp.intervene.intervention, interp.intervene.row_ablation, interp.intervene.neuron_means,
               interp.intervene.LastLayerScorer.__init__, interp.experiments.ablation_experiment,
               interp.experiments.ablation_generation, interp.experiments.ablate_trait,
               interp.experiments.patching_experiment, interp.neuron_analysis.analyse_neurons,
               interp.neurons.n_neurons, interp.capture.capture):
        assert inspect.signature(fn).parameters["site"].default is interp.hooks.DEFAULT_SITE, fn.__name__
