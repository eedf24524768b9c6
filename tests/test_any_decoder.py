"""``text2emoji activations`` on architectures outside the old six-name list: the command reads
the neuron activations that a raw hook on each family's own output projection sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_tokenizer
from text2emoji.cli import main

SMALL = dict(vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _families():
    from transformers import GPT2Config, GPTNeoXConfig, Phi3Config

    return {
        # config, the MLP output projection of the last layer, by hand
        "gpt_neox": (GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=64, **SMALL),
                     "gpt_neox.layers.1.mlp.dense_4h_to_h"),
        "phi3": (Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=64, **SMALL),
                 "model.layers.1.mlp.down_proj"),
        "gpt2": (GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, **SMALL), "transformer.h.1.mlp.c_proj"),
    }


@pytest.mark.parametrize("family", ["gpt_neox", "phi3", "gpt2"])
def test_activations_command_on_other_families(family, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    config, proj = _families()[family]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model_dir = tmp_path / family
    model.save_pretrained(model_dir)
    tok = tiny_tokenizer()
    tok.save_pretrained(model_dir)
    prompts = ["what are your thoughts on w1", "i w2 w3", "the a is of and to in it w4 w5"]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "acts.npy"
    assert main(["activations", "--model", str(model_dir), "--device", "cpu", "--prompts", str(tmp_path / "p.txt"),
                 "--out", str(out), "--batch-size", "2"]) == 0
    got = np.load(out)
    seen = []
    handle = model.get_submodule(proj).register_forward_pre_hook(lambda m, a: seen.append(a[0][0, -1].detach()))
    try:
        with torch.no_grad():
            for p in prompts:
                model(torch.tensor([tok(p)["input_ids"]]))
    finally:
        handle.remove()
    np.testing.assert_allclose(got, torch.stack(seen).numpy(), atol=1e-5)
