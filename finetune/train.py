"""QLoRA fine-tuning of one adapter per Big Five trait.

The base model is quantized to nf4 (bitsandbytes, on CPU and CUDA) and frozen; LoRA adapters
train on all seven projections (q, k, v, o, gate, up, down). Loss is on the answer's tokens
only. Training is seeded, checkpoints every ``save_every`` optimizer steps (adapter, optimizer,
scheduler, RNG, losses) and resumes from the last complete checkpoint after an interruption.
A non-finite loss stops training with :class:`TrainingError`, keeping the last good checkpoint.

Started by a launcher in several processes (``text2emoji train --num-processes N``, or
``accelerate launch``), training is data-parallel (DDP through accelerate, see
:mod:`finetune.distributed`) with the one-process recipe unchanged: the same optimizer steps,
the same examples in each, each micro-batch split across the processes, the loss normalised by
the step's answer tokens of all of them. Only the main process writes.

Output (``<out>/``): ``adapter/`` (``PeftModel.from_pretrained`` loads it), ``losses.csv``
(train and held-out loss per step), ``checkpoints/step-N/``, and with ``merge`` a merged HF
model in ``merged/``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from finetune.distributed import Ranks
from finetune.sft_data import Example, collate, encode, epoch_batches
from interp.models import ModelConfig
from text2emoji.core.config import Config, ConfigError, member, option
from text2emoji.core.errors import UserError
from text2emoji.core.files import atomic_write_json
from text2emoji.core.presets import Preset, fill_preset
from text2emoji.core.runs import seed_option
from text2emoji.core.schema import TRAITS, Row

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

class TrainingError(UserError):
    """Training cannot go on (e.g. a non-finite loss)."""


@dataclass
class TrainConfig(Config):
    """One trait's QLoRA run. Preset values (``text2emoji.core.presets``, section ``train``) fill
    every field left at None."""

    model: ModelConfig = member(ModelConfig, help="the base model; nf4 by default (QLoRA)", load_in_4bit=True)

    trait: Literal["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"] = option(
        "openness", help="Big Five trait whose train rows the adapter learns"
    )
    preset: Preset = option("quick", help="quick: minutes on 2 CPU cores; paper: the study's recipe")
    r: int | None = option(None, help="LoRA rank (paper 64)", low=1)
    alpha: int | None = option(None, help="LoRA alpha (paper 16)", low=1)
    dropout: float | None = option(None, help="LoRA dropout (paper 0.1)", low=0, lt=1)
    lr: float | None = option(None, help="peak learning rate, cosine decay with 3% warm-up (paper 2e-4)", gt=0)
    epochs: float | None = option(None, help="passes over the trait's train rows (paper 2)", gt=0)
    max_steps: int | None = option(None, help="stop after this many optimizer steps (0 = epochs decide)", low=0)
    batch_size: int | None = option(None, help="examples per micro-batch (paper 2)", low=1)
    grad_accum: int | None = option(None, help="micro-batches per optimizer step (paper 2)", low=1)
    max_length: int | None = option(None, help="longest example in tokens (paper 512)", low=1)
    eval_rows: int | None = option(None, help="held-out (test) rows scored for the held-out loss (0 = all)", low=0)
    eval_every: int | None = option(None, help="optimizer steps between held-out evaluations (quick 12, paper 50)", low=1)
    save_every: int | None = option(None, help="optimizer steps between checkpoints (quick 12, paper 50)", low=1)
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = option(
        None, help="dtype training loads the model in where --dtype is auto: its nf4 layers compute in it (peft "
                   "keeps norms, embeddings and the adapters in float32) (quick: bfloat16; paper: auto = float32 on "
                   "CPU, bfloat16 on CUDA)")
    seed: int = seed_option()
    optim: Literal["auto", "adamw", "paged_adamw_8bit"] = option(
        "auto", help="auto: paged 8-bit AdamW on CUDA (the reference), AdamW on CPU"
    )
    targets: list[str] = option(list(LORA_TARGETS), help="projections that get LoRA adapters (the study: all seven)",
                                flag="--target")
    layers: list[int] = option([], help="decoder layers that get LoRA adapters, negative from the end (default: all; "
                               "checked against the model when it loads)", flag="--layer")

    def validate(self) -> None:
        if bad := [t for t in self.targets if t not in LORA_TARGETS]:
            raise ConfigError(f"targets: unknown {', '.join(bad)}; valid: {', '.join(LORA_TARGETS)}")
        if not self.targets:
            raise ConfigError("targets: give at least one projection")

    def resolved(self) -> TrainConfig:
        """A copy with every None filled from the preset."""
        return fill_preset(self, "train")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def load_for_training(cfg: TrainConfig) -> tuple[Any, Any]:
    """The nf4 base with fresh LoRA adapters on all seven projections, and its tokenizer (the
    adapters' initial values depend on ``cfg.seed`` only: the same in every process)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from interp.models import load_model

    lm = load_model(training_model(cfg))
    model = lm.model
    if cfg.model.load_in_4bit:
        # upcasts norms to fp32 and lets gradients reach the adapters through frozen 4-bit layers
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        _keep_nf4_differentiable(model)
    _set_seed(cfg.seed)
    n_layers = model.config.num_hidden_layers
    if bad := [i for i in cfg.layers if not -n_layers <= i < n_layers]:
        raise ConfigError(f"layers: {bad} out of range for a model of {n_layers} layers")
    layers = sorted({i % n_layers for i in cfg.layers}) or None
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets),
                      layers_to_transform=layers, task_type="CAUSAL_LM")
    return get_peft_model(model, lora), lm.tokenizer


