"""Activation capture of one hook site vs a bare forward pass of the same batch, and vs
TransformerLens' ``run_with_cache`` of every hook. DESIGN target: at most 1.10x the bare
forward; far less memory than caching everything.

    python bench/capture.py [--model embedded|smollm2-135m|llama-2-7b] [--n-prompts 32]
        [--batch-size 8] [--site blocks.-1.mlp.hook_post] [--device cpu]

Arms (same prompts, same batches): ``bare`` = ``model(ids, mask)`` with all logits (what a
forward pass costs a user), ``bare_last_logits`` = the same with ``logits_to_keep=1`` (what
capture runs, without the hook), ``capture`` = :func:`interp.capture.capture` end to end
(tokenized ids in, float32 [n, d] out), ``cache_all`` = ``TransformerBridge.run_with_cache``
with every hook. Memory: bytes of activations held (exact), and CUDA peak allocation where a
GPU is used.
"""

from __future__ import annotations

import argparse

import torch
from common import build_model, emit, prompts, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--site", default="blocks.-1.mlp.hook_post")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-cache-all", action="store_true", help="skip the run_with_cache arm (large models)")
    a = ap.parse_args()
    from interp.capture import Encoded, capture, pad_left, transformer_bridge

    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    model = build_model(a.model, a.device, dtype)
    ps = prompts(a.n_prompts, model.config.vocab_size)
    order = sorted(range(len(ps)), key=lambda i: len(ps[i]))  # capture batches by length too
    batches = [pad_left([ps[i] for i in order[s:s + a.batch_size]], 0, a.device) for s in range(0, len(ps), a.batch_size)]
    cuda = a.device.startswith("cuda")

    def peak(fn) -> tuple[float, float | None]:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t = timed(fn, a.repeat)
        return t, (torch.cuda.max_memory_allocated() / 2**20 if cuda else None)

    @torch.inference_mode()
    def bare() -> None:
        for ids, mask, pos in batches:
            model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)

    @torch.inference_mode()
    def bare_last() -> None:
        for ids, mask, pos in batches:
            model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1)

    enc = [Encoded(p) for p in ps]
    held = {}

    @torch.inference_mode()
    def cap() -> None:
        held["capture"] = capture(model, None, enc, site=a.site, batch_size=a.batch_size).activations.nbytes

    bare()
    t_bare, m_bare = peak(bare)
    t_last, m_last = peak(bare_last)
    t_cap, m_cap = peak(cap)
    out = {
        "benchmark": "capture", "model": a.model, "site": a.site, "n_prompts": len(ps), "batch_size": a.batch_size,
        "seconds": {"bare": round(t_bare, 4), "bare_last_logits": round(t_last, 4), "capture": round(t_cap, 4)},
        "capture_over_bare": round(t_cap / t_bare, 3),
        "capture_over_bare_last_logits": round(t_cap / t_last, 3),
        "held_bytes": {"capture": held["capture"]},
        "cuda_peak_mib": {"bare": m_bare, "bare_last_logits": m_last, "capture": m_cap} if cuda else None,
    }
    if not a.skip_cache_all:
        from interp.models import load_tokenizer

        # the bridge wants a tokenizer at boot; ids are passed in, so the embedded one serves
        with transformer_bridge(model, load_tokenizer("smollm2-135m-instruct")) as bridge:
            @torch.inference_mode()
            def cache_all() -> None:
                total = 0
                for ids, mask, pos in batches:
                    _, cache = bridge.run_with_cache(ids, attention_mask=mask, position_ids=pos)
                    total += sum(v.numel() * v.element_size() for v in cache.values())
                    del cache
                held["cache_all_per_batch_mean"] = total // len(batches)
                held["cache_all_total"] = total

            t_all, m_all = peak(cache_all)
        out["seconds"]["cache_all"] = round(t_all, 4)
        out["cache_all_over_capture_time"] = round(t_all / t_cap, 2)
        out["held_bytes"].update(cache_all_total=held["cache_all_total"])
        out["cache_all_over_capture_bytes"] = round(held["cache_all_total"] / held["capture"], 1)
        if cuda:
            out["cuda_peak_mib"]["cache_all"] = m_all
    emit(out)


if __name__ == "__main__":
    main()
