"""Fine-tuning side of the workbench: Opinion QA data (loaders, validation, split, quality,
building from the structured trait prompts) and QLoRA training per trait, with merging.

Knows nothing about hooks; imports only :mod:`text2emoji.core` and :mod:`interp` (model loading,
chat formatting, emoji detection).
"""
