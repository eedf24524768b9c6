"""The one preset table: what ``quick`` and ``paper`` set in every stage.

A stage config with a ``preset`` field leaves preset-governed fields at ``None``;
:func:`fill_preset` fills each from its section of the table. Flags and config files that set a
field win over the preset.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

Preset = Literal["quick", "paper"]

# Prompts per forward or generation batch: the default of every stage and library function.
BATCH_SIZE = 32

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # quick: about 20 minutes for the whole run on 2 CPU cores (bench/quick_run.py). Training: a
    # usable adapter in minutes (fewer steps, smaller rank, larger micro-batches, no LoRA
    # dropout: on the CPU its masks cost ~5% of a step; fewer held-out evaluations).
    "quick": {
        # compute_dtype bfloat16: the nf4 layers compute in bf16 (as QLoRA on a GPU); on this CPU
        # (AVX512-BF16) training takes 0.64x the time, held-out loss +0.002 vs float32
        # (bench/compute_dtype.py; tests/test_train.py bounds the difference on a tiny model)
        "train": dict(r=16, alpha=32, dropout=0.0, lr=5e-4, epochs=1.0, batch_size=8, grad_accum=1,
                      max_length=512, max_steps=24, eval_rows=16, eval_every=12, save_every=12,
                      compute_dtype="bfloat16"),
        # n_random: the most random sets a control draws; it stops once 10 are as extreme in
        # each tail (unremarkable candidates cost a few dozen draws, extreme ones up to it; 500:
        # p floor 0.004, so Holm over 10 tests can still reach 0.04). n_explain: PEFT answers per
        # trait the ICL explainability asks about (8 of the 16)
        "analysis": dict(n_questions=16, max_new_tokens=48, n_random=500, n_random_generation=1,
                         n_generation_questions=8, lens_emojis=1, n_null=20, n_random_null=50, n_explain=8),
        # known-answer organisms: one positive control (a planted fraction this preset detects)
        # and the negative control; random sets ablated during their generation
        "organisms": dict(fractions=[1.0], n_random_generation=1, end_control=False),
        # steering as a method (stage `steering`): the organisms' trait only, to fit the 20-minute
        # budget; its test questions and answer length are the "analysis" section's
        "steering": dict(traits=["extraversion"], alphas=[0.0, 2.0, 4.0, 8.0], n_vector_questions=8,
                         n_sweep_questions=8),
        # the lens over 128 of the 440 neutral texts, the KL over 8 of each adapter's 16 answers
        "diffing": dict(n_texts=128, n_answers=8),
    },
    # paper: the study's recipe (TRL SFTTrainer settings) and scale: every test question,
    # 150-token answers, up to 10,000 random neuron sets.
    "paper": {
        "train": dict(r=64, alpha=16, dropout=0.1, lr=2e-4, epochs=2.0, batch_size=2, grad_accum=2,
                      max_length=512, max_steps=0, eval_rows=0, eval_every=50, save_every=50, compute_dtype="auto"),
        "analysis": dict(n_questions=0, max_new_tokens=150, n_random=10000, n_random_generation=5,
                         n_generation_questions=0, lens_emojis=3, n_null=200, n_random_null=200, n_explain=0),
        # the dose response: planted fractions from none to half of the train answers
        "organisms": dict(fractions=[0.0, 0.02, 0.05, 0.1, 0.25, 0.5], n_random_generation=19, end_control=True),
        # every trait ([] = all five), a wider α sweep, 32 train questions each for vector and sweep
        "steering": dict(traits=[], alphas=[0.0, 1.0, 2.0, 4.0, 8.0, 16.0], n_vector_questions=32,
                         n_sweep_questions=32),
        "diffing": dict(n_texts=0, n_answers=0),
    },
}

C = TypeVar("C")


def fill_preset(cfg: C, section: str) -> C:
    """A copy of ``cfg`` (a config with a ``preset`` field) with every field that is ``None``
    and named in ``PRESETS[cfg.preset][section]`` set to the preset's value.

    >>> from dataclasses import dataclass
    >>> from text2emoji.core.config import Config, option
    >>> @dataclass
    ... class C(Config):
    ...     preset: Preset = option("quick", help="preset")
    ...     n_random: int | None = option(None, help="random sets")
    >>> fill_preset(C(), "analysis").n_random, fill_preset(C(n_random=7), "analysis").n_random
    (500, 7)
    """
    values = PRESETS[cfg.preset][section]  # type: ignore[attr-defined]
    fill = {k: v for k, v in values.items() if hasattr(cfg, k) and getattr(cfg, k) is None}
    return cfg.replace(**fill)  # type: ignore[attr-defined]
