"""Data-parallel QLoRA with accelerate on CPU (DDP over gloo, 2 processes, tiny random-weight
Llama): two processes learn what one process learns, resume after a kill, and say so.

The two-process runs are real: ``text2emoji train --num-processes 2`` launches itself through
accelerate's launcher (torchrun underneath), and the kill test launches the CLI by hand; on a
quiet 2-core machine the module's fixture takes ~15 s and the kill test ~18 s.

Tolerance of "learns what one process learns", measured on a 2-core CPU (6 steps, float32
compute): the per-step train and held-out losses of 2 processes equal 1 process's to the 5
decimals losses.csv keeps (one held-out value 1e-5 off: a last-digit rounding), and the LoRA
weights differ by at most 9e-8 (of values up to 0.14): float reduction order (each process sums
its part of a micro-batch, padded to its own width, and gloo adds the parts). With the quick
preset's bfloat16 compute the same run differs by 4e-5 in the losses and 3e-5 in the weights.
The asserted tolerances are about 10x the float32 figures.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from text2emoji.core.schema import QUESTION_TEMPLATE, TRAITS, Row

REPO = Path(__file__).resolve().parent.parent
LOSS_TOL = 1e-4  # measured: 1e-5, the last digit losses.csv keeps (see the module docstring)
WEIGHT_TOL = 1e-6  # measured: 9e-8
STEPS = 6


def _dataset(path: Path) -> Path:
    """31 topics per trait, 25 train and 6 test, answers of 6 to 12 words: with micro-batches of
    3, each epoch ends on a micro-batch of one example (the second process's share is empty)."""
    from finetune.io import write_jsonl

    rows = [Row(t, f"Topic {i}", QUESTION_TEMPLATE.format(topic=f"Topic {i}"),
                f"I think about topic {i}" + " a lot" * (i % 4) + ".", "test" if i < 6 else "train")
            for i in range(31) for t in TRAITS]
    write_jsonl(rows, path)
    return path


def _flags(model_dir: Path, data: Path, out: Path) -> list[str]:
    # micro-batches of 3 (2 + 1 across two processes), 2 per optimizer step, 5 steps an epoch:
    # 6 steps cross into the second epoch; float32 so that the tolerance shows the method, not
    # bfloat16's rounding
    return ["train", "--model", str(model_dir), "--device", "cpu", "--data", str(data), "--out", str(out),
            "--trait", "openness", "--max-steps", str(STEPS), "--batch-size", "3", "--grad-accum", "2",
            "--eval-rows", "6", "--eval-every", "2", "--save-every", "2", "--r", "4", "--alpha", "8",
            "--lr", "1e-2", "--compute-dtype", "float32"]


def _losses(stage_dir: Path) -> list[dict[str, str]]:
    with open(stage_dir / "losses.csv", newline="") as f:
        return list(csv.DictReader(f))


def _max_diff(a: list[dict[str, str]], b: list[dict[str, str]], key: str) -> float:
    pairs = [(x[key], y[key]) for x, y in zip(a, b, strict=True)]
    assert all((x == "") == (y == "") for x, y in pairs), key  # the same steps have one
    return max(abs(float(x) - float(y)) for x, y in pairs if x != "")


def _lora(stage_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(stage_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """One process through the library (its checkpoints kept), two through the CLI."""
    from finetune.train import TrainConfig, train
    from finetune.validate import load_rows
    from text2emoji.cli import main
    from text2emoji.core.config import build_config

    tmp = tmp_path_factory.mktemp("dp")
    data = _dataset(tmp / "d.jsonl")
    assert main([*_flags(tiny_model_dir, data, tmp / "two"), "--num-processes", "2"]) == 0
    rows = load_rows([tmp / "two" / "dataset" / "opinion_qa.jsonl"], allow_emoticons=True)
    cfg = build_config(TrainConfig, dict(model=str(tiny_model_dir), device="cpu", trait="openness", max_steps=STEPS,
                                         batch_size=3, grad_accum=2, eval_rows=6, eval_every=2, save_every=2, r=4,
                                         alpha=8, lr=1e-2, compute_dtype="float32"))
    train(cfg, rows, tmp / "one")
    return {"tmp": tmp, "data": data, "one": tmp / "one", "two": tmp / "two" / "train" / "openness"}


def test_two_processes_learn_what_one_learns(runs):
    one, two = _losses(runs["one"]), _losses(runs["two"])
    assert [r["step"] for r in two] == [r["step"] for r in one] == [str(s) for s in range(STEPS + 1)]
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one]  # the same examples each step
    assert [r["lr"] for r in two] == [r["lr"] for r in one]
    assert _max_diff(one, two, "train_loss") < LOSS_TOL
    assert _max_diff(one, two, "eval_loss") < LOSS_TOL
    assert float(two[-1]["eval_loss"]) < float(two[0]["eval_loss"]) - 0.1  # it learned something
    a, b = _lora(runs["one"]), _lora(runs["two"])
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < WEIGHT_TOL


def test_two_processes_record_world_size_and_write_a_loadable_adapter(runs, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    summary = json.loads((runs["two"] / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == STEPS
    assert json.loads((runs["one"] / "train_summary.json").read_text())["world_size"] == 1
    meta = json.loads((runs["two"] / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert not (runs["two"] / "checkpoints").exists()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), runs["two"] / "adapter")
    assert any(float(p.abs().sum()) > 0 for n, p in model.named_parameters() if "lora_B" in n)  # trained


def test_killed_two_process_run_resumes_to_the_same_end(runs, tiny_model_dir):
    """The main process dies hard after step 5 (checkpoints at 2 and 4); the run started again
    resumes from step 4 and ends where the uninterrupted run ends. Adam's moments at step 4 equal
    one process's: the processes' gradients add up to the one-process gradient at its scale,
    which the loss curves alone would not show (Adam's steps hardly depend on the scale)."""
    from text2emoji.cli import main

    out = runs["tmp"] / "killed"
    # by hand, with the shipped launcher config (its MULTI_GPU mode also starts CPU processes)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/ddp.yaml"),
           "--num_cpu_threads_per_process", "1", "-m", "tests.dist_helper", *_flags(tiny_model_dir, runs["data"], out)]
    killed = subprocess.run(cmd, cwd=REPO, env={**os.environ, "T2E_DIE_AFTER_STEP": "5"}, capture_output=True,
                            text=True, timeout=300)
    stage = out / "train" / "openness"
    assert killed.returncode != 0, killed.stderr[-2000:]
    assert "step 5/6" in killed.stderr and "step 6/6" not in killed.stderr
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert not (stage / "adapter").exists()

    ours = torch.load(stage / "checkpoints" / "step-4" / "trainer.pt", weights_only=False)
    theirs = torch.load(runs["one"] / "checkpoints" / "step-4" / "trainer.pt", weights_only=False)
    assert len(ours["rng"]) == 2 and len(theirs["rng"]) == 1  # each process's random state
    for key, state in theirs["optimizer"]["state"].items():
        m1, m2 = state["exp_avg"], ours["optimizer"]["state"][key]["exp_avg"]
        assert float((m1 - m2).abs().max()) <= 1e-5 * float(m1.abs().max())  # measured: 1.3e-6; a gradient at half its scale: 0.5

    assert main([*_flags(tiny_model_dir, runs["data"], out), "--num-processes", "2"]) == 0
    assert _losses(stage) == _losses(runs["two"])
    a, b = _lora(stage), _lora(runs["two"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((stage / "train_summary.json").read_text())["world_size"] == 2


class _OneOfTwo:
    """Process ``rank`` of two, its collectives left out: what it computes alone."""

    world = 2

    def __init__(self, rank: int):
        self.rank = rank

    def shard(self, batch):
        return list(batch[self.rank :: self.world])

    def no_sync(self, model):
        return contextlib.nullcontext()

    def sum(self, values):
        return values


def test_processes_gradients_average_to_the_one_process_gradient(tiny_model_dir, tmp_path):
    """DDP averages the processes' gradients; that average is the one-process gradient, with
    uneven shares (3 = 2 + 1) and an empty one (a micro-batch of 1)."""
    from finetune.distributed import Ranks
    from finetune.sft_data import encode
    from finetune.train import TrainConfig, _accumulate, load_for_training
    from tests.conftest import tiny_tokenizer
    from text2emoji.core.config import build_config

    cfg = build_config(TrainConfig, dict(model=str(tiny_model_dir), device="cpu", r=4, alpha=8,
                                         compute_dtype="float32")).resolved()
    model, _ = load_for_training(cfg)
    with torch.no_grad():  # LoRA B starts at zero, which would leave A without gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    tok = tiny_tokenizer()
    exs = [encode(tok, Row("openness", "t", "what are your thoughts on w1", "i " + "w2 " * n, "train"), 64)
           for n in (1, 5, 2, 7)]
    group = [exs[:3], exs[3:]]

    def grads(ranks) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        _accumulate(model, group, 0, torch.device("cpu"), {"step": 0, "tokens": 0}, tmp_path, "openness", ranks)
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    one = grads(Ranks("cpu"))
    halves = [grads(_OneOfTwo(r)) for r in (0, 1)]
    for n, g in one.items():
        ddp = (halves[0][n] + halves[1][n]) / 2
        assert float((ddp - g).abs().max()) <= 2e-6 * float(g.abs().max()) + 1e-9, n  # measured: 1.7e-7
    # real gradients, not zeros (which any scale would match); one at half or twice its scale
    # would be 0.5 or 1.0 off, relative
    assert all(float(g.abs().max()) > 1e-4 for g in one.values())


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_bad_num_processes_is_one_error_line(bad, tmp_path, capsys):
    from text2emoji.cli import main

    assert main(["train", "--num-processes", bad, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"text2emoji: error: num_processes (--num-processes): must be >= 1, got {bad}"]
