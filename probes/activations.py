"""Neuron activations of a file of prompts at one hook site, streamed to disk.

    python probes/activations.py --prompts prompts.jsonl --out results/acts.npy \
        [--adapter DIR] [--site blocks.-1.mlp.hook_post] [--position last] [--chat] [--backend nnsight]

Any ``text2emoji activations`` flag works.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["activations", *sys.argv[1:]]))
