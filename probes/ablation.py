"""Zero- and mean-ablate each trait's top neurons in the post-PEFT model, against size-matched random sets.

    python probes/ablation.py [--out results/main] [--k 10] [--n-random 50] [--mode zero]

Needs ``probes/neuron_diff.py`` first (it picks the candidates). Measures the change of the
trait emojis' log-probability on held-out questions and of the emoji rate / ESR of generated
answers. Writes ``OUT/ablate/``. Any ``text2emoji ablate`` flag works.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
