"""False-positive rate of each family of tests under null experiments built so that no effect exists.

    python probes/calibration.py [--out results/main] [--trait openness] [--preset quick|paper] [--n-null 20]

Needs a trained adapter of the trait (``probes/train_adapters.py``). Neurons and trace: the
trait's real per-prompt differences with each cluster's sign flipped at random; ablation and
patching: random sets from the top decile of the layer by size, against matched controls.
Writes ``OUT/calibrate/``. Any ``text2emoji calibrate`` flag works.
"""

import sys

from text2emoji.cli import main

if __name__ == "__main__":
    sys.exit(main(["calibrate", *sys.argv[1:]]))
