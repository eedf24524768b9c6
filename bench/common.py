"""Shared pieces of the benchmarks: models of real shapes (embedded weights or random ones),
opinion-QA-like prompts of 60-140 tokens, timing and memory readings. Every benchmark prints
one JSON object whose ratios were measured within the same run."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Shapes of the real models (from their configs); speed does not depend on weight values.
SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, tie_word_embeddings=False),
}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def build_model(model: str, device: str, dtype: torch.dtype, load_in_4bit: bool = False) -> Any:
    """The embedded model (``embedded``) or a random-weight model of a real shape."""
    from interp.models import ModelConfig, load_model

    if model == "embedded":
        return load_model(ModelConfig(device=device, dtype=str(dtype).removeprefix("torch."),
                                      load_in_4bit=load_in_4bit)).model
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[model], pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        m = LlamaForCausalLM(cfg).to(dtype)
    if load_in_4bit:  # quantize the random weights the way from_pretrained would
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            m.save_pretrained(d)
            del m
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=dtype)
            m = LlamaForCausalLM.from_pretrained(d, quantization_config=q, dtype=dtype, device_map={"": device})
    return m.eval()


def add_adapters(model: Any, n: int, r: int = 64) -> Any:
    """``n`` LoRA adapters (random B so they change the output) named trait0..trait{n-1}."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = LoraConfig(r=r, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    peft_model = get_peft_model(model, cfg, adapter_name="trait0")
    for i in range(1, n):
        peft_model.add_adapter(f"trait{i}", cfg)
    return peft_model.eval()


def prompts(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """``n`` token-id prompts of 60-140 tokens (opinion-QA-like lengths)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(60, 141, (n,), generator=g).tolist()
    return [torch.randint(3, vocab, (k,), generator=g).tolist() for k in lengths]


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls (seconds), synchronizing CUDA."""
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(obj: dict[str, Any]) -> None:
    obj = {"device": device_name(), "torch": torch.__version__, **obj}
    print(json.dumps(obj, indent=2))
