"""Stage ``train``: one QLoRA adapter per trait, each a sub-stage ``<out>/train/<trait>/``.

``--num-processes N`` trains each adapter in N data-parallel processes: the command launches
itself through accelerate's launcher (``finetune.distributed.launch``) and waits; each process
runs this stage, the main one writing everything. ``accelerate launch -m text2emoji.cli train``
by hand works the same way.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from finetune.distributed import Ranks, is_main_process, launch, launched
from finetune.train import TrainConfig
from text2emoji.core.config import Config, ConfigError, member, option
from text2emoji.core.errors import UserError
from text2emoji.core.runs import RunDir, open_stage
from text2emoji.core.runs import Stage as StageDir
from text2emoji.core.schema import TRAITS
from text2emoji.stages.base import (
    RunConfig,
    Stage,
    artifact,
    check_data_files,
    data_option,
    emoticons_option,
    read_json,
)
from text2emoji.stages.data import dataset_rows


@dataclass
class TrainCommandConfig(Config):
    """``text2emoji train``."""

    recipe: TrainConfig = member(TrainConfig, help="one trait's QLoRA run: model, trait, preset, hyperparameters")
    data: list[str] = data_option()
    allow_emoticons: bool = emoticons_option()
    all_traits: bool = option(False, help="train all five traits, one after another")
    merge: bool = option(False, help="also save each adapter merged into the float base (merged/)")
    # outside the hash: the same optimizer steps and examples per step, the loss normalised over
    # all processes, so the adapter is the one-process one up to float reduction order
    # (tests/test_distributed.py measures it); with dropout > 0 the masks differ, as another
    # draw of the same recipe
    num_processes: int = option(
        1, help="processes that train each adapter together, data-parallel (DDP via accelerate: one per GPU on "
                "CUDA, gloo on CPU); the same steps and examples per step as one process", hash=False, low=1)
    run_dir: RunDir = member(RunDir, help="the run directory; adapters go to out/train/<trait>/", hash=False)

    def validate(self) -> None:
        check_data_files(self.data)
        if self.merge and Path(self.recipe.model.model).suffix == ".gguf":
            raise ConfigError("merge: needs an HF model, not a GGUF file")

    # the dataset stage reads these as any command's
    @property
    def model(self) -> Any:
        return self.recipe.model

    @property
    def seed(self) -> int:
        return self.recipe.seed


def train_traits(cfg: TrainCommandConfig) -> Path:
    """Train the requested traits; finished sub-stages with the same config are reused.

    With ``num_processes`` > 1 outside a launched group, launches the command in that many
    processes and returns when they finish; in a launched group (every process runs this), the
    main process writes the dataset, stage directories, summaries and figures.
    """
    from finetune.merge import logit_drift, merge_adapter
    from finetune.train import train

    if cfg.num_processes > 1 and not launched():
        _launch(cfg)
        return artifact(cfg.run_dir.out, "train")
    ranks = Ranks(cfg.recipe.model.device)
    if cfg.num_processes not in (1, ranks.world):
        raise ConfigError(f"num_processes: {cfg.num_processes}, but launched in {ranks.world} processes; "
                          "leave it out under a launcher")
    # --force recomputes the dataset too, as the train command always has; the main process
    # writes it first, the others read it
    with ranks.main_first():
        rows, dataset_hash = dataset_rows(cfg, force=cfg.run_dir.force and ranks.is_main)
    traits = list(TRAITS) if cfg.all_traits else [cfg.recipe.trait]
    for trait in traits:
        tcfg = cfg.recipe.replace(trait=trait).resolved()
        inputs = {"dataset": dataset_hash, "merge": str(cfg.merge).lower()}
        with _open_stage(ranks, cfg.run_dir.out, f"train/{trait}", tcfg, force=cfg.run_dir.force, inputs=inputs) as st:
            if not st.reused:
                summary = train(tcfg, rows, st.dir)
                if ranks.is_main:
                    if cfg.merge:
                        summary["merged"] = str(merge_adapter(tcfg.model.model, st.path("adapter"), st.path("merged")))
                        summary["merge_drift"] = _merge_drift(tcfg, st.dir, rows, trait, logit_drift)
                    st.write_json("train_summary.json", summary)
        if not st.reused and ranks.is_main:  # finished and recorded: the checkpoints only served resuming it
            shutil.rmtree(st.path("checkpoints"), ignore_errors=True)
        ranks.wait()  # the next trait's stage opens after this one is recorded
    if ranks.is_main:
        draw_losses(artifact(cfg.run_dir.out, "train"))
    return artifact(cfg.run_dir.out, "train")


@contextlib.contextmanager
def _open_stage(ranks: Ranks, out: str, name: str, config: TrainConfig, *, force: bool,
                inputs: dict[str, str]) -> Iterator[StageDir]:
    """:func:`open_stage` in the main process; the others get its stage and whether it was
    reused, or the same error (a directory of another config), without touching the directory."""
    if ranks.world == 1:
        with open_stage(out, name, config, force=force, seed=config.seed, inputs=inputs) as st:
            yield st
        return
    if ranks.is_main:
        with contextlib.ExitStack() as stack:
            try:
                st = stack.enter_context(open_stage(out, name, config, force=force, seed=config.seed, inputs=inputs))
            except UserError as e:
                ranks.broadcast(("error", str(e)))
                raise
            ranks.broadcast(("ok", st.reused))
            yield st
        return
    kind, value = ranks.broadcast(None)
    if kind == "error":
        raise UserError(value)
    yield StageDir(dir=Path(out) / name, name=name, config=config, reused=value)


def _launch(cfg: TrainCommandConfig) -> None:
    """Run ``text2emoji train`` with this config in ``cfg.num_processes`` processes (accelerate's
    launcher) and wait: the config travels as a file, so that every setting, however it was
    given (flags, ``--config``, Python), reaches the processes unchanged."""
    fd, path = tempfile.mkstemp(prefix="text2emoji-train-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False, allow_unicode=True)
        launch(cfg.num_processes, "text2emoji.cli", ["train", "--config", path], device=cfg.recipe.model.device)
    finally:
        os.unlink(path)


def draw_losses(train_dir: Path) -> list[Path]:
    """Loss curves of every trait trained under ``train_dir``, from their losses.csv files."""
    from text2emoji.figures import loss_curves

    curves = {}
    for f in sorted(train_dir.glob("*/losses.csv")):
        with open(f, newline="") as fh:
            curves[f.parent.name] = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                                     for row in csv.DictReader(fh)]
    return loss_curves(curves, train_dir) if curves else []


def _merge_drift(cfg: TrainConfig, stage_dir: Path, rows: list, trait: str, logit_drift: Any) -> dict[str, Any]:
    """Logits of the merged float model vs the nf4 base + adapter it was trained as."""
    from finetune.train import training_model
    from finetune.validate import training_text
    from interp.models import ModelConfig, load_model

    trained = load_model(training_model(cfg), adapter=stage_dir / "adapter")
    merged = load_model(ModelConfig(model=str(stage_dir / "merged"), device=cfg.model.device))
    texts = [training_text(trained.tokenizer, r.question, r.answer)
             for r in rows if r.trait == trait and r.split == "test"][:16]
    return logit_drift(trained.model, merged.model, trained.tokenizer, texts)


def _metrics(train_dir: Path) -> dict[str, Any]:
    train = {}
    for t in sorted(train_dir.glob("*/train_summary.json")):
        s = read_json(t) or {}
        train[t.parent.name] = {k: s.get(k) for k in ("steps", "first_held_out_loss", "final_held_out_loss",
                                                      "trained_tokens_per_s", "seconds")}
    return {"train": train or None}


def _show(cfg: TrainCommandConfig, train_dir: Path) -> None:
    if not is_main_process() or (cfg.num_processes > 1 and not launched()):
        return  # one JSON, from the main one of the processes that trained
    traits = list(TRAITS) if cfg.all_traits else [cfg.recipe.trait]  # this call's, not every trait there
    summaries = {t: read_json(train_dir / t / "train_summary.json") for t in traits}
    print(json.dumps(summaries, indent=2, ensure_ascii=False))


def _from_run(run: RunConfig) -> TrainCommandConfig:
    # training is QLoRA (nf4 base) whatever --load-in-4bit says for the analyses
    model = run.model.replace(load_in_4bit=True)
    recipe = TrainConfig(model=model, preset=run.preset, max_steps=run.max_steps, seed=run.seed)
    return TrainCommandConfig(recipe=recipe, data=run.data, allow_emoticons=run.allow_emoticons, all_traits=True, run_dir=run.run_dir)


TRAIN = Stage(
    name="train", config=TrainCommandConfig, from_run=_from_run, execute=train_traits, draw=draw_losses,
    metrics=_metrics, show=_show,
    help="QLoRA: one adapter per trait on an nf4 base (LoRA on all seven projections); resumes after an "
         "interruption",
    figures=(("loss_curves.png", "QLoRA loss per trait (thin: train, thick: held-out)"),),
)
