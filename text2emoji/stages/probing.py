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


def suite_hash(probes: str | None) -> str:
    """SHA-256 of the probe suite's file (``probes``, default: the bundled suite)."""
    from interp.probes import SUITE_FILE
    from interp.prompts import prompts_dir

    return file_hash(Path(probes) if probes else prompts_dir() / SUITE_FILE)


def probe_inputs(cfg: ProbeConfig) -> dict[str, str]:
    """SHA-256 of every trait's adapter weights and of the probe suite."""
    hashes = adapter_hashes(cfg.adapter_paths())
    hashes["probes"] = suite_hash(cfg.probes)
    return hashes


REMOTE_HELP = ("run on NDIF through nnsight (remote execution): --model must be a hub id (owner/name) that NDIF "
               "hosts (no weights are downloaded here); each trait's adapter travels with every request as an "
               "intervention (its LoRA update added to each adapted projection); the API key is read from the "
               "environment variable NDIF_API_KEY and never stored; --device and --dtype do not apply (NDIF's "
               "deployment decides)")


def check_remote_probe(cfg: Any) -> None:
    """``--remote`` on a mechanistic stage: a hub id, and none of the options that need local weights."""
    if not getattr(cfg, "remote", False):
        return
    from interp.remote import require_hub_id

    if cfg.model.load_in_4bit:
        raise ConfigError("load_in_4bit: --remote runs NDIF's copy of the model; --load-in-4bit does not apply")
    require_hub_id(cfg.model.model)


def remote_peft(cfg: ProbeConfig) -> tuple[Any, Any, dict[str, Any]]:
    """With ``--remote``: the hub model's meta-device module, its tokenizer, and each trait's
    adapter as :class:`interp.remote_probe.LoraPatch` es (read and checked here, before any
    request)."""
    from interp.behaviour.evaluate import require_adapters
    from interp.remote_probe import open_remote, read_lora

    paths = cfg.adapter_paths()
    require_adapters(paths)  # before the key and the hub are asked
    model, tokenizer = open_remote(cfg.model.model)
    return model, tokenizer, {t: read_lora(p, model) for t, p in paths.items()}


def open_models(cfg: ProbeConfig) -> tuple[Any, Any, dict[str, Any] | None]:
    """The model and tokenizer a mechanistic stage measures, and how it holds the adapters: here,
    one PEFT model with every trait's adapter (named by trait; ``None`` for the third item); with
    ``--remote`` (:func:`remote_peft`), the hub model's meta-device module and each trait's
    adapter as patches."""
    if getattr(cfg, "remote", False):
        return remote_peft(cfg)
    lm = load_peft(cfg)
    return lm.model, lm.tokenizer, None


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


def saved_stage_matches(out: str | Path, stage: str, model: Any, probes: str | None, site: str | None,
                        inputs: dict[str, str]) -> bool:
    """Whether ``out/<stage>`` finished on the same model, probe suite and site, with the same
    input hashes (adapters, suite) for every key of ``inputs``: then its saved activations or
    log-probs are the ones this stage would compute, and may be read instead."""
    from text2emoji.core.runs import stage_status
    from text2emoji.stages.base import read_json

    d = Path(out) / stage
    saved = read_json(d / "config.json") or {}
    c = saved.get("config") or {}
    if stage_status(d)[0] != "complete" or c.get("model") != model.to_dict() or c.get("probes") != probes:
        return False
    if site is not None and c.get("site") != site:
        return False
    return all((saved.get("inputs") or {}).get(k) == v for k, v in inputs.items())


def saved_neuron_activations(out: str | Path, model: Any, probes: str | None, site: str, trait: str | None = None,
                             adapter_hash: str | None = None) -> tuple[Any, Any] | None:
    """The neurons stage's last-token activations of the probe suite (``[prompts, d_mlp]``):
    pre, and post ``trait``'s adapter where ``trait`` and its weights' hash are given (else
    None), where that stage ran on this model, suite, site (and adapter); else None."""
    import numpy as np

    want = {"probes": suite_hash(probes), **({trait: adapter_hash} if trait else {})}
    if not saved_stage_matches(out, "neurons", model, probes, site, want):
        return None
    acts = Path(out) / "neurons" / "activations"
    try:
        return np.load(acts / "pre.npy"), (np.load(acts / f"post_{trait}.npy") if trait else None)
    except OSError:
        return None


def saved_activations(cfg: ProbeConfig, trait: str) -> tuple[Any, Any] | None:
    """:func:`saved_neuron_activations` pre and post ``trait``'s adapter, for a mechanistic
    stage's config."""
    return saved_neuron_activations(cfg.run_dir.out, cfg.model, cfg.probes, cfg.site, trait,
                                    probe_inputs(cfg.replace(traits=[trait]))[trait])
