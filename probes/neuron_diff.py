"""Last-layer neurons pre vs post PEFT on the probe suite (the study's neuron analysis).

    python probes/neuron_diff.py [--out results/main] [--trait extraversion] [--k 20]

Needs the trait adapters (``text2emoji train --all-traits``). Writes ``OUT/neurons/``: ranked
neurons with bootstrap intervals and permutation p-values, emoji selectivity, overlap across
traits, direct logit attribution, ``neurons.md`` and heatmaps. Any ``text2emoji neurons`` flag works.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["neurons", *sys.argv[1:]]))
