"""Each trait's emoji probability before and after PEFT, and its logit lens.

    python probes/emoji_trace.py [--out results/main] [--trait extraversion]

Exact log P of the trait's emojis (all their tokens, with and without a leading space) as the
answer's first tokens for every probe prompt, base vs adapter, and the same decoded after every
layer. Writes ``OUT/trace/``. Any ``text2emoji trace`` flag works.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["trace", *sys.argv[1:]]))
