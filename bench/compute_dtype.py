"""QLoRA with the nf4 base computing in bfloat16 vs float32: seconds per run and held-out loss,
both arms in one run, the quick preset's recipe otherwise (24 steps of 8 examples, r 16).

    python bench/compute_dtype.py [--trait extraversion] [--steps 24] [--eval-rows 40]

The quick preset trains in bfloat16 since this measurement; the paper preset keeps ``auto``
(float32 on a CPU, bfloat16 on CUDA). On a CPU without AVX512-BF16 bfloat16 may be slower.
"""

from __future__ import annotations

import argparse
import tempfile

from common import emit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trait", default="extraversion")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--eval-rows", type=int, default=40)
    a = ap.parse_args()
    from finetune.io import bundled_path
    from finetune.train import TrainConfig, train
    from finetune.validate import load_rows
    from text2emoji.core.config import build_config

    rows = load_rows([bundled_path()])
    out: dict = {"benchmark": "compute_dtype", "trait": a.trait, "steps": a.steps, "eval_rows": a.eval_rows}
    for dtype in ("float32", "bfloat16"):
        cfg = build_config(TrainConfig, dict(trait=a.trait, preset="quick", max_steps=a.steps, eval_rows=a.eval_rows,
                                             compute_dtype=dtype))
        with tempfile.TemporaryDirectory() as d:
            s = train(cfg, rows, d)
        out[dtype] = {"seconds": s["seconds"], "tokens_per_s": s["trained_tokens_per_s"],
                      "held_out_loss": [s["first_held_out_loss"], s["final_held_out_loss"]],
                      "final_train_loss": s["final_train_loss"]}
    out["bf16_over_fp32_seconds"] = round(out["bfloat16"]["seconds"] / out["float32"]["seconds"], 3)
    out["held_out_loss_difference"] = round(out["bfloat16"]["held_out_loss"][1] - out["float32"]["held_out_loss"][1], 5)
    emit(out)


if __name__ == "__main__":
    main()
