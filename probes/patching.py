"""Patch each trait's top neurons between base and post-PEFT model, both ways, against matched random sets.

    python probes/patching.py [--out results/main] [--k 10] [--n-random 50]

Needs ``probes/neuron_diff.py`` first. Forward (post-PEFT values into the base): what share of
the post - base gap in the emojis' log-probability do they recover? Reverse (base values into
the post-PEFT model): what share do they remove? Writes ``OUT/patch/``. Any ``text2emoji patch`` flag works.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["patch", *sys.argv[1:]]))
