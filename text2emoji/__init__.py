"""text2emoji: a mechanistic-interpretability workbench for PEFT personality fine-tuning.

Layers, importing one way only (``tests/test_layers.py`` checks it):

- :mod:`text2emoji.core`: configs, errors, result files, run directories, the trait schema;
- :mod:`interp`: models, hook sites, capture, analyses, behavioural evaluation (``interp.behaviour``);
- :mod:`finetune`: datasets and QLoRA;
- the app, this package's other modules: the stages (:mod:`text2emoji.stages`), the pipeline of
  ``text2emoji run``, the report, the figures and the CLI.
"""

__version__ = "0.1.0"
