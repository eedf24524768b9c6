"""``text2emoji train``: one QLoRA adapter per trait, each a stage ``<out>/train/<trait>/``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.train import TrainConfig
from text2emoji.core.config import ConfigError, option


@dataclass
class TrainCommandConfig(TrainConfig):
    """``text2emoji train``."""

    data: list[str] = option([], help="Opinion QA files; default: the bundled dataset", flag="--data",
                             metavar="PATH")
    all_traits: bool = option(False, help="train all five traits, one after another")
    merge: bool = option(False, help="also save each adapter merged into the float base (merged/)")
    out: str = option("results/main", help="run directory; adapters go to out/train/<trait>/", hash=False)
    force: bool = option(False, help="retrain even if finished with the same config", hash=False)

    def validate(self) -> None:
        super().validate()
        if self.merge and Path(self.model).suffix == ".gguf":
            raise ConfigError("merge: needs an HF model, not a GGUF file")


@dataclass
class TrainStageConfig(TrainConfig):
    """What one trait's training stage depends on."""

    dataset_hash: str = option("", help="config hash of the dataset stage (covers its bytes)")
    merge: bool = option(False, help="whether the stage also holds the merged model")


def train_traits(cfg: TrainCommandConfig) -> dict[str, Any]:
    """Train the requested traits; finished stages with the same config are reused."""
    from finetune.merge import logit_drift, merge_adapter
    from finetune.train import train
    from finetune.validate import load_rows
    from text2emoji.core.runs import open_stage
    from text2emoji.core.schema import TRAITS
    from text2emoji.pipeline import stage_dataset

    dataset, dataset_hash = stage_dataset(cfg)
    rows = load_rows([dataset])
    traits = list(TRAITS) if cfg.all_traits else [cfg.trait]
    base = {k: getattr(cfg, k) for k in TrainConfig.__dataclass_fields__}
    results = {}
    for trait in traits:
        scfg = TrainStageConfig(**{**base, "trait": trait}, dataset_hash=dataset_hash, merge=cfg.merge).resolved()
        with open_stage(cfg.out, f"train/{trait}", scfg, force=cfg.force, seed=cfg.seed) as st:
            if not st.reused:
                summary = train(scfg, rows, st.dir)
                if cfg.merge:
                    summary["merged"] = str(merge_adapter(cfg.model, st.path("adapter"), st.path("merged")))
                    summary["merge_drift"] = _merge_drift(cfg, st.dir, rows, trait, logit_drift)
                st.write_json("train_summary.json", summary)
            results[trait] = st.read_json("train_summary.json")
    draw_losses(Path(cfg.out) / "train")
    return results


def draw_losses(train_dir: Path) -> list[Path]:
    """Loss curves of every trait trained under ``train_dir``, from their losses.csv files."""
    import csv

    from text2emoji.figures import loss_curves

    curves = {}
    for f in sorted(train_dir.glob("*/losses.csv")):
        with open(f, newline="") as fh:
            curves[f.parent.name] = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                                     for row in csv.DictReader(fh)]
    return loss_curves(curves, train_dir) if curves else []


def _merge_drift(cfg: TrainCommandConfig, stage_dir: Path, rows: list, trait: str, logit_drift) -> dict[str, Any]:
    """Logits of the merged float model vs the nf4 base + adapter it was trained as."""
    from finetune.validate import training_text
    from interp.models import ModelConfig, load_model

    trained = load_model(ModelConfig(model=cfg.model, adapter=str(stage_dir / "adapter"),
                                     load_in_4bit=cfg.load_in_4bit, device=cfg.device))
    merged = load_model(ModelConfig(model=str(stage_dir / "merged"), device=cfg.device))
    texts = [training_text(trained.tokenizer, r.question, r.answer)
             for r in rows if r.trait == trait and r.split == "test"][:16]
    return logit_drift(trained.model, merged.model, trained.tokenizer, texts)


def cmd_train(cfg: TrainCommandConfig) -> None:
    print(json.dumps(train_traits(cfg), indent=2, ensure_ascii=False))
