"""Shared fixtures: seeding, tiny random-weight models of each supported architecture, a tiny
offline tokenizer, and the real embedded model (slow tests only)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

TINY = dict(
    hidden_size=64,
    intermediate_size=128,  # bitsandbytes' CPU nf4 kernel wants in_features % 64 == 0
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=128,
    max_position_embeddings=128,
)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def tiny_config(arch: str):
    from transformers import (
        Gemma2Config,
        GemmaConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    cls = {
        "llama": LlamaConfig,
        "mistral": MistralConfig,
        "qwen2": Qwen2Config,
        "qwen3": Qwen3Config,
        "gemma": GemmaConfig,
        "gemma2": Gemma2Config,
    }[arch]
    extra = {"hidden_act": "gelu_pytorch_tanh"} if arch.startswith("gemma") else {}
    return cls(**TINY, **extra, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_model(arch: str = "llama"):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=torch.float32)
    return model.eval()


def tiny_tokenizer():
    """A word-level tokenizer over a fixed vocabulary: offline and instant."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(100)] + list(
        "the a is of and to in it i you what are your thoughts on about".split()
    )
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>",
    )


@pytest.fixture
def tiny_llama():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama with a tokenizer: a 'local HF directory' for load_model."""
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The real embedded model's converted directory (fetched and converted on first use)."""
    from interp.embedded import fetch

    return fetch()


@pytest.fixture(scope="session")
def embedded_lm(embedded_dir):
    from interp.models import ModelConfig, load_model

    return load_model(ModelConfig(device="cpu"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
