"""What the mechanistic stages (``neurons``, ``trace``, ``ablate``, ``patch``) share: their
common fields, the model with every trait's adapter, the probe suite and their input hashes.

Pre = the base model, post = base + the trait's adapter, on one loaded base with the adapter
toggled (tests prove that equals the base loaded alone).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.hooks import DEFAULT_SITE
from interp.models import ModelConfig
from text2emoji.core.config import Config, ConfigError, member, option
from text2emoji.core.files import atomic_write_text, file_hash
from text2emoji.core.runs import RunDir, batch_option, seed_option
from text2emoji.stages.base import adapter_dirs, adapter_hashes, check_traits


@dataclass
class ProbeConfig(Config):
    """Fields every mechanistic stage has."""

    model: ModelConfig = member(ModelConfig, help="the base model the adapters sit on")
    run_dir: RunDir = member(RunDir, help="the run directory", hash=False)
    adapters: str | None = option(None, help="folder with <trait>/adapter (default: OUT/train)", hash=False)
    traits: list[str] = option([], help="traits to analyse (default: all five)", flag="--trait")
    probes: str | None = option(None, help="probe suite YAML (default: prompts/probe_prompts.yaml)", hash=False)
    site: str = option(DEFAULT_SITE, help="hook site of the neurons (an MLP hook_post)")
    seed: int = seed_option()
    n_boot: int = option(2000, help="bootstrap resamples for intervals", low=1)
    batch_size: int = batch_option()

    def validate(self) -> None:
        check_traits(self.traits)
        if ".mlp.hook_post" not in self.site:
            raise ConfigError(f"site: neuron analyses read an MLP hook_post site, got {self.site!r}")

    def trait_list(self) -> list[str]:
        from text2emoji.core.schema import TRAITS

        return list(self.traits or TRAITS)

    def adapter_paths(self) -> dict[str, Path]:
        return adapter_dirs(self.run_dir.out, self.trait_list(), self.adapters)


def probe_inputs(cfg: ProbeConfig) -> dict[str, str]:
    """SHA-256 of every trait's adapter weights and of the probe suite."""
    from interp.probes import SUITE_FILE
    from interp.prompts import prompts_dir

    suite = Path(cfg.probes) if cfg.probes else prompts_dir() / SUITE_FILE
    hashes = adapter_hashes(cfg.adapter_paths())
    hashes["probes"] = file_hash(suite)
    return hashes


def load_peft(cfg: ProbeConfig) -> Any:
    """The base model with every trait's adapter loaded (named by trait)."""
    from interp.behaviour.evaluate import load_adapters
    from interp.models import load_model

    lm = load_model(cfg.model)
    lm.model = load_adapters(lm.model, cfg.adapter_paths())
    return lm


def load_suite(cfg: ProbeConfig) -> Any:
    from interp.probes import load_probe_suite

    return load_probe_suite(cfg.probes)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
