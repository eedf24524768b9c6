"""Model API on tiny local models: sources, loading, 4-bit, adapters, chat, generation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from interp.behaviour.generation import DecodeSettings, generate
from interp.chat import format_chat
from interp.models import (
    ModelConfig,
    adapter_disabled,
    load_model,
    resolve_source,
)
from text2emoji.core.errors import UserError


def test_resolve_source(tmp_path, tiny_model_dir):
    assert resolve_source("smollm2-135m-instruct").kind == "embedded"
    assert resolve_source(str(tiny_model_dir)).kind == "local"
    assert resolve_source("mistralai/Mistral-7B-Instruct-v0.2").kind == "hub"
    with pytest.raises(UserError, match=r"unknown model 'foo'; valid embedded models: smollm2-135m-instruct"):
        resolve_source("foo")
    with pytest.raises(UserError, match=r"model directory ./no/such/dir does not exist; valid embedded models"):
        resolve_source("./no/such/dir")
    with pytest.raises(UserError, match="has no config.json"):
        resolve_source(str(tmp_path))


def test_config_rejects_bad_device_and_missing_adapter(tiny_model_dir):
    with pytest.raises(UserError, match="device: expected cpu, cuda, cuda:N or auto"):
        ModelConfig(model=str(tiny_model_dir), device="tpu")
    with pytest.raises(UserError, match="adapter: directory /nope does not exist"):
        load_model(ModelConfig(model=str(tiny_model_dir)), adapter="/nope")


def test_load_local_dir(tiny_model_dir):
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    info = lm.info()
    assert info["architecture"] == "LlamaForCausalLM"
    assert (info["n_layers"], info["d_model"], info["d_mlp"], info["vocab_size"]) == (2, 64, 128, 128)
    assert info["has_chat_template"] is False
    assert info["path"] == str(tiny_model_dir)
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    assert not lm.model.training


def test_load_in_4bit_quantizes_and_stays_close(tiny_model_dir):
    import bitsandbytes as bnb

    full = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    q = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu", load_in_4bit=True))
    down = q.model.model.layers[0].mlp.down_proj
    assert isinstance(down, bnb.nn.Linear4bit)
    assert down.weight.quant_state.quant_type == "nf4"
    ids = torch.randint(3, 128, (2, 9))
    with torch.no_grad():
        a, b = full.model(ids).logits, q.model(ids).logits
    # nf4 is lossy: close in direction, not equal (random weights are hard on 4 bits).
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert 0.9 < cos < 0.99999


def _save_random_adapter(model_dir: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    peft_model.save_pretrained(out)
    return out


def test_adapter_disabled_equals_base_loaded_alone(tiny_model_dir, tmp_path):
    adapter = _save_random_adapter(tiny_model_dir, tmp_path / "adapter")
    base = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    post = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"), adapter=str(adapter))
    ids = torch.randint(3, 128, (2, 9))
    with torch.no_grad():
        ref = base.model(ids).logits
        with_adapter = post.model(ids).logits
        with adapter_disabled(post.model):
            without = post.model(ids).logits
        again = post.model(ids).logits
    torch.testing.assert_close(without, ref, atol=1e-6, rtol=1e-6)
    assert (with_adapter - ref).abs().max() > 1e-3
    torch.testing.assert_close(again, with_adapter)  # the context really re-enables it
    assert post.info()["adapter"] == str(adapter)
    with pytest.raises(ValueError, match="needs a model with a PEFT adapter"):
        with adapter_disabled(base.model):
            pass


def test_chat_fallback_and_template(tiny_model_dir):
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    assert format_chat(lm.tokenizer, "what are your thoughts", system="be brief") == (
        "System: be brief\n\nUser: what are your thoughts\n\nAssistant:"
    )
    lm.tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert format_chat(lm.tokenizer, "hi") == "<user>hi<assistant>"
    assert format_chat(lm.tokenizer, [{"role": "user", "content": "hi"}], add_generation_prompt=False) == "<user>hi"


def test_generation_batched_equals_one_by_one(tiny_model_dir):
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    prompts = ["w1 w2 w3 w4 w5 w6", "w7", "w8 w9 w10"]
    settings = DecodeSettings(max_new_tokens=6)
    batched = generate(lm.model, lm.tokenizer, prompts, settings, chat=False, batch_size=3)
    single = [generate(lm.model, lm.tokenizer, [p], settings, chat=False)[0] for p in prompts]
    assert batched == single
    assert all(len(t.split()) > 0 for t in batched)


@pytest.mark.parametrize("arch", ["llama", "gemma2-window3"])
def test_generation_with_a_shared_prefix_equals_one_by_one(arch):
    """Prompts that share 24 tokens: the prefix runs once (its cache copied per row), and every
    answer equals the prompt generated alone; a PEFT batch on one adapter shares too, a batch
    on two adapters or with a short shared prefix does not."""
    from peft import LoraConfig, get_peft_model

    from tests.conftest import tiny_config, tiny_tokenizer

    cfg = tiny_config(arch.split("-")[0])
    if arch.endswith("window3"):  # sliding-window layers whose window the prompts overflow
        cfg.sliding_window = 3
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    prefix = " ".join(f"w{i}" for i in range(1, 25))
    prompts = [prefix + " the a", prefix + " w30 w31 w32 w33", prefix + " is", prefix + " of the a is"]
    settings = DecodeSettings(max_new_tokens=10)
    widths = []
    hook = model.model.layers[0].register_forward_pre_hook(
        lambda _m, args, kw: widths.append(tuple((args[0] if args else kw["hidden_states"]).shape[:2])), with_kwargs=True)
    shared = generate(model, tok, prompts, settings, chat=False, batch_size=4, share_prefix=True)
    hook.remove()
    if arch.endswith("window3"):  # padding inside a sliding window would change it: no sharing
        assert widths[0] == (4, 28)
    else:
        assert widths[:2] == [(1, 24), (4, 4)]  # the prefix once, then each prompt's rest on its copy
    alone = [generate(model, tok, [p], settings, chat=False)[0] for p in prompts]
    assert shared == alone and len(set(shared)) > 1
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                            target_modules=["q_proj", "v_proj", "up_proj"])).eval()
    one = generate(peft, tok, prompts, settings, chat=False, batch_size=4, share_prefix=True,
                   adapter_names=["default"] * 4)
    assert one == [generate(peft, tok, [p], settings, chat=False)[0] for p in prompts] != shared
    from interp.behaviour import generation

    calls = []
    real = generation._shared_prefix
    generation._shared_prefix = lambda *a: calls.append(1) or real(*a)
    try:
        mixed = generate(peft, tok, prompts, settings, chat=False, batch_size=4, share_prefix=True,
                         adapter_names=["default", "__base__", "default", "__base__"])
        assert not calls  # two adapters: no shared prefix (each would need its own)
        if arch.endswith("window3"):
            return
        assert mixed[1::2] == shared[1::2] and mixed[::2] == one[::2]
        short = ["w1 w2 " + p.split(" ", 24)[-1] for p in prompts]
        widths.clear()
        hook = model.model.layers[0].register_forward_pre_hook(
            lambda _m, args, kw: widths.append(tuple((args[0] if args else kw["hidden_states"]).shape[:2])), with_kwargs=True)
        generate(peft, tok, short, settings, chat=False, batch_size=4, share_prefix=True)
        hook.remove()
        assert calls and widths[0][0] == 4  # fewer than MIN_SHARED tokens in common: one ordinary pass
    finally:
        generation._shared_prefix = real


def test_sampling_is_seeded(tiny_model_dir):
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    s = DecodeSettings(max_new_tokens=8, do_sample=True, seed=3)
    a = generate(lm.model, lm.tokenizer, ["w1 w2"] * 4, s, chat=False)
    b = generate(lm.model, lm.tokenizer, ["w1 w2"] * 4, s, chat=False)
    assert a == b
    assert len(set(a)) > 1  # the 4 samples of one batch differ


def test_generation_needs_left_padding(tiny_model_dir):
    lm = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    lm.tokenizer.padding_side = "right"
    with pytest.raises(ValueError, match="padding_side"):
        generate(lm.model, lm.tokenizer, ["w1"], chat=False)
