"""Hook sites resolved structurally on tiny random-weight decoders of many families.

Each family's table row names, by hand, the modules the sites must land on (the decoder layer
list, the MLP's output and input projections, the final norm), so the resolver is checked
against raw PyTorch hooks on modules it did not pick. Mechanics only: no downloads, 2 layers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from interp.hooks import edit_site, final_norm, n_layers, record_activations, resolve_site, unembed
from interp.neurons import n_neurons

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
GATED = dict(intermediate_size=128, num_key_value_heads=2, head_dim=16)


@dataclass(frozen=True)
class Family:
    model_type: str
    layers: str  # path of the decoder layer list, from the *ForCausalLM model
    down: str  # the MLP's output projection, from a decoder layer (its input = mlp.hook_post)
    pre: str | None  # module whose output is mlp.hook_pre (None: the site is a ValueError)
    norm: str  # the final norm, from the *ForCausalLM model
    # resid_post - resid_pre == attn_out + mlp_out (False where norms or multipliers sit
    # between the sublayers' outputs and the residual stream)
    additive: bool = True
    config: dict[str, Any] = field(default_factory=dict)


LLAMA_LIKE = dict(down="mlp.down_proj", pre="mlp.gate_proj", layers="model.layers", norm="model.norm")
FAMILIES = [
    Family("llama", **LLAMA_LIKE, config=GATED),
    Family("mistral", **LLAMA_LIKE, config=GATED),
    Family("qwen2", **LLAMA_LIKE, config=GATED),
    Family("qwen3", **LLAMA_LIKE, config=GATED),
    Family("gemma", **LLAMA_LIKE, config=GATED),
    Family("gemma2", **LLAMA_LIKE, additive=False, config=GATED),  # post-sublayer norms
    Family("gemma3_text", **LLAMA_LIKE, additive=False, config=GATED),
    Family("olmo", **LLAMA_LIKE, config=GATED),
    Family("olmo2", **LLAMA_LIKE, additive=False, config=GATED),  # post-sublayer norms
    Family("cohere", **LLAMA_LIKE, config=GATED),
    Family("stablelm", **LLAMA_LIKE, config=GATED),
    Family("granite", **LLAMA_LIKE, additive=False, config=GATED),  # residual_multiplier
    Family("phi3", "model.layers", "mlp.down_proj", None, "model.norm", config=GATED),  # fused gate_up_proj
    Family("phi", "model.layers", "mlp.fc2", "mlp.fc1", "model.final_layernorm", config=dict(intermediate_size=128)),
    Family("starcoder2", "model.layers", "mlp.c_proj", "mlp.c_fc", "model.norm", config=GATED),
    Family("persimmon", "model.layers", "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", "model.final_layernorm",
           config=dict(intermediate_size=128)),
    Family("gpt2", "transformer.h", "mlp.c_proj", "mlp.c_fc", "transformer.ln_f"),  # Conv1D projections
    Family("gpt_bigcode", "transformer.h", "mlp.c_proj", "mlp.c_fc", "transformer.ln_f"),
    Family("gpt_neo", "transformer.h", "mlp.c_proj", "mlp.c_fc", "transformer.ln_f",
           config=dict(attention_types=[[["global", "local"], 1]])),
    Family("gptj", "transformer.h", "mlp.fc_out", "mlp.fc_in", "transformer.ln_f", config=dict(rotary_dim=8)),
    Family("codegen", "transformer.h", "mlp.fc_out", "mlp.fc_in", "transformer.ln_f", config=dict(rotary_dim=8)),
    Family("gpt_neox", "gpt_neox.layers", "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", "gpt_neox.final_layer_norm",
           config=dict(intermediate_size=128)),
    Family("falcon", "transformer.h", "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", "transformer.ln_f"),
    Family("bloom", "transformer.h", "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", "transformer.ln_f"),
    Family("mpt", "transformer.blocks", "ffn.down_proj", "ffn.up_proj", "transformer.norm_f"),
    Family("opt", "model.decoder.layers", "fc2", "fc1", "model.decoder.final_layer_norm", config=dict(ffn_dim=128)),
    Family("xglm", "model.layers", "fc2", "fc1", "model.layer_norm", config=dict(ffn_dim=128)),
    Family("biogpt", "biogpt.layers", "fc2", "fc1", "biogpt.layer_norm", config=dict(intermediate_size=128)),
]


def _installed(model_type: str) -> bool:
    from transformers import CONFIG_MAPPING

    return model_type in CONFIG_MAPPING


def tiny(fam: Family):
    from transformers import AutoConfig, AutoModelForCausalLM

    if not _installed(fam.model_type):
        pytest.skip(f"transformers has no {fam.model_type}")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = AutoConfig.for_model(fam.model_type, **COMMON, **fam.config)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model.eval()


def _ids(batch: int = 2, pos: int = 6) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, pos))


def _forward(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module", params=FAMILIES, ids=[f.model_type for f in FAMILIES])
def family(request):
    fam = request.param
    return fam, tiny(fam)


def test_hook_post_and_resid_post_equal_raw_hooks(family):
    fam, model = family
    layer = model.get_submodule(fam.layers)[-1]
    down = layer.get_submodule(fam.down)
    raw: dict[str, torch.Tensor] = {}

    def read_post(_m, args):
        raw["post"] = args[0].detach().clone()

    def read_resid(_m, _args, out):
        raw["resid"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    handles = [down.register_forward_pre_hook(read_post), layer.register_forward_hook(read_resid)]
    ids = _ids()
    try:
        with record_activations(model, ["blocks.-1.mlp.hook_post", "blocks.-1.hook_resid_post"]) as acts:
            _forward(model, ids)
    finally:
        for h in handles:
            h.remove()
    assert resolve_site(model, "blocks.-1.mlp.hook_post").module is down
    post = acts["blocks.1.mlp.hook_post"][0]
    assert post.shape == (*ids.shape, n_neurons(model))  # [batch, pos, d_mlp], even where the
    # layer runs its MLP on [batch * pos, d] (OPT)
    torch.testing.assert_close(post.reshape(raw["post"].shape), raw["post"], atol=0, rtol=0)
    torch.testing.assert_close(acts["blocks.1.hook_resid_post"][0], raw["resid"], atol=0, rtol=0)
    assert n_layers(model) == 2


def test_final_norm_and_unembedding(family):
    fam, model = family
    norm = model.get_submodule(fam.norm)
    assert resolve_site(model, "ln_final.hook_normalized").module is norm
    assert final_norm(model) is norm
    assert unembed(model) is model.get_output_embeddings()


def test_edit_site_zeroing_a_neuron_equals_raw_pre_hook(family):
    fam, model = family
    down = model.get_submodule(fam.layers)[-1].get_submodule(fam.down)
    n = 5

    def zero(x):
        x = x.clone()
        x[..., n] = 0
        return x

    ids = _ids()
    clean = _forward(model, ids)
    handle = down.register_forward_pre_hook(lambda _m, args: (zero(args[0]), *args[1:]))
    try:
        want = _forward(model, ids)
    finally:
        handle.remove()
    with edit_site(model, "blocks.-1.mlp.hook_post", zero):
        got = _forward(model, ids)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert (got - clean).abs().max() > 0  # the neuron mattered
    torch.testing.assert_close(_forward(model, ids), clean, atol=0, rtol=0)  # hook gone


def test_mlp_hook_pre(family):
    fam, model = family
    if fam.pre is None:
        with pytest.raises(ValueError, match=rf"blocks.1.mlp.hook_pre is unavailable for model_type '{fam.model_type}'"):
            resolve_site(model, "blocks.-1.mlp.hook_pre")
        return
    module = model.get_submodule(fam.layers)[0].get_submodule(fam.pre)
    assert resolve_site(model, "blocks.0.mlp.hook_pre").module is module


def test_sublayer_outputs_add_up_to_the_residual_update(family):
    """Where the layer adds its sublayers' outputs to the residual stream as they are,
    resid_post - resid_pre == attn_out + mlp_out: the attention and MLP sites are the
    sublayers' own contributions (BLOOM's modules add the residual themselves: registry)."""
    fam, model = family
    if not fam.additive:
        pytest.skip(f"{fam.model_type} transforms sublayer outputs before adding them")
    sites = [f"blocks.0.{h}" for h in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")]
    with record_activations(model, sites) as acts:
        _forward(model, _ids())
    pre, post, attn, mlp = (acts[s][0] for s in sites)
    torch.testing.assert_close(post - pre, attn + mlp, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["mixtral", "qwen3_moe"])
def test_moe_mlp_is_a_clear_error(model_type):
    fam = Family(model_type, **LLAMA_LIKE, config=dict(GATED, num_local_experts=2, num_experts=2,
                                                       num_experts_per_tok=1, moe_intermediate_size=32))
    model = tiny(fam)
    with pytest.raises(ValueError, match=rf"model_type '{model_type}'.*none of down_proj.*mixture-of-experts"):
        resolve_site(model, "blocks.-1.mlp.hook_post")
    # what does not need the MLP still resolves
    assert resolve_site(model, "blocks.-1.hook_resid_post").module is model.model.layers[1]


def test_encoder_models_are_a_clear_error():
    from transformers import BertConfig, BertForMaskedLM, T5Config, T5ForConditionalGeneration

    bert = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64))
    with pytest.raises(ValueError, match=r"model_type 'bert'.*bert.encoder.layer.0 \(BertLayer\) has none of"):
        resolve_site(bert, "blocks.0.mlp.hook_post")
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16))
    with pytest.raises(ValueError, match=r"model_type 't5' is an encoder-decoder"):
        resolve_site(t5, "blocks.0.hook_resid_post")


def test_lora_on_conv1d_projections_is_seen_through():
    """GPT-2's c_proj is a Conv1D: through a LoRA wrapper the site is still its input, the
    width is its input width, and the disabled adapter gives the base model's values."""
    import copy

    from peft import LoraConfig, get_peft_model

    from interp.models import adapter_disabled

    model = tiny(next(f for f in FAMILIES if f.model_type == "gpt2"))
    base = copy.deepcopy(model)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["c_fc", "c_proj"], fan_in_fan_out=True,
                                            init_lora_weights=False))
    ids, site = _ids(), "blocks.-1.mlp.hook_post"
    with record_activations(base, [site]) as a_base:
        _forward(base, ids)
    with adapter_disabled(lora), record_activations(lora, [site]) as a_pre:
        _forward(lora, ids)
    torch.testing.assert_close(a_pre["blocks.1.mlp.hook_post"][0], a_base["blocks.1.mlp.hook_post"][0])
    assert n_neurons(lora) == 4 * 64


@pytest.mark.parametrize("model_type", ["gpt2", "phi3", "gpt_neox", "opt"])
def test_last_layer_scorer_on_other_families(model_type):
    """The cached last-layer scorer, which reads the final norm and the unembedding through
    the resolver, is exact here and reproduces full forward passes under an ablation."""
    from interp.intervene import LastLayerScorer, ablation_patch, intervention
    from interp.tracing import score_continuations

    model = tiny(next(f for f in FAMILIES if f.model_type == model_type))
    pairs = [([5, 6, 7, 8], [9, 10]), ([5, 6], [11]), ([12, 13, 14], [15, 16, 17])]
    scorer = LastLayerScorer(model, pairs)
    assert scorer.applicable
    patch = ablation_patch([1, 4, 9], "zero")
    with intervention(model, patch):
        full = np.array([s.total for s in score_continuations(model, pairs)])
    assert scorer.exact
    np.testing.assert_allclose(scorer.ablated(patch), full, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(scorer.reference, [s.total for s in score_continuations(model, pairs)], atol=1e-4)
