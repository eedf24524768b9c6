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
        extra = {}
        if adapter_names is not None:
            extra["adapter_names"] = list(adapter_names[start : start + batch_size])
        ids = model.generate(
            **batch, **settings.generate_kwargs(), pad_token_id=tokenizer.pad_token_id, **extra
        )
        new = ids[:, batch["input_ids"].shape[1] :]
        out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return out