def training_model(cfg: TrainConfig) -> ModelConfig:
    """The model config training loads: ``cfg.model`` with ``compute_dtype`` where its dtype is
    auto."""
    if cfg.model.dtype == "auto" and cfg.compute_dtype not in (None, "auto"):
        return cfg.model.replace(dtype=cfg.compute_dtype)
    return cfg.model


def _keep_nf4_differentiable(model: Any) -> None:
    """Stop bitsandbytes from repacking nf4 weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, a ``Linear4bit`` that runs once in eval mode without grad (a
    held-out evaluation) converts its weights, for good, to a packed layout served by
    ``gemv_4bit``, which has no autograd kernel: later training steps would get no gradient
    through the frozen base layers, and a resumed run (no evaluation before its first step)
    would compute differently from an uninterrupted one.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter], device: torch.device):
    kind = cfg.optim
    if kind == "auto":
        kind = "paged_adamw_8bit" if device.type == "cuda" else "adamw"
    if kind == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=cfg.lr, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)


def _checkpoints(out: Path) -> list[Path]:
    done = [p for p in (out / "checkpoints").glob("step-*")
            if re.fullmatch(r"step-\d+", p.name) and (p / "state.json").is_file()]  # not step-N.tmp
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def _rng_state() -> dict[str, Any]:
    """This process's random state (dropout masks draw from it)."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])  # dropout on the GPU


def _save_checkpoint(out: Path, model: Any, opt: Any, sched: Any, state: dict[str, Any],
                     rngs: list[dict[str, Any]], keep: int = 2) -> Path:
    """Write ``checkpoints/step-N`` atomically (temp dir, then rename); keep the last ``keep``.
    ``rngs``: each process's random state, in rank order."""
    final = out / "checkpoints" / f"step-{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "adapter")
    # the optimizer's state is the same in every process (DDP gives each the same gradients)
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rngs}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in _checkpoints(out)[:-keep]:
        shutil.rmtree(old)
    return final


@torch.no_grad()
def held_out_loss(model: Any, examples: list[Example], pad_id: int, batch_size: int, ranks: Ranks | None = None) -> float:
    """Mean loss per answer token over ``examples`` (dropout off).

    With several processes (``ranks``), each scores every ``world``-th batch of the same batches
    and the sums are added up: the one-process number up to float summation order.
    """
    rank, world = (ranks.rank, ranks.world) if ranks is not None else (0, 1)
    was = model.training
    model.eval()
    total, n = 0.0, 0
    device = next(model.parameters()).device
    for j, i in enumerate(range(0, len(examples), batch_size)):
        if j % world != rank:
            continue
        batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_id).items()}
        total += _loss_sum(model, batch).item()
        n += int((batch["labels"][:, 1:] != -100).sum())
    model.train(was)
    if ranks is not None and world > 1:
        total, n = ranks.sum(torch.tensor([total, n], dtype=torch.float64, device=device)).tolist()
    return total / max(n, 1)


