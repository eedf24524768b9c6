"""Data-parallel QLoRA: ``text2emoji train`` in one process vs in N (DDP through accelerate;
one per GPU on CUDA, gloo on CPU), the same recipe and global batch, in one run: wall time of
each command, trained tokens/s of each, and how far the N-process loss curve is from the
one-process one.

    python bench/ddp.py --num-processes 2 [--model embedded | --shape llama-2-7b]
        [--steps 8] [--batch-size 8] [--grad-accum 1] [--compute-dtype float32] [--trait extraversion]
        [--preset quick]

Tokens/s is ``train_summary.json``'s (every token of the examples of the steps, over the
training loop's time: loading and launching are outside it); the wall time is the whole command
(the launcher, N model loads, the dataset stage reused from a warm-up run). ``--shape`` trains
on random weights of that shape (bench/qlora.py's checkpoint with the embedded tokenizer).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-processes", type=int, required=True)
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--shape", choices=["smollm2-135m", "llama-2-7b"], help="random weights of this shape")
    ap.add_argument("--trait", default="extraversion")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8, help="examples per micro-batch, all processes together")
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--compute-dtype", default=None, help="default: the preset's (quick: bfloat16)")
    a = ap.parse_args()
    keep = tempfile.TemporaryDirectory()
    model = a.model
    if a.shape:
        from qlora import _random_checkpoint

        model = _random_checkpoint(a.shape, keep.name)
    runs = Path(keep.name) / "runs"
    flags = ["--trait", a.trait, "--preset", a.preset, "--max-steps", str(a.steps), "--batch-size", str(a.batch_size),
             "--grad-accum", str(a.grad_accum), "--eval-rows", "16", *(["--model", model] if model else []),
             *(["--compute-dtype", a.compute_dtype] if a.compute_dtype else [])]
    out: dict = {"benchmark": "qlora_ddp", "model": f"random {a.shape}" if a.shape else model or "embedded", "preset": a.preset,
                 "compute_dtype": a.compute_dtype or "preset", "steps": a.steps, "examples_per_step": a.batch_size * a.grad_accum, "arms": {}}
    curves = {}
    for n in (1, a.num_processes):
        where = runs / f"np{n}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "text2emoji.cli", "train", *flags, "--num-processes", str(n),
                        "--out", str(where)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        stage = where / "train" / a.trait
        s = json.loads((stage / "train_summary.json").read_text())
        with open(stage / "losses.csv", newline="") as f:
            curves[n] = list(csv.DictReader(f))
        out["arms"][f"{n}_process" + ("es" if n > 1 else "")] = {
            "world_size": s["world_size"], "wall_seconds": round(wall, 1), "train_seconds": s["seconds"],
            "trained_tokens_per_s": s["trained_tokens_per_s"], "final_held_out_loss": s["final_held_out_loss"]}
    one, many = curves[1], curves[a.num_processes]
    for key in ("train_loss", "eval_loss"):
        out[f"max_abs_{key}_difference"] = max(abs(float(x[key]) - float(y[key]))
                                               for x, y in zip(one, many, strict=True) if x[key] != "")
    arms = list(out["arms"].values())
    out["tokens_per_s_ratio"] = round(arms[1]["trained_tokens_per_s"] / arms[0]["trained_tokens_per_s"], 2)
    out["wall_ratio"] = round(arms[1]["wall_seconds"] / arms[0]["wall_seconds"], 2)
    emit(out)
    keep.cleanup()


if __name__ == "__main__":
    main()
