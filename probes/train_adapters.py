"""QLoRA: one adapter per Big Five trait on the nf4 base (the study's fine-tuning).

    python probes/train_adapters.py [--out results/main] [--preset quick|paper]

Writes ``OUT/train/<trait>/adapter`` for all five traits, with loss curves. Resumes after an
interruption. Any ``text2emoji train`` flag works (``--all-traits`` is added here).
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--all-traits", *sys.argv[1:]]))
