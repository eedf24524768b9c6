"""QLoRA trained tokens/s: this project's trainer vs the reference recipe (TRL ``SFTTrainer``),
same machine, same model, same data, same number of optimizer steps, held-out loss of both.
DESIGN target: never slower on CPU, at least 2x on a GPU, at equal held-out loss.

    python bench/qlora.py [--model smollm2-135m-instruct | --shape llama-2-7b] [--steps 8]
        [--trait extraversion] [--micro-batch 2]

Reference recipe: nf4 (double quant) base, LoRA r 64 / alpha 16 / dropout 0.1 on all seven
projections, micro-batch 2 x accumulation 2, group_by_length, max length 512, lr 2e-4 cosine,
paged 8-bit AdamW on CUDA (AdamW on CPU, where paged optimizers do not exist), loss on the
answer only (prompt-completion data). Ours: ``finetune.train.train`` with the ``paper`` preset
and the same steps; ``--micro-batch`` > 2 also times ours at a larger micro-batch (same
examples per step). Tokens are counted the same way for both: every token of the examples
processed. Needs ``pip install -e .[bench]`` (trl).

``--shape smollm2-135m|llama-2-7b`` trains both arms on random weights of that shape instead
(speed does not depend on weight values; the loss then only shows that both arms learn alike),
saved once with the embedded model's tokenizer, so the vocabulary is that tokenizer's 49,152
entries (Llama-2's is 32,000: ~2% more parameters at 7B).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time

import torch
from common import emit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--shape", choices=["smollm2-135m", "llama-2-7b"], help="random weights of this shape")
    ap.add_argument("--trait", default="extraversion")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--eval-rows", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=0, help="also time ours at this micro-batch")
    a = ap.parse_args()
    from finetune.io import bundled_path
    from finetune.train import TrainConfig, encode, held_out_loss, load_for_training, train
    from finetune.validate import load_rows
    from text2emoji.core.config import build_config
    from text2emoji.core.presets import PRESETS

    rows = load_rows([bundled_path()])
    keep = tempfile.TemporaryDirectory()
    if a.shape:
        a.model = _random_checkpoint(a.shape, keep.name)
    cfg = build_config(TrainConfig, dict(model=a.model, trait=a.trait, preset="paper", max_steps=a.steps,
                                         eval_rows=a.eval_rows, eval_every=10**6, save_every=10**6))
    out: dict = {"benchmark": "qlora", "model": f"random {a.shape}" if a.shape else a.model, "steps": a.steps,
                 "recipe": PRESETS["paper"]["train"]}
    with tempfile.TemporaryDirectory() as d:
        ours = train(cfg, rows, d)
    out["ours"] = {"tokens": ours["tokens"], "seconds": ours["seconds"], "tokens_per_s": ours["trained_tokens_per_s"],
                   "held_out_loss": ours["final_held_out_loss"]}
    if a.micro_batch > 2:
        big = cfg.replace(batch_size=a.micro_batch, grad_accum=1, max_steps=max(1, a.steps * 4 // a.micro_batch))
        with tempfile.TemporaryDirectory() as d:
            s = train(big, rows, d)
        out[f"ours_micro_batch_{a.micro_batch}"] = {"tokens_per_s": s["trained_tokens_per_s"],
                                                    "held_out_loss": s["final_held_out_loss"]}
    out["trl"] = _trl(cfg, rows, a, encode, held_out_loss, load_for_training)
    out["ours_over_trl_tokens_per_s"] = round(out["ours"]["tokens_per_s"] / out["trl"]["tokens_per_s"], 2)
    emit(out)
    keep.cleanup()


def _random_checkpoint(shape: str, where: str) -> str:
    """A float checkpoint of random weights of ``shape`` with the embedded tokenizer (bf16 on
    CUDA, float32 on CPU), for ``load_model`` to quantize like a real one."""
    from common import SHAPES
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp.models import ModelConfig, load_tokenizer

    tok = load_tokenizer(ModelConfig().model)
    cuda = torch.cuda.is_available()
    cfg = LlamaConfig(**{**SHAPES[shape], "vocab_size": len(tok)}, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):  # a 7B model initializes in seconds on the GPU
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(where)
    del model
    tok.save_pretrained(where)
    return where


def _trl(cfg, rows, a, encode, held_out_loss, load_for_training) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from finetune.train import LORA_TARGETS

    cfg = cfg.resolved()
    # the same nf4 base and tokenizer our trainer uses, without its LoRA (TRL adds its own)
    model, tok = load_for_training(cfg)
    model = model.unload() if hasattr(model, "unload") else model
    train_rows = [r for r in rows if r.trait == cfg.trait and r.split == "train"]
    test_rows = [r for r in rows if r.trait == cfg.trait and r.split == "test"][: a.eval_rows]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r.question}],
                               "completion": [{"role": "assistant", "content": r.answer}]} for r in train_rows])
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=2, gradient_accumulation_steps=2,
        train_sampling_strategy="group_by_length", max_length=512, learning_rate=2e-4, lr_scheduler_type="cosine",
        warmup_steps=0.03,
        optim="paged_adamw_8bit" if cuda else "adamw_torch", max_steps=a.steps, logging_steps=10**6,
        save_strategy="no", report_to=[], completion_only_loss=True, seed=0, use_cpu=not cuda,
        bf16=cuda, dataloader_num_workers=0,
    )
    peft = LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its metrics: keep stdout JSON
        trainer.train()
    seconds = time.perf_counter() - t
    # tokens the same way as ours: every token of each example processed (steps x 2 x 2 examples)
    seen = trainer.state.global_step * 2 * 2
    lengths = sorted(len(encode(tok, r, 512)) for r in train_rows)
    tokens = sum(lengths) / len(lengths) * seen
    eval_ex = [encode(tok, r, 512) for r in test_rows]
    trainer.model.eval()
    loss = held_out_loss(trainer.model, eval_ex, tok.pad_token_id, 2)
    return {"tokens_estimated": round(tokens), "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2),
            "held_out_loss": round(loss, 5)}


if __name__ == "__main__":
    main()
