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
# QLoRA trained tokens/s, ours vs TRL's SFTTrainer with the reference recipe (same steps); last,
# so that a missing trl (the `bench` extra) stops nothing else
for model in smollm2-135m llama-2-7b; do
  $PY qlora.py --shape "$model" --steps 8 --eval-rows 16
done
