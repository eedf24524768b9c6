#!/usr/bin/env bash
# The same benchmarks on one CUDA GPU with random-weight models of real shapes (speed does not
# depend on weight values): SmolLM2-135M and Llama-2-7B. Prints one JSON object per benchmark.
#   bash bench/cuda.sh            # after `make setup` and `pip install -e .[bench]` (trl), on a CUDA GPU
# Not yet run on a GPU: no session so far was lent one (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
nvidia-smi -L
for model in smollm2-135m llama-2-7b; do
  # 5 trait adapters mixed in one batch of 64 vs one prompt at a time (nf4 base, LoRA r 64)
  $PY generation.py --model "$model" --device cuda --load-in-4bit --adapters 5 --n-prompts 64 \
      --batch-size 64 --max-new-tokens 64 --per-prompt-sample 4
  $PY capture.py --model "$model" --device cuda --n-prompts 256 --batch-size 64 \
      $([ "$model" = llama-2-7b ] && echo --skip-cache-all)
done
# Data-parallel QLoRA, only where more than one GPU is visible: `text2emoji train` on one GPU vs
# `--num-processes <gpus>` (DDP, one process per GPU), the same recipe and global batch (64
# examples a step; 7B: 4 micro-batches of 16), trained tokens/s of each and the loss curves'
# largest difference
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -gt 1 ]; then
  $PY ddp.py --num-processes "$gpus" --steps 8 --batch-size 64
  $PY ddp.py --num-processes "$gpus" --shape llama-2-7b --steps 8 --batch-size 16 --grad-accum 4
fi
# QLoRA trained tokens/s, ours vs TRL's SFTTrainer with the reference recipe (same steps); last,
# so that a missing trl (the `bench` extra) stops nothing else
for model in smollm2-135m llama-2-7b; do
  $PY qlora.py --shape "$model" --steps 8 --eval-rows 16
done
