"""``text2emoji run``: the whole study as the chain of stages in :data:`text2emoji.stages.registry.STAGES`,
each a directory under ``--out``, then the report.

Each stage is reused when its config and inputs are unchanged and resumes after an interruption
(see :mod:`text2emoji.core.runs`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from text2emoji.core.files import atomic_write_json
from text2emoji.core.runs import log
from text2emoji.stages import registry
from text2emoji.stages.base import RunConfig, artifact, execute


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run every stage (reusing finished ones); write the report; return the headline numbers."""
    from text2emoji.report import short_summary, write_report

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    for i, stage in enumerate(registry.STAGES, 1):
        t = time.perf_counter()
        log(f"run: stage {i}/{len(registry.STAGES)} {stage.name}")
        execute(stage, stage.from_run(cfg))
        seconds[stage.name] = round(time.perf_counter() - t, 1)
        log(f"run: {stage.name} done in {seconds[stage.name]:.0f}s (total {time.perf_counter() - t0:.0f}s)")
    t = time.perf_counter()
    summary = short_summary(write_report(Path(cfg.run_dir.out)))
    seconds["report"] = round(time.perf_counter() - t, 1)
    # this invocation's times: a reused stage takes ~0 s
    summary["stage_seconds"] = seconds
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(artifact(cfg.run_dir.out, "summary"), summary)
    return summary
