"""The exact probability of whole emojis after one prompt, base vs adapter, with the logit lens.

    python probes/emoji_prob.py --prompt "Hey! How was your weekend?" --chat \
        --adapter results/main/train/extraversion/adapter --emoji 🎉 --emoji 😄

Prints JSON (token ids, log P with and without a leading space, per-layer log P). Any
``text2emoji emoji-prob`` flag works; ``--logit-lens`` is added here.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["emoji-prob", "--logit-lens", *sys.argv[1:]]))