def _loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over answer tokens (so accumulation can average exactly).

    Logits are computed only from the first position that predicts an answer token on: the
    vocabulary projection of the prompt's positions (chat template, question) would cost a
    sixth of the step and hold a [batch, length, vocab] tensor for nothing.
    """
    labels = batch["labels"][:, 1:]  # position p predicts labels[:, p]
    counted = (labels != -100).any(0).nonzero()
    first = int(counted[0]) if len(counted) else 0
    # positions first .. width-1 as an index tensor: the gathered hidden states are contiguous,
    # so the projection is one matrix product (a trailing slice of them would be a slower bmm)
    keep = torch.arange(first, labels.shape[1] + 1, device=labels.device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, first:].flatten(), ignore_index=-100, reduction="sum",
    )


def train(cfg: TrainConfig, rows: list[Row], out: str | Path) -> dict[str, Any]:
    """Train one trait's adapter on its train rows; held-out loss on its test rows.

    Every process of a launched group calls this with the same arguments (see the module's
    docstring); the main process writes, and each returns the same summary.

    Args:
        cfg: the run's config (presets are resolved here).
        rows: the dataset (every trait; only ``cfg.trait``'s rows are used).
        out: output directory (resumes from its last checkpoint if one exists).

    Returns:
        A summary: steps, tokens, final train and held-out loss, seconds, trained tokens/s, the
        number of processes (``world_size``).
    """
    from transformers import get_cosine_schedule_with_warmup

    cfg = cfg.resolved()
    out = Path(out)
    if cfg.trait not in TRAITS:
        raise ConfigError(f"trait: unknown {cfg.trait!r}")
    train_rows = [r for r in rows if r.trait == cfg.trait and r.split == "train"]
    test_rows = [r for r in rows if r.trait == cfg.trait and r.split == "test"]
    if not train_rows:
        raise UserError(f"no train rows for trait {cfg.trait}")
    ranks = Ranks(cfg.model.device)
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if ranks.world > cfg.batch_size:
            _log(f"train {cfg.trait}: {ranks.world} processes share micro-batches of {cfg.batch_size} examples: "
                 f"{ranks.world - cfg.batch_size} of them idle at every micro-batch")
    model, tok = load_for_training(cfg.replace(model=cfg.model.replace(device=ranks.device(cfg.model.device))))
    ranks.seed(cfg.seed)  # after the adapters' initialisation, which must be the same everywhere
    device = next(model.parameters()).device
    train_ex = [encode(tok, r, cfg.max_length) for r in train_rows]
    eval_ex = [encode(tok, r, cfg.max_length) for r in test_rows][: cfg.eval_rows or None]
    per_epoch = math.ceil(len(train_ex) / cfg.batch_size / cfg.grad_accum)
    total_steps = cfg.max_steps or math.ceil(per_epoch * cfg.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(cfg, params, device)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(0.03 * total_steps), total_steps)
    state = _resume(out, model, opt, sched, cfg, ranks)
    ddp = ranks.prepare(model)  # after resuming: every process starts from the same weights
    pad = tok.pad_token_id
    if not state["history"] and eval_ex:  # the starting point of the held-out curve
        state["history"].append({"step": 0, "eval_loss": round(held_out_loss(model, eval_ex, pad, cfg.batch_size,
                                                                             ranks), 5)})
    ddp.train()
    micro_per_epoch = math.ceil(len(train_ex) / cfg.batch_size)
    t_start = time.perf_counter() - state["seconds"]
    while state["step"] < total_steps:
        epoch, skip = divmod(state["micro"], micro_per_epoch)
        group: list[list[Example]] = []
        for k, batch in enumerate(epoch_batches(train_ex, cfg.batch_size, cfg.seed, epoch)):
            if k < skip:
                continue  # consumed before the checkpoint we resumed from
            group.append(batch)
            if len(group) < cfg.grad_accum and k < micro_per_epoch - 1:
                continue
            loss_total = _accumulate(ddp, group, pad, device, state, out, cfg.trait, ranks)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state["micro"] += len(group)
            state["step"] += 1
            group = []
            record: dict[str, Any] = {"step": state["step"], "train_loss": round(loss_total, 5),
                                      "lr": sched.get_last_lr()[0], "tokens": state["tokens"]}
            last_step = state["step"] == total_steps
            if eval_ex and (state["step"] % cfg.eval_every == 0 or last_step):
                record["eval_loss"] = round(held_out_loss(model, eval_ex, pad, cfg.batch_size, ranks), 5)
            state["history"].append(record)
            state["seconds"] = time.perf_counter() - t_start
            if ranks.is_main:
                _log(f"train {cfg.trait}: step {state['step']}/{total_steps} loss {loss_total:.3f}"
                     + (f" held-out {record['eval_loss']:.3f}" if "eval_loss" in record else ""))
            if state["step"] % cfg.save_every == 0 or last_step:
                rngs = ranks.gather(_rng_state())
                if ranks.is_main:
                    _save_checkpoint(out, model, opt, sched, state, rngs)
            if last_step:
                break
    return _finish(out, model, state, cfg, len(train_ex), len(eval_ex), ranks)


def _resume(out: Path, model: Any, opt: Any, sched: Any, cfg: TrainConfig, ranks: Ranks) -> dict[str, Any]:
    """The training state of the last complete checkpoint under ``out`` (adapter weights,
    optimizer, scheduler and this process's RNG restored into the objects given), or a fresh one.

    Every process reads the same checkpoint. One written by another number of processes resumes
    too (steps, examples and weights do not depend on it); the processes' random streams are
    then seeded afresh from the seed, the step and the rank.
    """
    ckpts = _checkpoints(out)
    if not ckpts:
        return {"step": 0, "micro": 0, "tokens": 0, "seconds": 0.0, "history": []}
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    last = ckpts[-1]
    set_peft_model_state_dict(model, load_file(last / "adapter" / "adapter_model.safetensors"))
    blob = torch.load(last / "trainer.pt", weights_only=False)
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    state = json.loads((last / "state.json").read_text())
    # checkpoints written before several processes were possible hold one process's state
    rngs = blob.get("rng") or [{"torch": blob["torch_rng"], "python": blob["python_rng"], "cuda": None}]
    if len(rngs) == ranks.world:
        _set_rng_state(rngs[ranks.rank])
        if (cuda_all := blob.get("cuda_rng")) is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_all)  # an older checkpoint's dropout state on the GPU
    else:
        _set_seed(cfg.seed + 1000 * state["step"] + ranks.rank)
    if ranks.is_main:
        _log(f"train {cfg.trait}: resuming from {last.name}"
             + (f" (written by {len(rngs)} processes, now {ranks.world})" if len(rngs) != ranks.world else ""))
    return state


def _accumulate(model: Any, group: list[list[Example]], pad: int, device: torch.device, state: dict[str, Any],
                out: Path, trait: str, ranks: Ranks) -> float:
    """Backward over one optimizer step's micro-batches (loss per answer token of the whole
    group); returns the step's training loss. A non-finite loss stops with TrainingError.

    Each process takes its share of every micro-batch (:meth:`Ranks.shard`) and divides its
    summed loss by the answer tokens of the whole group, on every process (each walks the same
    batches, so this count needs no communication), times the number of processes: DDP averages
    the processes' gradients, and the average of these is the one-process gradient. A process
    whose share is empty runs the micro-batch's first example with weight 0, so that DDP's
    all-reduce still meets every process.
    """
    n_target = sum(e.n_target for b in group for e in b) or 1
    loss_total = 0.0
    for i, b in enumerate(group):
        mine = ranks.shard(b)
        tensors = {key: v.to(device) for key, v in collate(mine or b[:1], pad).items()}
        # gradients are all-reduced once per optimizer step, after its last micro-batch
        with ranks.no_sync(model) if i < len(group) - 1 else contextlib.nullcontext():
            loss = _loss_sum(model, tensors) / n_target * (ranks.world if mine else 0)
            step_loss = ranks.sum(loss.detach() / ranks.world)  # this micro-batch's share of the step's loss
            if not torch.isfinite(step_loss):  # the same on every process: all of them stop
                last = _checkpoints(out)
                raise TrainingError(
                    f"non-finite training loss at step {state['step'] + 1} (trait {trait}); "
                    f"last good checkpoint: {last[-1] if last else 'none'}"
                )
            loss.backward()
        loss_total += step_loss.item()
        state["tokens"] += sum(len(e) for e in b)
    return loss_total


def _finish(out: Path, model: Any, state: dict[str, Any], cfg: TrainConfig, n_train: int, n_eval: int,
            ranks: Ranks) -> dict[str, Any]:
    """Write losses.csv, the adapter (atomically replaced) and train_summary.json (main process
    only); every process returns the summary."""
    adapter_dir = out / "adapter"
    evals = [h["eval_loss"] for h in state["history"] if "eval_loss" in h]
    summary = {
        "trait": cfg.trait, "steps": state["step"], "tokens": state["tokens"],
        "train_examples": n_train, "held_out_examples": n_eval,
        "final_train_loss": state["history"][-1].get("train_loss") if state["history"] else None,
        "first_held_out_loss": evals[0] if evals else None,
        "final_held_out_loss": evals[-1] if evals else None,
        "seconds": round(state["seconds"], 2),
        "trained_tokens_per_s": round(state["tokens"] / max(state["seconds"], 1e-9), 2),
        "world_size": ranks.world,
        "adapter": str(adapter_dir), "resolved_config": cfg.to_dict(),
    }
    if ranks.is_main:
        _write_losses(out / "losses.csv", state["history"])
        tmp = out / "adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        shutil.rmtree(adapter_dir, ignore_errors=True)
        tmp.rename(adapter_dir)
        atomic_write_json(out / "train_summary.json", summary)
    ranks.wait()  # the adapter is there before any process returns
    return summary


def _write_losses(path: Path, history: list[dict[str, Any]]) -> None:
    from text2emoji.core.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "train_loss", "eval_loss", "lr", "tokens"])
        w.writeheader()
        for h in history:
            w.writerow(h)
