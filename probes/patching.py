"""Patch each trait's top neurons' post-PEFT values into the base model, against random sets.

    python probes/patching.py [--out results/main] [--k 10] [--n-random 50]

Needs ``probes/neuron_diff.py`` first. Does the emojis' log-probability rise toward the
adapter's? Writes ``OUT/patch/``. Any ``text2emoji patch`` flag works.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["patch", *sys.argv[1:]]))
