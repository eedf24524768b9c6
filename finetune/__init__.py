"""Fine-tuning side of the workbench: Opinion QA data (schema, loaders, validation, split,
building) and QLoRA training per trait. Knows nothing about hooks.

Empty until the dataset and QLoRA stages land (issues "Opinion QA dataset" and "Thin QLoRA").
"""
