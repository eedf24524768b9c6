"""text2emoji: a mechanistic-interpretability workbench for PEFT personality fine-tuning.

Library code lives in :mod:`interp` (models, hook sites, emoji metrics, analyses) and
:mod:`finetune` (datasets, QLoRA); this package holds what every stage shares: the CLI,
typed configs and run directories with provenance.
"""

__version__ = "0.1.0"
