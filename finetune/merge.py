"""Merge a trained LoRA adapter into a full-precision base, and measure logit drift.

QLoRA trains adapters on an nf4 base; merging into nf4 weights would re-quantize them, so the
adapter is merged into the float base instead. The merged model therefore differs from what
was trained (nf4 base + adapter) by the base's quantization error: :func:`logit_drift` measures
that difference on real prompts.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from interp.models import ModelConfig, load_model


def merge_adapter(model: str, adapter: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Load ``model`` in ``dtype``, apply ``adapter``, merge, and save an HF directory at ``out``."""
    lm = load_model(ModelConfig(model=model, dtype=dtype, device="cpu"), adapter=str(adapter))
    merged = lm.model.merge_and_unload()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    lm.tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


@torch.no_grad()
def logit_drift(model_a: Any, model_b: Any, tokenizer: Any, texts: Sequence[str]) -> dict[str, float]:
    """How far ``model_b``'s next-token distributions are from ``model_a``'s on ``texts``.

    Returns max and mean absolute logit difference, mean KL(a || b) per position, and the share
    of positions whose top-1 token agrees (padding excluded).
    """
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    la = model_a(**batch.to(next(model_a.parameters()).device)).logits.float().cpu()
    lb = model_b(**batch.to(next(model_b.parameters()).device)).logits.float().cpu()
    mask = batch["attention_mask"].cpu().bool()
    a, b = la[mask], lb[mask]
    kl = torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return {
        "max_abs_logit_diff": float((a - b).abs().max()),
        "mean_abs_logit_diff": float((a - b).abs().mean()),
        "mean_kl": float(kl.mean()),
        "top1_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
        "n_positions": int(mask.sum()),
    }
