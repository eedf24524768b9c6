"""Batched generation: left padding, KV cache, greedy by default, seeded sampling on request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.chat import format_chat
from text2emoji.core.presets import BATCH_SIZE


@dataclass(frozen=True)
class DecodeSettings:
    """How answers are decoded; recorded next to every set of generations."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: DecodeSettings = DecodeSettings(),
    *,
    chat: bool = True,
    batch_size: int = BATCH_SIZE,
    adapter_names: Sequence[str] | None = None,
    add_special_tokens: bool | None = None,
    share_prefix: bool = False,
) -> list[str]:
    """Generate one answer per prompt, in batches.

    Args:
        model: a causal LM (plain or PEFT).
        tokenizer: its tokenizer; it must pad on the left (``load_model`` sets this) so that every
            prompt's last token sits at the same position and new tokens follow it directly.
        prompts: user messages (``chat=True``: wrapped in the chat template) or raw prompt text.
        settings: decoding settings; sampling is seeded per batch from ``settings.seed``.
        chat: format each prompt as one user turn with :func:`interp.chat.format_chat`.
        batch_size: prompts per ``generate`` call.
        add_special_tokens: whether the tokenizer adds its special tokens (BOS); default: only
            for raw text (``chat=False``). Pass False for prompts already chat-formatted.
        adapter_names: one PEFT adapter name per prompt (``"__base__"`` = adapters off), so that
            several trait adapters share one batch (peft's mixed-adapter inference).
        share_prefix: where a batch's prompts (all on one adapter) share their first
            ``MIN_SHARED`` tokens or more, run that prefix once and generate on a copy of its
            cache per row (:func:`_shared_prefix`), as when in-context prompts share their
            demonstrations. The same answers as without it up to float rounding; off for
            interventions that line their values up with the batch's positions, and never used
            on a model with sliding-window layers (the padding between prefix and rest would
            take up their window).

    Returns:
        The decoded continuations (special tokens removed), in prompt order.
    """
    if adapter_names is not None and len(adapter_names) != len(prompts):
        raise ValueError("adapter_names needs one name per prompt")
    if tokenizer.padding_side != "left":
        raise ValueError("generate() needs tokenizer.padding_side == 'left'")
    texts = [format_chat(tokenizer, p) for p in prompts] if chat else list(prompts)
    device = next(model.parameters()).device
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            # A chat template already holds its special tokens; raw text gets the tokenizer's.
            add_special_tokens=(not chat) if add_special_tokens is None else add_special_tokens,
        ).to(device)
        if settings.do_sample:
            torch.manual_seed(settings.seed + start)
        extra: dict[str, Any] = {}
        names = None if adapter_names is None else list(adapter_names[start : start + batch_size])
        if names is not None:
            extra["adapter_names"] = names
        if share_prefix and (names is None or len(set(names)) == 1) and not _windowed(model):
            from interp.tracing import _cache_name

            batch, cache = _shared_prefix(model, batch, tokenizer.pad_token_id, extra)
            if cache is not None:
                extra[_cache_name()] = cache
        ids = model.generate(
            **batch, **settings.generate_kwargs(), pad_token_id=tokenizer.pad_token_id, **extra
        )
        new = ids[:, batch["input_ids"].shape[1] :]
        out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


MIN_SHARED = 16  # tokens a batch's prompts must share before their prefix runs once


def _shared_prefix(model: Any, batch: Any, pad: int, extra: dict[str, Any]) -> tuple[Any, Any]:
    """The batch laid out as ``[shared prefix][left padding][rest of each prompt]`` and the
    prefix's KV cache repeated once per row (None, and the batch as it was, where the prompts
    share fewer than ``MIN_SHARED`` tokens). Positions come from the attention mask (padding
    counts no position), so every prompt sees exactly its own tokens at their own positions."""
    from interp.tracing import _cache_name, _cache_rows

    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows = [ids[r][mask[r].bool()].tolist() for r in range(ids.shape[0])]
    n = 0
    while n < min(len(x) for x in rows) - 1 and all(x[n] == rows[0][n] for x in rows):
        n += 1
    if n < MIN_SHARED:
        return batch, None
    device = ids.device
    prefix = torch.tensor([rows[0][:n]], device=device)
    kw = {"adapter_names": extra["adapter_names"][:1]} if "adapter_names" in extra else {}
    out = model(input_ids=prefix, use_cache=True, logits_to_keep=1, **kw)
    cache = _cache_rows(getattr(out, _cache_name()), [0] * len(rows), device)
    width = max(len(x) for x in rows) - n
    new_ids = torch.full((len(rows), n + width), pad, dtype=ids.dtype, device=device)
    new_mask = torch.zeros((len(rows), n + width), dtype=mask.dtype, device=device)
    for r, x in enumerate(rows):
        new_ids[r, :n], new_mask[r, :n] = prefix[0], 1
        new_ids[r, n + width - (len(x) - n):], new_mask[r, n + width - (len(x) - n):] = torch.tensor(x[n:]), 1
    return {"input_ids": new_ids, "attention_mask": new_mask}, cache


def _windowed(model: Any) -> bool:
    """Whether any layer attends over a sliding window: the window counts cache slots, padding
    in the middle of a row included, so a shared prefix would change what such a layer sees."""
    from interp.models import base_config

    cfg = base_config(model)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return getattr(cfg, "sliding_window", None) is not None or "sliding_attention" in (getattr(cfg, "layer_types", None) or [])
