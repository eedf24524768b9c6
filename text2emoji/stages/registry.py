"""The stages of a run, in the order ``text2emoji run`` executes them.

Each is one :class:`~text2emoji.stages.base.Stage` record; the CLI (one subcommand per stage
with a config), ``run``, ``figures`` and the report iterate over :data:`STAGES`. To add an
analysis, see the README's "Adding an analysis".
"""

from text2emoji.stages.base import Stage
from text2emoji.stages.calibrate import CALIBRATE
from text2emoji.stages.data import DATASET, MODEL, QUALITY
from text2emoji.stages.diffing import DIFFING
from text2emoji.stages.evaluate import EVALUATE
from text2emoji.stages.intervene import ABLATE, PATCH
from text2emoji.stages.neurons import NEURONS
from text2emoji.stages.organisms import ORGANISMS
from text2emoji.stages.steering import STEERING
from text2emoji.stages.trace import TRACE
from text2emoji.stages.train import TRAIN

STAGES: list[Stage] = [DATASET, QUALITY, MODEL, TRAIN, EVALUATE, STEERING, NEURONS, TRACE, ABLATE, PATCH, CALIBRATE, ORGANISMS, DIFFING]
