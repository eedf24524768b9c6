"""Emoji use before and after PEFT (the study's Table 1), trait alignment and ICL explainability.

    python probes/emoji_table.py [--out results/main] [--preset quick|paper]

Needs the trait adapters (``text2emoji train --all-traits``). Answers each trait's test
questions with the base model, the adapter and an in-context baseline; writes
``OUT/evaluate/``: the emoji table with bootstrap intervals, trait alignment, the ICL top-50
tokens and figures. Any ``text2emoji evaluate`` flag works.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
