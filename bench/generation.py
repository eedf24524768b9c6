"""Batched generation (left padding, KV cache, all trait adapters mixed in one batch) vs one
``generate`` call per prompt, on the same prompts. DESIGN target: at least 10x on 2 CPU cores.

    python bench/generation.py [--model embedded|smollm2-135m|llama-2-7b] [--n-prompts 16]
        [--adapters 5] [--batch-size 16] [--max-new-tokens 32] [--load-in-4bit] [--device cpu]

Greedy; ``min_new_tokens = max_new_tokens`` so both arms generate exactly the same number of
tokens. Prints JSON with tokens/s of each arm and their ratio.
"""

from __future__ import annotations

import argparse

import torch
from common import add_adapters, build_model, emit, prompts, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--adapters", type=int, default=5, help="LoRA adapters mixed in the batch (0: none)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--load-in-4bit", action="store_true")
    ap.add_argument("--per-prompt-sample", type=int, default=4,
                    help="prompts timed one at a time (their mean time per prompt is extrapolated)")
    a = ap.parse_args()
    from interp.capture import pad_left

    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    model = build_model(a.model, a.device, dtype, a.load_in_4bit)
    vocab = model.config.vocab_size
    if a.adapters:
        model = add_adapters(model, a.adapters)
    ps = prompts(a.n_prompts, vocab)
    names = [f"trait{i % a.adapters}" for i in range(len(ps))] if a.adapters else None
    kw = dict(max_new_tokens=a.max_new_tokens, min_new_tokens=a.max_new_tokens, do_sample=False, pad_token_id=0)

    @torch.inference_mode()
    def batched() -> None:
        for s in range(0, len(ps), a.batch_size):
            ids, mask, _ = pad_left(ps[s:s + a.batch_size], 0, a.device)
            extra = {"adapter_names": names[s:s + a.batch_size]} if names else {}
            model.generate(input_ids=ids, attention_mask=mask, **kw, **extra)

    sample = ps[: a.per_prompt_sample]

    @torch.inference_mode()
    def one_by_one() -> None:
        for i, p in enumerate(sample):
            if names:
                model.set_adapter(names[i])
            model.generate(input_ids=torch.tensor([p], device=a.device), **kw)

    batched()  # warm-up (kernels, allocator)
    t_batched = timed(batched)
    t_single = timed(one_by_one) / len(sample) * len(ps)
    n_tokens = len(ps) * a.max_new_tokens
    emit({
        "benchmark": "generation", "model": a.model, "load_in_4bit": a.load_in_4bit, "adapters": a.adapters,
        "n_prompts": len(ps), "batch_size": a.batch_size, "new_tokens_per_prompt": a.max_new_tokens,
        "batched_tokens_per_s": round(n_tokens / t_batched, 1),
        "per_prompt_tokens_per_s": round(n_tokens / t_single, 1),
        "speedup": round(t_single / t_batched, 2),
    })


if __name__ == "__main__":
    main()
